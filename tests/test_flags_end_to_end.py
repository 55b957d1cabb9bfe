"""Every flag of the contract, produced end to end: real ``openai`` client, scripted model, real tools.

Each case is a small agent run: the scripted server plays the model, the agent
loop executes the tool calls the model asks for through ``@agentwatch.tool``
functions, and the flag is asserted on the span where the anomaly shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

import agentwatch
from agentwatch import semconv as sc
from agentwatch.testing import reply
from tests.telemetry import Telemetry, make_telemetry

MODEL = "gpt-4o-mini"
FREE = {"type": "object"}


class BackendError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"backend returned {status_code}")
        self.status_code = status_code


_calls: dict[str, int] = {}


@agentwatch.tool("search")
def search(query: str) -> dict[str, Any]:
    return {"results": []}


@agentwatch.tool("orders.get")
def get_order(order_id: str) -> dict[str, Any]:
    return {"order_id": order_id, "customer_id": "cust_012" if order_id == "ord_555" else "cust_789"}


@agentwatch.tool("payment.refund")
def refund(order_id: str) -> str:
    return "refunded"


@agentwatch.tool("crm.update")
def flaky_update(customer_id: str) -> str:
    raise BackendError(502)


@agentwatch.tool("ticket.create", side_effect=True)
def create_ticket(title: str) -> dict[str, str]:
    return {"id": "TCK-1"}


@agentwatch.tool("lookup")
def lookup(**kwargs: Any) -> str:
    return "ok"


@agentwatch.tool("orders.status", output_schema={"type": "object", "required": ["status"]})
def order_status(order_id: str) -> dict[str, str]:
    return {"state": "shipped"}  # the backend renamed its field


@agentwatch.tool("billing.charge")
def charge(order_id: str) -> str:
    raise BackendError(503)


TOOLS: dict[str, Callable[..., Any]] = {
    "search": search, "orders.get": get_order, "payment.refund": refund, "crm.update": flaky_update,
    "ticket.create": create_ticket, "lookup": lookup, "drop_database": lambda **_: "dropped",
    "orders.status": order_status, "billing.charge": charge,
}


@dataclass
class Case:
    flag: str
    replies: list[Any]
    on: str = "tool"  # where the flag shows: "tool", "llm" or "run"
    offered: dict[str, Any] = field(default_factory=lambda: {n: FREE for n in TOOLS if n != "drop_database"})
    question: str = "Help me with my order."
    entities: dict[str, str] | None = None
    budget: agentwatch.Budget | None = None
    config: dict[str, Any] | None = None
    systems: list[str] | None = None  # a different system prompt per LLM call (drift)
    pause: float = 0.0


def calls(name: str, args: dict[str, Any], n: int, usage: dict[str, int] | None = None) -> list[Any]:
    return [reply.tool_call(name, args, usage=usage) for _ in range(n)]


USAGE = {"input_tokens": 100, "output_tokens": 10}
CASES = [
    Case("LOOP_DETECTED", calls("search", {"query": "same"}, 3)),
    Case("NO_PROGRESS", [reply.tool_call("search", {"query": f"q{i}"}) for i in range(7)]),
    Case("ENTITY_HALLUCINATION", calls("orders.get", {"order_id": "ord_555"}, 1), entities={"customer": "cust_789"}),
    Case("ENTITY_MISMATCH", calls("orders.get", {"order_id": "ord_555"}, 1), entities={"customer": "cust_789"},
         question="What is the status of order ord_555?"),
    Case("TOOL_ARG_MISMATCH", calls("lookup", {"id": 5}, 1),
         offered={"lookup": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}}),
    Case("UNKNOWN_TOOL", calls("drop_database", {}, 1), on="llm"),
    Case("TOOL_DENIED", calls("payment.refund", {"order_id": "ord_1"}, 1),
         config={"agent": {"tools": {"deny": ["payment.*"]}}}),
    Case("CONTEXT_DRIFT", [reply.text("a"), reply.text("b")], on="llm", systems=["Be brief.", "Refund everything."]),
    Case("STEP_BUDGET_EXCEEDED", [*calls("search", {"query": "a"}, 1), reply.text("done")], on="llm",
         budget=agentwatch.Budget(max_steps=2)),
    Case("TOOL_BUDGET_EXCEEDED", [reply.tool_call("search", {"query": f"q{i}"}) for i in range(2)],
         budget=agentwatch.Budget(max_tool_calls=1)),
    Case("TIME_BUDGET_EXCEEDED", calls("search", {"query": "a"}, 1), budget=agentwatch.Budget(max_seconds=0.05),
         pause=0.1),
    Case("COST_BUDGET_EXCEEDED", [reply.text("x", usage={"input_tokens": 100_000, "output_tokens": 10})], on="llm",
         budget=agentwatch.Budget(max_usd=0.001)),
    Case("TOKEN_BUDGET_EXCEEDED", [reply.text("x", usage=USAGE)], on="llm", budget=agentwatch.Budget(max_tokens=50)),
    Case("TOKEN_SPIKE", [reply.tool_call("search", {"query": f"q{i}"}, usage=USAGE) for i in range(3)]
         + [reply.text("x", usage={"input_tokens": 9000, "output_tokens": 10})], on="llm"),
    Case("RETRY_STORM", calls("crm.update", {"customer_id": "cust_789"}, 3), entities={"customer": "cust_789"}),
    Case("DUPLICATE_SIDE_EFFECT", calls("ticket.create", {"title": "Login outage"}, 2)),
    Case("TOOL_OUTPUT_INVALID", calls("orders.status", {"order_id": "ord_1"}, 1),
         config={"agent": {"tools": {"timeouts_s": {"default": 10}}}}),
    Case("CIRCUIT_OPEN", [reply.tool_call("billing.charge", {"order_id": f"ord_{i}"}) for i in range(3)],
         config={"agent": {"tools": {"circuit_breakers": {"enabled": True, "failure_threshold": 2,
                                                          "window_seconds": 60}}}}),
]


def agent(client: openai.OpenAI, case: Case) -> None:
    """A plain tool-calling loop (what users write); tool errors go back to the model."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": case.question}]
    specs = [{"type": "function", "function": {"name": n, "parameters": s}} for n, s in case.offered.items()]
    for turn in range(len(case.replies)):
        system = case.systems[turn] if case.systems else "You are a support agent."
        out = client.chat.completions.create(
            model=MODEL, messages=[{"role": "system", "content": system}, *messages], tools=specs
        )
        message = out.choices[0].message
        if not message.tool_calls:
            continue
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            time.sleep(case.pause)
            try:
                result: Any = TOOLS[call.function.name](**json.loads(call.function.arguments))
            except (BackendError, agentwatch.CircuitOpen) as err:
                result = {"error": str(err)}
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})


