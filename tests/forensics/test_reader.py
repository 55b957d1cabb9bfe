"""The trace reader against loopback servers that answer as Jaeger's query API v3 and Tempo's trace API do.

Shapes (from the projects' documentation): Jaeger v2's ``GET /api/v3/traces/{id}`` and
``GET /api/v3/traces?query.service_name=...`` answer ``{"result": <OTLP TracesData as JSON>}``
and a missing trace with HTTP 404 and ``{"error": {"httpCode": 404, "message": ...}}``;
Tempo's ``GET /api/traces/{id}`` answers protobuf (``tempopb.Trace``, whose field 1 is
``repeated ResourceSpans batches``) under ``Accept: application/protobuf``, else JSON
``{"batches": [...]}``, and 404 for a trace it does not have.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentwatch.cli import main
from agentwatch.forensics.reader import SourceError, read_source

Handler = Callable[[str, dict[str, list[str]], dict[str, str]], tuple[int, str, bytes]]


class _Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append((url.path, query, headers))
                status, ctype, body = outer.handler(url.path, query, headers)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (the timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], _Server]]:
    servers: list[_Server] = []

    def start(handler: Handler) -> _Server:
        servers.append(_Server(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _request(path: Path) -> ExportTraceServiceRequest:
    merged = ExportTraceServiceRequest()
    for line in path.read_text().splitlines():
        part = ExportTraceServiceRequest()
        json_format.Parse(line, part)
        merged.resource_spans.extend(part.resource_spans)
    return merged


def _otlp_json_hex(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP/JSON as the OTLP spec (and Jaeger's api_v3) writes it: ids in hex."""
    data = json_format.MessageToDict(request)
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return data


def _trace_id(request: ExportTraceServiceRequest) -> str:
    return request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()


def test_jaeger_trace_by_id_reads_api_v3_otlp_json(
    incident_file: Path, serve: Callable[[Handler], _Server], capsys: pytest.CaptureFixture[str]
) -> None:
    request = _request(incident_file)
    tid = _trace_id(request)
    body = json.dumps({"result": _otlp_json_hex(request)}).encode()

    def jaeger(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, str, bytes]:
        if path == f"/api/v3/traces/{tid}":
            return 200, "application/json", body
        return 404, "application/json", b'{"error":{"httpCode":404,"message":"trace not found"}}'

    server = serve(jaeger)
    spans = list(read_source(f"jaeger:{server.url}", tid))
    assert len(spans) == 8 and {s.trace_hex for s in spans} == {tid}
    assert main(["forensics", f"jaeger:{server.url}", "--trace", tid, "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["fault_origin"]["step"] == 3 and report["blast_radius"][0]["tool"] == "orders.confirm"
    # a trace Jaeger does not have
    assert main(["forensics", f"jaeger:{server.url}", "--trace", "ab" * 16]) == 2
    err = capsys.readouterr().err
    assert "not found in Jaeger" in err and "trace not found" in err


def test_jaeger_search_by_service_and_tags(
    incident_file: Path, serve: Callable[[Handler], _Server], capsys: pytest.CaptureFixture[str]
) -> None:
    request = _request(incident_file)
    body = json.dumps({"result": _otlp_json_hex(request)}).encode()

    def jaeger(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, str, bytes]:
        if path == "/api/v3/traces" and query.get("query.service_name") == ["support-agent"]:
            return 200, "application/json", body
        return 404, "application/json", b'{"error":{"httpCode":404,"message":"no traces"}}'

    server = serve(jaeger)
    code = main(["forensics", f"jaeger:{server.url}", "--service", "support-agent", "--tag", "customer=cust_789",
                 "--json"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert len(json.loads(capsys.readouterr().out)) == 1
    _, query, _ = server.requests[-1]
    assert json.loads(query["query.attributes"][0]) == {"customer": "cust_789"}
    assert {"query.start_time_min", "query.start_time_max", "query.num_traces"} <= set(query)
    assert main(["forensics", f"jaeger:{server.url}", "--service", "nobody"]) == 2
    assert main(["forensics", f"jaeger:{server.url}"]) == 2
    assert "--trace TRACE_ID or --service NAME" in capsys.readouterr().err


def test_tempo_protobuf_and_json_answers(
    incident_file: Path, serve: Callable[[Handler], _Server], capsys: pytest.CaptureFixture[str]
) -> None:
    request = _request(incident_file)
    tid = _trace_id(request)

    def tempo(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, str, bytes]:
        if path != f"/api/traces/{tid}":
            return 404, "text/plain", b"trace not found"
        if headers.get("accept") == "application/protobuf":
            return 200, "application/protobuf", request.SerializeToString()
        return 200, "application/json", json.dumps({"batches": _otlp_json_hex(request)["resourceSpans"]}).encode()

    server = serve(tempo)
    assert len(list(read_source(f"tempo:{server.url}", tid))) == 8
    assert server.requests[-1][2]["accept"] == "application/protobuf"
    assert main(["postmortem", f"tempo:{server.url}", "--trace", tid]) == 0
    assert "step 3, chat gpt-4o-mini" in capsys.readouterr().out
    assert main(["forensics", f"tempo:{server.url}", "--trace", "cd" * 16]) == 2
    assert "not found in Tempo" in capsys.readouterr().err
    assert main(["forensics", f"tempo:{server.url}"]) == 2
    assert "Tempo needs --trace" in capsys.readouterr().err

    batches = json.dumps({"batches": _otlp_json_hex(request)["resourceSpans"]}).encode()
    json_only = serve(lambda p, q, h: (200, "application/json", batches))
    assert len(list(read_source(f"tempo:{json_only.url}", tid))) == 8


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((200, "text/html", b"<html>Grafana</html>"), "not JSON"),
        ((200, "application/json", b'{"data": []}'), "not OTLP trace data"),
        ((500, "application/json", b'{"error":{"httpCode":500,"message":"storage down"}}'), "HTTP 500: storage down"),
    ],
)
def test_backend_answers_that_are_not_otlp_are_clear_errors(
    answer: tuple[int, str, bytes],
    message: str,
    serve: Callable[[Handler], _Server],
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = serve(lambda p, q, h: answer)
    assert main(["forensics", f"jaeger:{server.url}", "--trace", "ab" * 16]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unreachable_slow_and_oversized_backends(
    serve: Callable[[Handler], _Server], capsys: pytest.CaptureFixture[str]
) -> None:
    closed = serve(lambda p, q, h: (200, "application/json", b"{}"))
    url = closed.url
    closed.close()
    assert main(["forensics", f"jaeger:{url}", "--trace", "ab" * 16, "--timeout", "2"]) == 2
    assert "cannot reach the backend" in capsys.readouterr().err

    def slow(p: str, q: dict[str, list[str]], h: dict[str, str]) -> tuple[int, str, bytes]:
        time.sleep(1.5)
        return 200, "application/json", b"{}"

    server = serve(slow)
    assert main(["forensics", f"tempo:{server.url}", "--trace", "ab" * 16, "--timeout", "0.3"]) == 2
    assert "no answer within 0.3 s" in capsys.readouterr().err

    big = serve(lambda p, q, h: (200, "application/json", b" " * 5000))
    with pytest.raises(SourceError, match="over the 1000-byte limit"):
        list(read_source(f"jaeger:{big.url}", "ab" * 16, max_bytes=1000))
    with pytest.raises(SourceError, match="expected http"):
        list(read_source("jaeger:localhost:16686", "ab" * 16))
    with pytest.raises(SourceError, match="up to 32 hex digits"):
        list(read_source(f"jaeger:{big.url}", "not-an-id"))
