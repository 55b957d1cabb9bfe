"""End to end: real OTLP exporters -> collector -> real OTLP sink, agent traces flagged on the way."""

from __future__ import annotations

import random

import pytest

from .helpers import (
    LOOP_ARGS,
    agent_run,
    by_call,
    capture,
    export,
    grpc_exporter,
    http_exporter,
    wait_until,
)


def _verdict(received):
    """What the collector concluded, keyed by span id: flags, events, run attributes."""
    out = {}
    for r in received:
        a = r.attrs
        out[r.span_id] = (
            r.flags,
            a.get("agentwatch.anomaly.severity"),
            tuple((e["agentwatch.anomaly.flag"], e["agentwatch.anomaly.reason"]) for e in r.events()),
            a.get("agentwatch.run.anomaly.flags"),
            a.get("agentwatch.run.anomaly.count"),
            a.get("agentwatch.run.fault_origin.span_id"),
            a.get("agentwatch.run.failure_mode"),
        )
    return out


@pytest.mark.parametrize("inbound,outbound", [("grpc", "grpc"), ("http", "http/protobuf")])
def test_agent_trace_is_flagged(inbound, outbound, grpc_sink, http_sink, collectors):
    sink = grpc_sink if outbound == "grpc" else http_sink
    target = grpc_sink.target if outbound == "grpc" else http_sink.url
    collector = collectors(target, outbound)
    spans = capture(agent_run)
    calls = by_call(spans)
    exporter = grpc_exporter(collector) if inbound == "grpc" else http_exporter(collector)
    export(exporter, spans)

    wait_until(lambda: sink.count() == 5)
    got = {r.span_id: r for r in sink.received()}
    hexid = {k: format(s.context.span_id, "016x") for k, s in calls.items()}

    assert got[hexid["lookup1"]].flags == ()
    assert got[hexid["lookup2"]].flags == ()
    loop = got[hexid["lookup3"]]
    assert loop.flags == ("LOOP_DETECTED",)
    assert loop.attrs["agentwatch.anomaly.severity"] == "high"
    (event,) = loop.events()
    assert event["agentwatch.anomaly.flag"] == "LOOP_DETECTED"
    assert LOOP_ARGS in event["agentwatch.anomaly.reason"]
    assert event["agentwatch.anomaly.related_span_id"] == hexid["lookup1"]

    mismatch = got[hexid["get_order"]]
    assert mismatch.flags == ("ENTITY_MISMATCH",)
    assert mismatch.attrs["agentwatch.anomaly.severity"] == "critical"
    assert "cust_012" in mismatch.events()[0]["agentwatch.anomaly.reason"]

    run = got[hexid["run"]]
    assert set(run.attrs["agentwatch.run.anomaly.flags"]) == {"LOOP_DETECTED", "ENTITY_MISMATCH"}
    assert run.attrs["agentwatch.run.anomaly.count"] == 2
    assert run.attrs["agentwatch.run.fault_origin.span_id"] == hexid["lookup1"]  # the loop's first call
    assert "agentwatch.run.failure_mode" in run.attrs
    # Untouched fields survive: original attributes, times, resource, scope.
    assert run.attrs["agentwatch.run.entity.customer"] == "cust_789"
    assert run.span.start_time_unix_nano == calls["run"].start_time
    assert all(r.resource["service.name"] == "agent-app" and r.scope == "test.agent" for r in got.values())
    assert not any("agentwatch.anomaly.evaluated" in r.attrs for r in got.values())

    # Counts in = counts out, and the self-metrics say so.
    stats = collector.stats
    wait_until(lambda: stats.get("spans_forwarded") == 5)
    assert stats.get("spans_received") == 5
    assert stats.get("spans_dropped") == 0
    assert stats.get("traces_decided", "root") == 1
    assert stats.get("findings", "LOOP_DETECTED") == 1
    assert stats.get("findings", "ENTITY_MISMATCH") == 1


def test_verdict_ignores_arrival_order_processes_and_batches(grpc_sink, collectors):
    """Spans of one trace from two services, sent out of order in several batches over both
    protocols, get the same verdict as the whole trace sent at once."""
    spans = capture(lambda t: agent_run(t, tool_service="tool-server"), services=("agent-app", "tool-server"))
    assert len({s.resource.attributes["service.name"] for s in spans}) == 2

    in_order = grpc_sink
    a = collectors(in_order.target, decision={"straggler_delay_ms": 400})
    export(grpc_exporter(a), spans)
    wait_until(lambda: in_order.count() == 5)

    from .helpers import GrpcSink

    scrambled = GrpcSink()
    try:
        b = collectors(scrambled.target, decision={"straggler_delay_ms": 400})
        shuffled = list(spans)
        random.Random(7).shuffle(shuffled)
        run_first = sorted(
            shuffled, key=lambda s: not s.name.startswith("invoke_agent")
        )  # root first: worst case
        batches = [run_first[:1], run_first[1:3], run_first[3:4], run_first[4:]]
        senders = [http_exporter(b), grpc_exporter(b)]
        for i, batch in enumerate(batches):
            export(senders[i % 2], batch)
        wait_until(lambda: scrambled.count() == 5)
        assert _verdict(scrambled.received()) == _verdict(in_order.received())
        assert b.stats.get("late_spans") == 0 and b.stats.get("summary_spans") == 0
        # Each span keeps its own resource and scope.
        services = {r.span_id: r.resource["service.name"] for r in scrambled.received()}
        for s in spans:
            assert services[format(s.context.span_id, "016x")] == s.resource.attributes["service.name"]
    finally:
        scrambled.stop()


def test_many_traces_counts_in_equal_counts_out(grpc_sink, collectors):
    collector = collectors(grpc_sink.target, decision={"straggler_delay_ms": 50})
    exporter = grpc_exporter(collector)
    total = 0
    for _ in range(20):
        spans = capture(agent_run)
        export(exporter, spans)
        total += len(spans)
    wait_until(lambda: grpc_sink.count() == total)
    received = grpc_sink.received()
    assert len({r.span_id for r in received}) == total
    assert sum(1 for r in received if r.flags == ("LOOP_DETECTED",)) == 20
    assert collector.stats.get("spans_received") == total
    wait_until(lambda: collector.stats.get("spans_forwarded") == total)
    assert collector.stats.get("traces_decided") == 20


def test_a_fault_reading_run_attributes_keeps_the_request(grpc_sink, collectors, monkeypatch, caplog):
    """An internal error while the intake reads a span's run attributes is logged; the spans are
    still accepted, buffered and forwarded (the client's data is never refused for our bug)."""
    from agentwatch.collector import intake

    def broken(raw: bytes) -> bool:
        raise RuntimeError("agentwatch bug")

    monkeypatch.setattr(intake, "is_run_span", broken)
    spans = capture(agent_run)
    c = collectors(grpc_sink.target, decision={"straggler_delay_ms": 50, "idle_timeout_seconds": 0.5})
    export(grpc_exporter(c), spans)
    wait_until(lambda: grpc_sink.count() == len(spans))
    assert c.stats.get("requests_failed") == 0
    assert "reading a span's run attributes failed" in caplog.text
