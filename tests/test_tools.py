"""``@agentwatch.tool``: spans, hashes, error classes, flags, context propagation."""

from __future__ import annotations

import asyncio
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry.trace import StatusCode

import agentwatch
from agentwatch import semconv as sc
from tests.telemetry import Telemetry, make_telemetry


def contract_hash(args: dict[str, Any]) -> str:
    text = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@agentwatch.tool("orders.get", description="Fetch an order.")
def get_order(order_id: str, verbose: bool = False) -> dict[str, Any]:
    return {"order_id": order_id, "customer_id": "cust_789"}


class StatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


def test_tool_span_attributes(telemetry: Telemetry) -> None:
    with agentwatch.run("agent", entities={"customer": "cust_789"}):
        assert get_order("ord_1") == {"order_id": "ord_1", "customer_id": "cust_789"}
    (span,) = telemetry.tools()
    attrs = span.attributes
    assert span.name == "execute_tool orders.get"
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert attrs[sc.GEN_AI_TOOL_NAME] == "orders.get"
    assert attrs[sc.GEN_AI_TOOL_DESCRIPTION] == "Fetch an order."
    assert attrs[sc.TOOL_ARGS_HASH] == contract_hash({"order_id": "ord_1"})  # defaults not included
    assert attrs[sc.TOOL_SIDE_EFFECT] is False
    assert attrs[sc.STEP] == 1
    assert "order:ord_1" in attrs[sc.TOOL_ARG_ENTITIES]
    assert "customer:cust_789" in attrs[sc.TOOL_RESULT_ENTITIES]
    assert sc.GEN_AI_TOOL_CALL_ARGUMENTS not in attrs  # content capture off
    (run_span,) = telemetry.runs()
    assert span.parent.span_id == run_span.context.span_id
    assert run_span.attributes[sc.RUN_TOOL_CALLS] == 1


def test_args_hash_is_stable_across_positional_and_keyword(telemetry: Telemetry) -> None:
    get_order("ord_2")
    get_order(order_id="ord_2")
    a, b = telemetry.tools()
    assert a.attributes[sc.TOOL_ARGS_HASH] == b.attributes[sc.TOOL_ARGS_HASH]


@pytest.mark.parametrize(
    ("exc", "error_class", "stop_reason"),
    [
        (TimeoutError("slow"), "timeout", "tool_timeout"),
        (StatusError(429), "rate_limit", "tool_rate_limit"),
        (StatusError(401), "auth", "tool_auth_failed"),
        (StatusError(403), "auth", "tool_auth_failed"),
        (json.JSONDecodeError("bad", "x", 0), "output_invalid", "tool_output_invalid"),
        (StatusError(502), "error", "tool_error"),
        (KeyError("boom"), "error", "tool_error"),
    ],
)
def test_tool_errors_are_classified_and_propagate_unchanged(
    telemetry: Telemetry, exc: Exception, error_class: str, stop_reason: str
) -> None:
    @agentwatch.tool("flaky")
    def flaky() -> None:
        raise exc

    with pytest.raises(type(exc)) as caught, agentwatch.run("agent"):
        flaky()
    assert caught.value is exc
    (span,) = telemetry.tools()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.TOOL_ERROR_CLASS] == error_class
    assert sc.ERROR_TYPE in span.attributes
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == stop_reason


async def test_async_tool_and_task_propagation(telemetry: Telemetry) -> None:
    @agentwatch.tool("kb.read")
    async def kb_read(query: str) -> str:
        await asyncio.sleep(0)
        return f"answer to {query}"

    async with agentwatch.run("agent") as run:
        results = await asyncio.gather(*(asyncio.create_task(kb_read(q)) for q in ("a", "b", "c")))
    assert results == ["answer to a", "answer to b", "answer to c"]
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_ID] == run.run_id
    assert run_span.attributes[sc.RUN_TOOL_CALLS] == 3
    assert all(s.parent.span_id == run_span.context.span_id for s in telemetry.tools())


def test_thread_pool_with_otel_context(telemetry: Telemetry) -> None:
    with agentwatch.run("agent"), ThreadPoolExecutor(2) as pool:
        ctx = otel_context.get_current()

        def work(order: str) -> Any:
            token = otel_context.attach(ctx)
            try:
                return get_order(order)
            finally:
                otel_context.detach(token)

        list(pool.map(work, ["ord_1", "ord_2"]))
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_TOOL_CALLS] == 2
    assert sorted(s.attributes[sc.STEP] for s in telemetry.tools()) == [1, 2]


