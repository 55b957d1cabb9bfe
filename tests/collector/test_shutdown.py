"""SIGTERM drains: pending traces are decided and delivered before the process exits."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

from .helpers import agent_run, by_call, capture, export, wait_until


def test_sigterm_decides_and_flushes_pending_traces(tmp_path, grpc_sink):
    config = tmp_path / "collector.yaml"
    config.write_text(
        textwrap.dedent(f"""
        receivers:
          grpc: {{endpoint: "127.0.0.1:0"}}
          http: {{endpoint: "127.0.0.1:0"}}
        exporter: {{endpoint: "{grpc_sink.target}", timeout_seconds: 2, drain_timeout_seconds: 10}}
        decision: {{straggler_delay_ms: 120000, hard_timeout_seconds: 120, idle_timeout_seconds: 120}}
        health: {{endpoint: "127.0.0.1:0"}}
        detection: {{anomaly: {{log_findings: false}}}}
    """)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentwatch.collector", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        listening = wait_until(lambda: next((ln for ln in lines if "listening" in ln), None), timeout=30)
        grpc_port = int(re.search(r"grpc=127\.0\.0\.1:(\d+)", listening).group(1))

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
        reader.join(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    received = grpc_sink.received()
    assert len(received) == 5
    assert sorted(r.flags for r in received) == [(), (), (), ("ENTITY_MISMATCH",), ("LOOP_DETECTED",)]
    log = "".join(lines)
    assert "received SIGTERM" in log and "draining" in log
    assert "5 spans received, 5 forwarded, 0 dropped" in log
