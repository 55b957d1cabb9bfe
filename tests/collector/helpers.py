"""Test doubles for the collector: OTLP sinks (real gRPC and HTTP servers) and senders.

Everything binds 127.0.0.1 with ephemeral ports; every wait is bounded.
"""

from __future__ import annotations

import copy
import gzip
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch.collector import Collector, build_collector_config

LOOP_ARGS = "0123456789abcdef"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(x) for x in v.array_value.values)
    return getattr(v, kind) if kind else None


def attrs(kvs: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


@dataclass
class Received:
    span: Span
    resource: dict[str, Any]
    scope: str

    @property
    def attrs(self) -> dict[str, Any]:
        return attrs(self.span.attributes)

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    def events(self, name: str = "agentwatch.anomaly") -> list[dict[str, Any]]:
        return [attrs(e.attributes) for e in self.span.events if e.name == name]

    @property
    def flags(self) -> tuple[str, ...]:
        return tuple(self.attrs.get("agentwatch.anomaly.flags", ()))


class _SinkBase:
    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.lock = threading.Lock()
        self.calls = 0

    def record(self, request: ExportTraceServiceRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def received(self) -> list[Received]:
        with self.lock:
            requests = list(self.requests)
        out = []
        for req in requests:
            for rs in req.resource_spans:
                resource = attrs(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out.append(Received(span, resource, ss.scope.name))
        return out

    def count(self) -> int:
        return len(self.received())

    def by_name(self) -> dict[str, Received]:
        return {r.name: r for r in self.received()}


class GrpcSink(_SinkBase):
    """A real OTLP/gRPC TraceService that stores requests; ``failures`` holds status codes to answer
    the next calls with (``permanent`` answers every call with that code)."""

    def __init__(self) -> None:
        super().__init__()
        self.failures: list[grpc.StatusCode] = []
        self.permanent: grpc.StatusCode | None = None
        self.rejected: int | None = None  # answer a partial success claiming this many rejected spans
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(
            self._export,
            request_deserializer=ExportTraceServiceRequest.FromString,
            response_serializer=ExportTraceServiceResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _export(self, request: ExportTraceServiceRequest, context: Any) -> ExportTraceServiceResponse:
        with self.lock:
            self.calls += 1
            code = self.permanent or (self.failures.pop(0) if self.failures else None)
        if code is not None:
            context.abort(code, "sink says no")
        self.record(request)
        response = ExportTraceServiceResponse()
        if self.rejected is not None:
            response.partial_success.rejected_spans = self.rejected
            response.partial_success.error_message = "sink rejects some"
        return response

    def stop(self) -> None:
        self.server.stop(0).wait(2)


class HttpSink(_SinkBase):
    """A real OTLP/HTTP endpoint; ``statuses`` holds HTTP codes for the next calls."""

    def __init__(self, port: int = 0) -> None:
        super().__init__()
        self.statuses: list[int] = []
        self.permanent: int | None = None
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with sink.lock:
                    sink.calls += 1
                    status = sink.permanent or (sink.statuses.pop(0) if sink.statuses else 200)
                if status == 200:
                    sink.record(ExportTraceServiceRequest.FromString(body))
                    payload = ExportTraceServiceResponse().SerializeToString()
                else:
                    payload = b""
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                if status in (429, 503):
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(payload)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------- collector


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def collector_mapping(target: str, protocol: str = "grpc", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "receivers": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}},
        "exporter": {
            "protocol": protocol,
            "endpoint": target,
            "timeout_seconds": 2,
            "retry": {"initial_backoff_ms": 20, "max_backoff_ms": 100, "max_elapsed_seconds": 20},
            "drain_timeout_seconds": 5,
        },
        "decision": {"straggler_delay_ms": 150, "hard_timeout_seconds": 10, "idle_timeout_seconds": 5},
        "health": {"endpoint": "127.0.0.1:0"},
        "detection": {"agent": {"anomaly": {"log_findings": False}}},
    }
    return _merge(base, overrides)


def start_collector(target: str, protocol: str = "grpc", **overrides: Any) -> Collector:
    config = build_collector_config(collector_mapping(target, protocol, **overrides), env={})
    return Collector(config).start()


# --------------------------------------------------------------------------- senders


def grpc_exporter(collector: Collector) -> GrpcSpanExporter:
    return GrpcSpanExporter(endpoint=f"127.0.0.1:{collector.grpc_port}", insecure=True, timeout=5)


def http_exporter(collector: Collector, **kwargs: Any) -> HttpSpanExporter:
    return HttpSpanExporter(endpoint=f"http://127.0.0.1:{collector.http_port}/v1/traces", timeout=5, **kwargs)


def export(exporter: SpanExporter, spans: Sequence[ReadableSpan]) -> None:
    assert exporter.export(list(spans)) is SpanExportResult.SUCCESS


def capture(
    build: Callable[[Callable[[str], Any]], None], services: Sequence[str] = ("agent-app",)
) -> list[ReadableSpan]:
    """Run ``build(tracer_for)`` with one TracerProvider per service; return the finished spans."""
    memory = InMemorySpanExporter()
    providers = {}
    for service in services:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(memory))
        providers[service] = provider

    def tracer_for(service: str) -> Any:
        return providers[service].get_tracer("test.agent", "1.0")

    build(tracer_for)
    for provider in providers.values():
        provider.shutdown()
    return list(memory.get_finished_spans())


def agent_run(
    tracer_for: Callable[[str], Any], *, tool_service: str | None = None, customer: str = "cust_789"
) -> None:
    """One agent run: lookup_order x3 with the same args hash (LOOP_DETECTED on the 3rd) and a
    get_order whose result belongs to another customer (ENTITY_MISMATCH)."""
    run_tracer = tracer_for("agent-app")
    tool_tracer = tracer_for(tool_service or "agent-app")
    t0 = time.time_ns()
    run = run_tracer.start_span(
        "invoke_agent support",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support",
            "agentwatch.run.id": "run-1",
            "agentwatch.run.entity.customer": customer,
        },
        start_time=t0,
    )
    from opentelemetry import trace

    ctx = trace.set_span_in_context(run)
    for i in range(3):
        span = tool_tracer.start_span(
            "execute_tool lookup_order",
            context=ctx,
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_order",
                "agentwatch.tool.args_hash": LOOP_ARGS,
                "agentwatch.step": i + 1,
                "call": i + 1,
            },
            start_time=t0 + (i + 1) * 1_000_000,
        )
        span.end(end_time=t0 + (i + 1) * 1_000_000 + 500_000)
    span = tool_tracer.start_span(
        "execute_tool get_order",
        context=ctx,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_order",
            "agentwatch.tool.args_hash": "1111111111111111",
            "agentwatch.tool.result_entities": ["customer:cust_012"],
            "agentwatch.step": 4,
        },
        start_time=t0 + 5_000_000,
    )
    span.end(end_time=t0 + 5_500_000)
    run.end(end_time=t0 + 6_000_000)


