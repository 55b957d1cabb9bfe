"""A span carrying a backtracking schema and a matching argument cannot stall the collector.

The collector validates tool arguments from ``agentwatch.tool.schema``: with
Python's ``re`` the pattern below pins the GIL for longer than the universe's
age, and every request, ``/healthz`` and SIGTERM stop answering. Run as a real
process, as operators run it.
"""

from __future__ import annotations

import http.client
import json
import signal
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from .helpers import capture, export, start_collector_process, wait_until

EVIL = "^(a+)+$"
EVIL_ARG = "a" * 64 + "!"


def _evil_tool_span(tracer_for):
    schema = {"type": "object", "properties": {"q": {"type": "string", "pattern": EVIL}}}
    span = tracer_for("agent-app").start_span(
        "execute_tool lookup",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "lookup",
            "agentwatch.tool.schema": json.dumps(schema),
            "gen_ai.tool.call.arguments": json.dumps({"q": EVIL_ARG}),
        },
    )
    span.end()


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_backtracking_schema_in_a_span_keeps_the_collector_answering(tmp_path, grpc_sink):
    collector = start_collector_process(tmp_path, grpc_sink.target, "{straggler_delay_ms: 20}", drain_seconds=5)
    proc = collector.proc
    try:
        http_port, health_port = collector.ports["http"], collector.ports["health"]
        exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{http_port}/v1/traces", timeout=5)

        export(exporter, capture(_evil_tool_span))
        wait_until(lambda: grpc_sink.count() == 1, timeout=10)  # decided and forwarded
        (forwarded,) = grpc_sink.received()
        assert forwarded.flags == ("TOOL_ARG_MISMATCH",)  # checked on RE2, not skipped

        export(exporter, capture(_evil_tool_span))  # a second one, while the first's trace is done
        started = time.monotonic()
        assert _get(health_port, "/healthz") == 200
        export(exporter, capture(_evil_tool_span))
        assert time.monotonic() - started < 1.0
        wait_until(lambda: grpc_sink.count() == 3, timeout=10)

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 10
    finally:
        collector.stop()


def test_deeply_nested_otlp_json_is_a_bad_request(grpc_sink, collectors):
    collector = collectors(grpc_sink.target)
    body = b'{"resourceSpans":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    conn = http.client.HTTPConnection("127.0.0.1", collector.http_port, timeout=5)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 400 and b"nested deeper" in response.read()
    finally:
        conn.close()
    assert _get(collector.health_port, "/healthz") == 200