@pytest.mark.parametrize("case", CASES, ids=[c.flag for c in CASES])
def test_flag_end_to_end(case: Case, llm_server: Any, openai_client: openai.OpenAI) -> None:
    telemetry: Telemetry = make_telemetry(config=case.config)
    try:
        llm_server.script(*case.replies)
        with agentwatch.run("agent", entities=case.entities, budget=case.budget):
            agent(openai_client, case)
    finally:
        agentwatch.uninstrument()
    spans = {"tool": telemetry.tools(), "llm": telemetry.llm(), "run": telemetry.runs()}[case.on]
    flagged = [s for s in spans if case.flag in s.attributes.get(sc.ANOMALY_FLAGS, ())]
    assert flagged, f"{case.flag} not on any {case.on} span"
    events = [e for s in flagged for e in s.events if e.name == sc.ANOMALY_EVENT
              and e.attributes[sc.ANOMALY_FLAG] == case.flag]
    assert events and all(e.attributes[sc.ANOMALY_REASON] for e in events)
    (run_span,) = telemetry.runs()
    assert case.flag in run_span.attributes[sc.RUN_ANOMALY_FLAGS]
    assert run_span.attributes[sc.RUN_ANOMALY_COUNT] >= 1
    assert len(run_span.attributes[sc.RUN_FAULT_ORIGIN_SPAN_ID]) == 16


def test_every_contract_flag_has_a_case() -> None:
    assert {c.flag for c in CASES} == {f.value for f in agentwatch.Flag}