def by_call(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    """Spans keyed 'run', 'lookup1'..'lookup3', 'get_order'."""
    out = {}
    for span in spans:
        a = span.attributes or {}
        if span.name.startswith("invoke_agent"):
            out["run"] = span
        elif a.get("gen_ai.tool.name") == "lookup_order":
            out[f"lookup{a['call']}"] = span
        else:
            out["get_order"] = span
    return out


@dataclass
class CollectorProcess:
    """``agentwatch-collector`` in its own process (``python -m agentwatch.collector``), with its bound ports."""

    proc: subprocess.Popen[str]
    ports: dict[str, int]  # receiver name (grpc, http, health) -> port it listens on
    stderr: list[str]
    reader: threading.Thread

    def log(self) -> str:
        """Everything the process wrote to stderr (complete once it has exited)."""
        self.reader.join(timeout=5)
        return "".join(self.stderr)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_collector_process(tmp_path: Path, target: str, decision: str, drain_seconds: int) -> CollectorProcess:
    """Start a collector on loopback (ports chosen by the OS) forwarding to TARGET; wait until it listens."""
    config = tmp_path / "collector.yaml"
    config.write_text(
        textwrap.dedent(f"""
        receivers:
          grpc: {{endpoint: "127.0.0.1:0"}}
          http: {{endpoint: "127.0.0.1:0"}}
        exporter: {{endpoint: "{target}", timeout_seconds: 2, drain_timeout_seconds: {drain_seconds}}}
        decision: {decision}
        health: {{endpoint: "127.0.0.1:0"}}
        detection: {{anomaly: {{log_findings: false}}}}
    """)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentwatch.collector", "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    assert proc.stderr is not None
    stream = proc.stderr
    reader = threading.Thread(target=lambda: lines.extend(iter(stream.readline, "")), daemon=True)
    reader.start()
    started = CollectorProcess(proc, {}, lines, reader)
    try:
        listening = wait_until(lambda: next((ln for ln in lines if "listening" in ln), None), timeout=30)
        started.ports = {m.group(1): int(m.group(2)) for m in re.finditer(r"(\w+)=127\.0\.0\.1:(\d+)", listening)}
    except BaseException:
        started.stop()
        raise
    return started
