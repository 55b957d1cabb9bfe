"""A bare agent loop with no tracing code and no agentwatch API: run under ``opentelemetry-instrument``.

Two conversations, every chat call its own trace (nothing opens a span around them):
* "loop": the model asks for get_order(ord_1) four times over;
* "invented": the model looks up ord_2 (from the question), cancels it (grounded by the
  first call's input, two traces earlier), then refunds ord_888, an id it never read.
Tools are plain functions: the only record of a tool call is the model's request.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import openai

from agentwatch.testing import LLMServer, reply

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("get_order", "cancel_order", "refund")
]


def get_order(order_id: str) -> dict[str, Any]:
    return {"status": "shipped"}


def cancel_order(order_id: str) -> dict[str, Any]:
    return {"cancelled": True}


def refund(order_id: str) -> dict[str, Any]:
    return {"refunded": True}


FUNCTIONS = {"get_order": get_order, "cancel_order": cancel_order, "refund": refund}


def agent(client: Any, question: str, turns: int) -> None:
    messages: list[Any] = [{"role": "user", "content": question}]
    for _ in range(turns):
        response = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
        message = response.choices[0].message
        messages.append(message)
        for call in message.tool_calls or ():
            result = FUNCTIONS[call.function.name](**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})


with LLMServer() as llm:
    llm.script(
        *[reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in range(4)],
        reply.tool_call("get_order", {"order_id": "ord_2"}),
        reply.tool_call("cancel_order", {"order_id": "ord_2"}),
        reply.tool_call("refund", {"order_id": "ord_888"}),
    )
    client = openai.OpenAI(base_url=llm.openai_base_url, api_key="test", max_retries=0)
    agent(client, "Where is my order ord_1?", 4)
    agent(client, "Please cancel order ord_2 and refund me.", 3)
json.dump({"ok": True}, sys.stdout)