def test_loop_and_duplicate_side_effect_flags(telemetry: Telemetry) -> None:
    @agentwatch.tool("ticket.create", side_effect=True)
    def create_ticket(title: str) -> dict[str, str]:
        return {"id": "TCK-1"}

    with agentwatch.run("agent"):
        for _ in range(3):
            create_ticket("Login outage")
    spans = sorted(telemetry.tools(), key=lambda s: s.start_time)
    assert sc.ANOMALY_FLAGS not in spans[0].attributes
    assert "DUPLICATE_SIDE_EFFECT" in spans[1].attributes[sc.ANOMALY_FLAGS]
    assert {"LOOP_DETECTED", "DUPLICATE_SIDE_EFFECT"} <= set(spans[2].attributes[sc.ANOMALY_FLAGS])
    events = [e for e in spans[2].events if e.name == sc.ANOMALY_EVENT]
    assert {e.attributes[sc.ANOMALY_FLAG] for e in events} >= {"LOOP_DETECTED"}
    assert all(e.attributes[sc.ANOMALY_REASON] for e in events)
    (run_span,) = telemetry.runs()
    # the first write, which the duplicate on the second names as its evidence
    assert run_span.attributes[sc.RUN_FAULT_ORIGIN_SPAN_ID] == format(spans[0].context.span_id, "016x")
    assert run_span.attributes[sc.RUN_ANOMALY_COUNT] >= 3


def test_idempotency_key_prevents_duplicate_flag(telemetry: Telemetry) -> None:
    @agentwatch.tool("ticket.create", side_effect=True)
    def create_ticket(title: str, idempotency_key: str) -> dict[str, str]:
        return {"id": "TCK-1"}

    with agentwatch.run("agent"):
        create_ticket("x", idempotency_key="req_1:ticket.create")
        create_ticket("x", idempotency_key="req_1:ticket.create")
    assert all("DUPLICATE_SIDE_EFFECT" not in s.attributes.get(sc.ANOMALY_FLAGS, ()) for s in telemetry.tools())


def test_enforced_loop_raises_before_third_call() -> None:
    tel = make_telemetry()
    calls = []

    @agentwatch.tool("search.read")
    def search(query: str) -> list[str]:
        calls.append(query)
        return []

    try:
        with pytest.raises(agentwatch.LoopDetected), agentwatch.run("agent", budget=agentwatch.Budget(enforce=True)):
            for _ in range(5):
                search("same")
    finally:
        agentwatch.uninstrument()
    assert len(calls) == 2
    (run_span,) = tel.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "loop_detected"


def test_denied_tool_flagged_and_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    tel = make_telemetry(config={"agent": {"tools": {"deny": ["payment.*"], "enforce": False}}})

    @agentwatch.tool("payment.refund")
    def refund(amount: int) -> str:
        return "ok"

    try:
        with agentwatch.run("agent"):
            refund(10)
    finally:
        agentwatch.uninstrument()
    (span,) = tel.tools()
    assert "TOOL_DENIED" in span.attributes[sc.ANOMALY_FLAGS]

    tel = make_telemetry(config={"agent": {"tools": {"allow": ["search.*"], "enforce": True}}})
    try:
        with pytest.raises(agentwatch.ToolDenied), agentwatch.run("agent"):
            refund(10)
    finally:
        agentwatch.uninstrument()
    (span,) = tel.tools()  # the attempt is on record, failed as denied
    assert span.attributes[sc.TOOL_ERROR_CLASS] == "denied"
    assert "TOOL_DENIED" in span.attributes[sc.ANOMALY_FLAGS]
    (run_span,) = tel.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "tool_denied"
    assert run_span.attributes[sc.RUN_FAULT_ORIGIN_SPAN_ID] == format(span.context.span_id, "016x")


def test_schema_mismatch_flag(telemetry: Telemetry) -> None:
    schema = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}

    @agentwatch.tool("orders.lookup", schema=schema)
    def lookup(**kwargs: Any) -> str:
        return "ok"

    with agentwatch.run("agent"):
        lookup(order_id="ord_1")
        lookup(order=5)
    good, bad = sorted(telemetry.tools(), key=lambda s: s.start_time)
    assert sc.ANOMALY_FLAGS not in good.attributes
    assert "TOOL_ARG_MISMATCH" in bad.attributes[sc.ANOMALY_FLAGS]


def test_tool_content_capture_redacts(telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, "SPAN_ONLY")

    @agentwatch.tool("crm.login")
    def login(user: str, api_key: str) -> dict[str, str]:
        return {"session": "ok", "token": "t0ps3cret"}

    login("alice", api_key="hunter2")
    attrs = telemetry.tools()[0].attributes
    assert "alice" in attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS]
    assert "hunter2" not in attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS]
    assert "t0ps3cret" not in attrs[sc.GEN_AI_TOOL_CALL_RESULT]


def test_non_json_arguments_still_hash(telemetry: Telemetry) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return "Opaque()"

    cyclic: list[Any] = []
    cyclic.append(cyclic)

    @agentwatch.tool("weird")
    def weird(a: Any, b: Any) -> str:
        return "fine"

    assert weird(Opaque(), cyclic) == "fine"
    assert len(telemetry.tools()[0].attributes[sc.TOOL_ARGS_HASH]) == 16


def test_after_uninstrument_tools_are_inert() -> None:
    tel = make_telemetry()
    agentwatch.uninstrument()
    assert get_order("ord_9")["order_id"] == "ord_9"
    assert tel.spans() == []
