"""Bounded memory and delivery: overflow eviction, retries, permanent failures, backpressure."""

from __future__ import annotations

import logging
import socket
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .helpers import HttpSink, agent_run, by_call, capture, export, grpc_exporter, http_exporter, wait_until


def _children_only():
    """A trace without its root (never 'ready'): it waits for the idle timeout."""
    calls = by_call(capture(agent_run))
    return [calls["lookup1"], calls["lookup2"]]


def test_overflow_forwards_the_oldest_trace_unevaluated(grpc_sink, collectors):
    collector = collectors(
        grpc_sink.target,
        limits={"max_traces": 2},
        decision={"idle_timeout_seconds": 30, "hard_timeout_seconds": 60},
    )
    exporter = grpc_exporter(collector)
    traces = [_children_only() for _ in range(4)]
    for spans in traces:
        export(exporter, spans)
    wait_until(lambda: grpc_sink.count() == 4)
    received = grpc_sink.received()
    oldest = {format(s.context.span_id, "016x") for spans in traces[:2] for s in spans}
    assert {r.span_id for r in received} == oldest
    assert all(r.attrs["agentwatch.anomaly.evaluated"] is False for r in received)
    assert collector.stats.get("spans_evicted") == 4
    assert collector.stats.get("traces_decided", "overflow") == 2
    # The two newest are still held, within the limit.
    assert len(collector.buffer) == 2
    health = (
        urllib.request.urlopen(f"http://127.0.0.1:{collector.health_port}/metrics", timeout=5).read().decode()
    )
    assert "agentwatch_collector_spans_evicted_total 4" in health
    assert 'agentwatch_collector_traces_decided_total{reason="overflow"} 2' in health
    assert "agentwatch_collector_buffer_traces 2" in health


def test_span_and_byte_limits_evict_too(grpc_sink, collectors):
    collector = collectors(
        grpc_sink.target,
        limits={"max_spans": 3, "max_bytes": 1_000_000},
        decision={"idle_timeout_seconds": 30},
    )
    exporter = grpc_exporter(collector)
    export(exporter, _children_only())
    export(exporter, _children_only())  # 4 spans > 3: the first trace goes
    wait_until(lambda: grpc_sink.count() == 2)
    assert collector.stats.get("spans_evicted") == 2
    assert collector.buffer.spans == 2


def test_downstream_down_then_up_is_retried_and_delivered(collectors):
    with socket.socket() as probe:  # a free port, nothing listening yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    collector = collectors(
        f"http://127.0.0.1:{port}/v1/traces", "http/protobuf", decision={"straggler_delay_ms": 20}
    )
    spans = capture(agent_run)
    export(grpc_exporter(collector), spans)
    wait_until(lambda: collector.stats.get("export_requests", "retry") >= 2)
    assert collector.stats.get("spans_forwarded") == 0
    assert collector.stats.snapshot()["status"] == "degraded"
    sink = HttpSink(port)
    try:
        wait_until(lambda: sink.count() == 5)
        assert {r.flags for r in sink.received()} >= {("LOOP_DETECTED",), ("ENTITY_MISMATCH",)}
        wait_until(lambda: collector.stats.get("spans_forwarded") == 5)
        assert collector.stats.get("spans_dropped") == 0
        assert collector.stats.snapshot()["status"] == "ok"
    finally:
        sink.stop()


def test_grpc_unavailable_is_retried(grpc_sink, collectors):
    grpc_sink.failures = [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ]
    collector = collectors(grpc_sink.target, decision={"straggler_delay_ms": 20})
    export(http_exporter(collector), capture(agent_run))
    wait_until(lambda: grpc_sink.count() == 5)
    assert grpc_sink.calls == 4
    assert collector.stats.get("export_requests", "retry") == 3


def test_permanent_failure_is_counted_and_logged(http_sink, collectors, caplog):
    http_sink.permanent = 400
    collector = collectors(http_sink.url, "http/protobuf", decision={"straggler_delay_ms": 20})
    with caplog.at_level(logging.WARNING, logger="agentwatch.collector"):
        export(grpc_exporter(collector), capture(agent_run))
        wait_until(lambda: collector.stats.get("spans_dropped", "export_failed") == 5)
        wait_until(lambda: any("dropped 5 spans" in r.getMessage() for r in caplog.records))
    assert http_sink.calls == 1  # 400 is not retried
    assert collector.stats.get("spans_forwarded") == 0


def test_retries_give_up_after_max_elapsed(grpc_sink, collectors, caplog):
    grpc_sink.permanent = grpc.StatusCode.UNAVAILABLE
    collector = collectors(
        grpc_sink.target,
        decision={"straggler_delay_ms": 20},
        exporter={"retry": {"max_elapsed_seconds": 0.3}},
    )
    with caplog.at_level(logging.WARNING, logger="agentwatch.collector"):
        export(grpc_exporter(collector), capture(agent_run))
        wait_until(lambda: collector.stats.get("spans_dropped", "retries_exhausted") == 5, timeout=5)
    assert grpc_sink.calls >= 2
    assert any("retries_exhausted" in r.getMessage() for r in caplog.records)


def test_full_queue_throttles_clients(collectors):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    collector = collectors(
        f"127.0.0.1:{port}", decision={"straggler_delay_ms": 0}, exporter={"queue": {"max_batches": 1}}
    )
    export(grpc_exporter(collector), capture(agent_run))
    wait_until(lambda: collector.forwarder.full())
    body = ExportTraceServiceRequest().SerializeToString()
    request = urllib.request.Request(
        f"http://127.0.0.1:{collector.http_port}/v1/traces",
        data=body,
        headers={"Content-Type": "application/x-protobuf"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert info.value.code == 503
    assert info.value.headers["Retry-After"] == "5"
    channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
    call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
    with pytest.raises(grpc.RpcError) as rpc:
        call(body, timeout=5)
    assert rpc.value.code() is grpc.StatusCode.UNAVAILABLE
    details = dict(rpc.value.trailing_metadata())["grpc-status-details-bin"]
    from google.rpc import error_details_pb2, status_pb2

    status = status_pb2.Status.FromString(details)
    info_detail = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info_detail) and info_detail.retry_delay.seconds == 5
    channel.close()
    assert collector.stats.get("requests_failed", "throttled") == 2
