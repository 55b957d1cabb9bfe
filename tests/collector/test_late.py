"""Spans that arrive after their trace was decided."""

from __future__ import annotations

from .helpers import agent_run, by_call, capture, export, grpc_exporter, wait_until

SUMMARY = "agentwatch.anomaly.summary"


def _hex(span) -> str:
    return format(span.context.span_id, "016x")


def test_late_span_is_tagged_by_reevaluation(grpc_sink, collectors):
    collector = collectors(grpc_sink.target, decision={"straggler_delay_ms": 50})
    calls = by_call(capture(agent_run))
    exporter = grpc_exporter(collector)
    export(exporter, [calls["run"], calls["lookup1"], calls["lookup2"], calls["get_order"]])
    wait_until(lambda: grpc_sink.count() == 4)
    first = {r.span_id: r for r in grpc_sink.received()}
    assert first[_hex(calls["run"])].attrs["agentwatch.run.anomaly.flags"] == ("ENTITY_MISMATCH",)

    export(exporter, [calls["lookup3"]])  # the third identical call, late
    wait_until(lambda: grpc_sink.count() >= 6)
    got = {r.span_id: r for r in grpc_sink.received()}
    late = got[_hex(calls["lookup3"])]
    assert late.flags == ("LOOP_DETECTED",)
    assert late.events()[0]["agentwatch.anomaly.related_span_id"] == _hex(calls["lookup1"])
    # The run span already left: its new run-level flag comes on a summary span under it.
    (summary,) = [r for r in grpc_sink.received() if r.name == SUMMARY]
    assert summary.span.parent_span_id.hex() == _hex(calls["run"])
    assert summary.span.trace_id == calls["run"].context.trace_id.to_bytes(16, "big")
    assert summary.attrs["agentwatch.run.anomaly.flags"] == ("ENTITY_MISMATCH", "LOOP_DETECTED")
    assert summary.resource["service.name"] == "agent-app"
    assert summary.scope == "agentwatch.collector"
    # Never re-sends a span id.
    ids = [r.span_id for r in grpc_sink.received()]
    assert len(ids) == len(set(ids))
    assert collector.stats.get("late_spans", "reevaluated") == 1
    assert collector.stats.get("summary_spans") == 1


def test_finding_on_a_span_that_already_left_goes_on_a_summary_span(grpc_sink, collectors):
    collector = collectors(grpc_sink.target, decision={"straggler_delay_ms": 50})
    calls = by_call(capture(agent_run))
    exporter = grpc_exporter(collector)
    export(exporter, [calls["run"], calls["lookup2"], calls["lookup3"], calls["get_order"]])
    wait_until(lambda: grpc_sink.count() == 4)
    assert all(r.flags != ("LOOP_DETECTED",) for r in grpc_sink.received())

    export(exporter, [calls["lookup1"]])  # the *first* call arrives late: lookup3 (gone) now loops
    wait_until(lambda: any(r.name == SUMMARY for r in grpc_sink.received()))
    wait_until(lambda: grpc_sink.count() == 6)
    got = {r.span_id: r for r in grpc_sink.received()}
    assert got[_hex(calls["lookup1"])].flags == ()
    (summary,) = [r for r in got.values() if r.name == SUMMARY]
    assert summary.span.parent_span_id.hex() == _hex(calls["run"])
    assert summary.flags == ("LOOP_DETECTED",)
    assert summary.attrs["agentwatch.anomaly.summary.span_ids"] == (_hex(calls["lookup3"]),)
    (event,) = summary.events()
    assert event["agentwatch.anomaly.flag"] == "LOOP_DETECTED"
    assert event["agentwatch.anomaly.span_id"] == _hex(calls["lookup3"])
    assert collector.stats.get("findings", "LOOP_DETECTED") == 1


def test_without_retained_spans_late_spans_use_the_cache(grpc_sink, collectors):
    collector = collectors(grpc_sink.target, decision={"straggler_delay_ms": 50, "retain_bytes": 0})
    calls = by_call(capture(agent_run))
    exporter = grpc_exporter(collector)
    export(exporter, [calls["run"], calls["lookup1"], calls["lookup2"], calls["lookup3"]])
    wait_until(lambda: grpc_sink.count() == 4)

    # A retransmitted span is tagged as it was the first time; a new late span cannot be judged.
    export(exporter, [calls["lookup3"], calls["get_order"]])
    wait_until(lambda: grpc_sink.count() == 6)
    received = grpc_sink.received()
    copies = [r for r in received if r.span_id == _hex(calls["lookup3"])]
    assert [c.flags for c in copies] == [("LOOP_DETECTED",), ("LOOP_DETECTED",)]
    assert [len(c.events()) for c in copies] == [1, 1]
    late = next(r for r in received if r.span_id == _hex(calls["get_order"]))
    assert late.attrs["agentwatch.anomaly.evaluated"] is False
    assert collector.stats.get("late_spans", "cached") == 1
    assert collector.stats.get("late_spans", "unevaluated") == 1
