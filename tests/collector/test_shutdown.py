"""SIGTERM drains: pending traces are decided and delivered before the process exits."""

from __future__ import annotations

import signal
import time

from .helpers import agent_run, by_call, capture, export, start_collector_process


def test_sigterm_decides_and_flushes_pending_traces(tmp_path, grpc_sink):
    collector = start_collector_process(
        tmp_path, grpc_sink.target,
        "{straggler_delay_ms: 120000, hard_timeout_seconds: 120, idle_timeout_seconds: 120}", drain_seconds=10,
    )
    proc = collector.proc
    try:
        grpc_port = collector.ports["grpc"]

        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        calls = by_call(capture(agent_run))
        pending = list(calls.values())  # ready, but the straggler delay is 120 s
        export(OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True, timeout=5), pending)
        time.sleep(0.3)
        assert grpc_sink.count() == 0

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
    finally:
        collector.stop()
    received = grpc_sink.received()
    assert len(received) == 5
    assert sorted(r.flags for r in received) == [(), (), (), ("ENTITY_MISMATCH",), ("LOOP_DETECTED",)]
    log = collector.log()
    assert "received SIGTERM" in log and "draining" in log
    assert "5 spans received, 5 forwarded, 0 dropped" in log
