"""An app with no tracing code at all: run under ``opentelemetry-instrument`` by the test."""

from __future__ import annotations

import json
import sys

import openai

from agentwatch.testing import LLMServer, reply

with LLMServer() as llm:
    llm.script(
        reply.tool_call("get_order", {"order_id": "ord_1"}),
        reply.tool_call("drop_tables", {}),  # a tool the model was never offered
    )
    client = openai.OpenAI(base_url=llm.openai_base_url, api_key="test", max_retries=0)
    tools = [{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}]
    for _ in range(2):
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], tools=tools)
json.dump({"ok": True}, sys.stdout)
