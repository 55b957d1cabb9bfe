"""RETRY_STORM and DUPLICATE_SIDE_EFFECT (seed 004's 34 duplicate tickets)."""

from __future__ import annotations

from agentwatch.engine import Engine

from .conftest import RunBuilder, flags, make_config


def test_retry_storm_on_third_failure_of_a_tool(run: RunBuilder) -> None:
    out = [flags(run.feed(run.tool("crm.search", {"q": i}, error=True))) for i in range(4)]
    assert [("RETRY_STORM" in f) for f in out] == [False, False, True, True]
    assert run.feed(run.tool("other", {}, error=True)) == []


def test_retry_storm_threshold_from_config() -> None:
    engine = Engine(make_config({"anomaly": {"retry_storm_threshold": 2}}))
    b = RunBuilder(engine)
    b.feed(b.tool("t", {"a": 1}, error=True))
    found = b.feed(b.tool("t", {"a": 2}, error=True))
    assert flags(found) == {"RETRY_STORM"} and found[0].related_span_id == "run1-0001"


def test_34_duplicate_tickets_under_502s(run: RunBuilder) -> None:
    args = {"title": "Login outage"}
    out = [run.feed(run.tool("ticket.create", args, error=True, side_effect=True)) for _ in range(34)]
    assert out[0] == []
    assert all("DUPLICATE_SIDE_EFFECT" in flags(o) for o in out[1:])
    dup = next(f for f in out[33] if f.flag.value == "DUPLICATE_SIDE_EFFECT")
    assert dup.related_span_id == "run1-0001" and "call 34" in dup.reason
    summary = run.engine.close_run("run1", stop_reason="tool_error", end_ns=run.clock)
    assert summary is not None
    assert set(summary.flags) == {"DUPLICATE_SIDE_EFFECT", "RETRY_STORM", "LOOP_DETECTED", "NO_PROGRESS"}
    assert summary.fault_origin_span_id == "run1-0001"  # the first write, which the duplicate names


def test_idempotency_key_prevents_duplicate(run: RunBuilder) -> None:
    args = {"title": "x", "idempotency_key": "req_1"}
    run.feed(run.tool("ticket.create", args, error=True, side_effect=True))
    assert run.feed(run.tool("ticket.create", args, {"id": 1}, side_effect=True, arguments=args)) == []
    other = {"title": "y"}
    run.feed(run.tool("ticket.create", other, {"id": 2}, side_effect=True))
    assert run.feed(run.tool("ticket.create", other, {"id": 3}, side_effect=True, idempotency_key=True)) == []


def test_side_effect_tools_from_config_and_reads_are_not_duplicates() -> None:
    engine = Engine(make_config({"tools": {"idempotency_required": ["ticket.*"]}}))
    b = RunBuilder(engine)
    b.feed(b.tool("ticket.create", {"t": 1}, {"id": 1}))
    assert flags(b.feed(b.tool("ticket.create", {"t": 1}, {"id": 2}))) == {"DUPLICATE_SIDE_EFFECT"}
    b.feed(b.tool("kb.read", {"d": 1}, "x"))
    assert b.feed(b.tool("kb.read", {"d": 1}, "y")) == []
