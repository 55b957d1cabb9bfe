"""Malformed, oversized and unusual input on both receivers: answered per the OTLP spec."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import os

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from .helpers import agent_run, capture, export, grpc_exporter, wait_until

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def _request(n: int = 1, *, trace_id: bytes | None = None, root: bool = True) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "raw-client"
    ss = rs.scope_spans.add()
    ss.scope.name = "raw"
    tid = trace_id or os.urandom(16)
    for i in range(n):
        span = ss.spans.add(
            trace_id=tid,
            span_id=os.urandom(8),
            name=f"span {i}",
            start_time_unix_nano=1,
            end_time_unix_nano=2,
        )
        if not root or i:
            span.parent_span_id = os.urandom(8)
    return req


def _post(port, body, content_type="application/x-protobuf", headers=None, method="POST", path="/v1/traces"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": content_type, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.headers, response.read()  # headers: case-insensitive
    finally:
        conn.close()


@pytest.fixture
def collector(grpc_sink, collectors):
    return collectors(
        grpc_sink.target,
        receivers={"http": {"max_body_bytes": 65536}, "grpc": {"max_message_bytes": 65536}},
        decision={"straggler_delay_ms": 20},
    )


def _still_serving(collector, grpc_sink):
    before = grpc_sink.count()
    spans = capture(agent_run)
    export(grpc_exporter(collector), spans)
    wait_until(lambda: grpc_sink.count() == before + len(spans))


def test_http_error_answers(collector, grpc_sink):
    port = collector.http_port
    good = _request(2).SerializeToString()

    status, headers, body = _post(port, good[:-7])  # truncated protobuf
    assert status == 400 and headers["Content-Type"] == "application/x-protobuf"
    assert status_pb2.Status.FromString(body).code == 3

    status, _, body = _post(port, good, content_type="text/plain")
    assert status == 415

    status, headers, body = _post(port, b'{"resourceSpans": [', content_type="application/json")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["code"] == 3 and "JSON" in json.loads(body)["message"]

    status, _, body = _post(port, b"\x00" * 70_000)
    assert status == 413
    assert status_pb2.Status.FromString(body).code == 8

    status, _, _ = _post(port, gzip.compress(b"\x0a" * 200_000), headers={"Content-Encoding": "gzip"})
    assert status == 413  # the decompressed size counts too

    status, _, _ = _post(port, b"not gzip", headers={"Content-Encoding": "gzip"})
    assert status == 400

    status, _, _ = _post(port, good, headers={"Content-Encoding": "br"})
    assert status == 415

    status, headers, _ = _post(port, None, method="GET")
    assert status == 405 and headers["Allow"] == "POST"

    status, _, _ = _post(port, good, path="/v1/metrics")
    assert status == 404

    assert grpc_sink.count() == 0
    assert collector.stats.get("requests_failed", "malformed") == 3
    _still_serving(collector, grpc_sink)


def test_http_valid_variants(collector, grpc_sink):
    port = collector.http_port

    status, _headers, body = _post(port, b"")  # an empty request is valid
    assert status == 200 and ExportTraceServiceResponse.FromString(body) == ExportTraceServiceResponse()

    status, _, body = _post(
        port, gzip.compress(_request(3).SerializeToString()), headers={"Content-Encoding": "gzip"}
    )
    assert status == 200
    wait_until(lambda: grpc_sink.count() == 3)

    # An unknown field on a span (number 999) is accepted and forwarded intact.
    req = _request(1)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    raw = span.SerializeToString() + b"\xba\x3e\x03abc"  # field 999, length-delimited "abc"
    rebuilt = ExportTraceServiceRequest()
    rebuilt.CopyFrom(req)
    rebuilt.resource_spans[0].scope_spans[0].ClearField("spans")
    rebuilt.resource_spans[0].scope_spans[0].spans.add().MergeFromString(raw)
    status, _, _ = _post(port, rebuilt.SerializeToString())
    assert status == 200
    wait_until(lambda: grpc_sink.count() == 4)
    forwarded = next(r for r in grpc_sink.received() if r.span_id == span.span_id.hex())
    assert forwarded.span.SerializeToString().endswith(b"\xba\x3e\x03abc")


def test_http_json(collector, grpc_sink):
    port = collector.http_port
    tid = "5b8efff798038103d269b633813fc60c"
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "json"},
                        "spans": [
                            {
                                "traceId": tid,
                                "spanId": "eee19b7ec3c1b174",
                                "name": "invoke_agent a",
                                "kind": 1,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [
                                    {
                                        "key": "gen_ai.operation.name",
                                        "value": {"stringValue": "invoke_agent"},
                                    },
                                    {"key": "n", "value": {"intValue": "42"}},
                                ],
                                "someFutureField": {"x": 1},
                            },
                            {"traceId": tid, "spanId": "not-hex!", "name": "bad id"},
                            {"traceId": "abcd", "spanId": "eee19b7ec3c1b175", "name": "short trace id"},
                            {  # protobuf's JSON mapping writes ids in base64: accepted too
                                "traceId": base64.b64encode(bytes.fromhex(tid)).decode(),
                                "spanId": base64.b64encode(bytes.fromhex("eee19b7ec3c1b176")).decode(),
                                "parentSpanId": base64.b64encode(bytes.fromhex("eee19b7ec3c1b174")).decode(),
                                "name": "base64 ids",
                            },
                        ],
                    }
                ],
            }
        ]
    }
    status, headers, payload = _post(port, json.dumps(body).encode(), content_type="application/json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    partial = json.loads(payload)["partialSuccess"]
    assert partial["rejectedSpans"] == "2" and "invalid" in partial["errorMessage"]
    wait_until(lambda: grpc_sink.count() == 2)
    span, b64 = sorted(grpc_sink.received(), key=lambda r: r.span_id)
    assert b64.span.trace_id.hex() == tid and b64.span_id == "eee19b7ec3c1b176"
    assert b64.span.parent_span_id.hex() == "eee19b7ec3c1b174"
    assert span.span.trace_id.hex() == tid and span.span_id == "eee19b7ec3c1b174"
    assert span.attrs["n"] == 42 and span.span.start_time_unix_nano == 1544712660000000000
    assert span.resource["service.name"] == "json-client"
    assert collector.stats.get("spans_rejected", "invalid_id") == 2

    status, _, payload = _post(port, b"", content_type="application/json")
    assert status == 200 and json.loads(payload) == {}


def test_grpc_error_answers(collector, grpc_sink):
    channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
    call = channel.unary_unary(EXPORT)
    try:
        with pytest.raises(grpc.RpcError) as info:
            call(_request(2).SerializeToString()[:-5], timeout=5)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT

        with pytest.raises(grpc.RpcError) as info:
            call(b"\x0a" + b"\x00" * 70_000, timeout=5)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED

        assert ExportTraceServiceResponse.FromString(call(b"", timeout=5)) == ExportTraceServiceResponse()

        req = _request(2)
        req.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x00" * 8
        response = ExportTraceServiceResponse.FromString(call(req.SerializeToString(), timeout=5))
        assert response.partial_success.rejected_spans == 1
        assert "span_id" in response.partial_success.error_message
        wait_until(lambda: grpc_sink.count() == 1)
    finally:
        channel.close()
    _still_serving(collector, grpc_sink)


def test_health_endpoints(collector):
    status, headers, body = _post(collector.health_port, None, method="GET", path="/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "ok"
    assert set(health["counters"]) >= {
        "spans_received",
        "spans_forwarded",
        "spans_dropped",
        "spans_evicted",
        "spans_rejected",
        "traces_decided",
        "findings",
    }
    assert set(health["gauges"]) >= {"queue_batches", "buffer_traces", "buffer_spans", "buffer_bytes"}
    status, headers, body = _post(collector.health_port, None, method="GET", path="/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert "# TYPE agentwatch_collector_spans_received_total counter" in text
    assert "agentwatch_collector_up 1" in text


def test_grpc_connection_limits_are_applied(grpc_sink, collectors):
    collector = collectors(
        grpc_sink.target, receivers={"grpc": {"endpoint": "127.0.0.1:0", "max_connection_idle_seconds": 0.5}}
    )
    channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
    states: list[grpc.ChannelConnectivity] = []
    channel.subscribe(states.append, try_to_connect=False)
    try:
        call = channel.unary_unary(EXPORT)
        assert ExportTraceServiceResponse.FromString(call(b"", timeout=5)) == ExportTraceServiceResponse()
        wait_until(lambda: grpc.ChannelConnectivity.READY in states, timeout=5)  # reported asynchronously
        ready = states.index(grpc.ChannelConnectivity.READY)
        # no call for longer than max_connection_idle_seconds: the server closes the connection
        wait_until(lambda: grpc.ChannelConnectivity.IDLE in states[ready:], timeout=5)
    finally:
        channel.close()
