"""The OTLP/HTTP receiver against hostile clients, at its documented limits (loopback, bounded).

Slow headers and bodies (slowloris), too many connections, chunked bodies with
invalid or oversized chunks, a huge declared length, multi-member gzip, a gzip
bomb, deeply nested JSON and protobuf: each answered as documented in
docs/collector-config.md, in bounded time, without a thread per connection and
without a traceback in the log; the collector keeps serving afterwards.
"""

from __future__ import annotations

import gzip
import http.client
import json
import logging
import os
import socket
import threading
import time

import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .helpers import agent_run, capture, export, http_exporter, wait_until

MAX_BODY = 65536


def _request(n: int = 3) -> bytes:
    req = ExportTraceServiceRequest()
    ss = req.resource_spans.add().scope_spans.add()
    tid = os.urandom(16)
    for i in range(n):
        ss.spans.add(trace_id=tid, span_id=os.urandom(8), name=f"span {i}", start_time_unix_nano=1)
    return req.SerializeToString()


def _post(port, body, headers=None, content_type="application/x-protobuf"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/v1/traces", body=body, headers={"Content-Type": content_type, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    return sock


def _read_all(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (bounded by ``timeout``)."""
    sock.settimeout(timeout)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return out


@pytest.fixture
def collector(grpc_sink, collectors):
    return collectors(
        grpc_sink.target,
        receivers={
            "grpc": {"endpoint": "127.0.0.1:0"},
            "http": {
                "max_body_bytes": MAX_BODY,
                "header_timeout_seconds": 1,
                "body_timeout_seconds": 1.5,
                "max_connections": 230,
            },
        },
        decision={"straggler_delay_ms": 20},
    )


def _still_serving(collector, grpc_sink):
    before = grpc_sink.count()
    spans = capture(agent_run)
    export(http_exporter(collector), spans)
    wait_until(lambda: grpc_sink.count() == before + len(spans))


def test_slow_headers_are_cut_at_the_deadline_without_a_thread_each(collector, grpc_sink):
    threads_before = threading.active_count()
    socks = [_connect(collector.http_port) for _ in range(200)]
    try:
        started = time.monotonic()
        for sock in socks:
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
        assert threading.active_count() < threads_before + 10  # no thread per connection
        # keep dripping header lines: the deadline covers the whole header, not each read
        for _ in range(2):
            time.sleep(0.4)
            for sock in socks:
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
        answers = [_read_all(sock, 5) for sock in socks]
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers)
    assert elapsed < 5
    assert collector.stats.get("requests_failed", "timeout") == 200
    _still_serving(collector, grpc_sink)


def test_slow_bodies_are_cut_at_the_deadline(collector, grpc_sink):
    socks = [_connect(collector.http_port) for _ in range(50)]
    try:
        for sock in socks:
            sock.sendall(
                b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                b"Content-Length: 60000\r\n\r\n" + b"\x00" * 100
            )
        started = time.monotonic()
        for _ in range(3):
            time.sleep(0.4)
            for sock in socks:
                try:
                    sock.sendall(b"\x00" * 10)
                except OSError:
                    pass
        answers = [_read_all(sock, 5) for sock in socks]
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:100]
    assert elapsed < 5
    assert collector.stats.get("requests_failed", "timeout") == 50
    _still_serving(collector, grpc_sink)


def test_connections_past_the_cap_are_refused(grpc_sink, collectors):
    collector = collectors(
        grpc_sink.target, receivers={"http": {"endpoint": "127.0.0.1:0", "max_connections": 20}}
    )
    socks = [_connect(collector.http_port) for _ in range(20)]
    try:
        time.sleep(0.2)
        extra = _connect(collector.http_port)
        answer = _read_all(extra, 5)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"retry-after" in answer.lower()
        assert collector.stats.get("requests_failed", "too_many_connections") == 1
    finally:
        for sock in socks:
            sock.close()
    wait_until(lambda: _post(collector.http_port, _request())[0] == 200, timeout=5)


def _raw(port: int, head: bytes, body: bytes) -> bytes:
    sock = _connect(port)
    try:
        sock.sendall(head + body)
        return _read_all(sock, 5)
    finally:
        sock.close()


CHUNKED = (
    b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
    b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
)


def test_chunked_bodies(collector, grpc_sink):
    port = collector.http_port
    body = _request(3)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7))
    assert _raw(port, CHUNKED, chunks + b"0\r\n\r\n").startswith(b"HTTP/1.1 200")
    wait_until(lambda: grpc_sink.count() == 3)

    for bad in (b"-1\r\n", b"-0x10\r\n", b"zz\r\n", b"0x10\r\n"):
        assert _raw(port, CHUNKED, bad).startswith(b"HTTP/1.1 400"), bad
    assert collector.stats.get("requests_failed", "malformed") == 4

    # a chunk claiming 2**80 bytes: read no further than max_body_bytes
    answer = _raw(port, CHUNKED, b"ffffffffffffffffffff\r\n" + b"\x00" * (MAX_BODY + 100))
    assert answer.startswith(b"HTTP/1.1 413")

    # chunks adding up past max_body_bytes: 413, long before a 300 MiB body could be read
    big = b"".join(b"4000\r\n" + b"\x00" * 0x4000 + b"\r\n" for _ in range(5))
    answer = _raw(port, CHUNKED, big)
    assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
    _still_serving(collector, grpc_sink)


def test_a_huge_declared_length_is_refused_unread(collector, grpc_sink):
    head = (
        b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
        b"Content-Length: 314572800\r\n\r\n"
    )
    started = time.monotonic()
    answer = _raw(collector.http_port, head, b"\x00" * 1000)
    assert answer.startswith(b"HTTP/1.1 413") and time.monotonic() - started < 3
    assert status_pb2.Status.FromString(answer.split(b"\r\n\r\n", 1)[1]).code == 8


def test_every_gzip_member_is_read(collector, grpc_sink):
    body = _request(6)
    cut = len(body) // 2
    status, _, _ = _post(
        collector.http_port, gzip.compress(body[:cut]) + gzip.compress(body[cut:]), {"Content-Encoding": "gzip"}
    )
    assert status == 200
    wait_until(lambda: grpc_sink.count() == 6)
    status, _, _ = _post(collector.http_port, gzip.compress(body) + b"garbage", {"Content-Encoding": "gzip"})
    assert status == 400


def test_a_gzip_bomb_is_stopped_at_the_decompressed_limit(collector):
    bomb = gzip.compress(b"\x00" * (20 * 1024 * 1024), 9)
    assert len(bomb) < MAX_BODY
    status, _, body = _post(collector.http_port, bomb, {"Content-Encoding": "gzip"})
    assert status == 413 and "decompressed" in status_pb2.Status.FromString(body).message
    # a bomb split into many members is bounded the same way
    members = gzip.compress(b"\x00" * 40_000) * 40
    status, _, _ = _post(collector.http_port, members, {"Content-Encoding": "gzip"})
    assert status == 413


def _kvlist_json(depth: int) -> dict:
    value: dict = {"stringValue": "x"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


def _deep_anyvalue(depth: int) -> bytes:
    def ld(number: int, payload: bytes) -> bytes:
        size = len(payload)
        prefix = bytearray()
        while size > 0x7F:
            prefix.append((size & 0x7F) | 0x80)
            size >>= 7
        prefix.append(size)
        return bytes([(number << 3) | 2]) + bytes(prefix) + payload

    value = ld(1, b"x")
    for _ in range(depth):
        value = ld(6, ld(1, ld(1, b"k") + ld(2, value)))  # kvlist_value { values { key, value } }
    span = ld(1, os.urandom(16)) + ld(2, os.urandom(8)) + ld(9, ld(1, b"deep") + ld(2, value))
    return ld(1, ld(2, ld(2, span)))


def test_too_deep_nesting_is_a_400_without_a_traceback(collector, grpc_sink, caplog):
    caplog.set_level(logging.DEBUG)
    port = collector.http_port
    deep_json = b"[" * 30_000 + b"]" * 30_000  # as deep as max_body_bytes allows
    status, headers, body = _post(port, deep_json, content_type="application/json")
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["code"] == 3

    span = {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "s"}
    span["attributes"] = [{"key": "deep", "value": _kvlist_json(300)}]
    request = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    text = _dump(request)
    status, _, body = _post(port, text, content_type="application/json")
    assert status == 400 and "deep" in json.loads(body)["message"]

    status, _, body = _post(port, _deep_anyvalue(300))
    assert status == 400 and status_pb2.Status.FromString(body).code == 3

    # within the limit, the same shapes are fine
    span["attributes"] = [{"key": "deep", "value": _kvlist_json(10)}]
    assert _post(port, _dump(request), content_type="application/json")[0] == 200
    assert _post(port, _deep_anyvalue(10))[0] == 200

    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert collector.stats.get("requests_failed", "malformed") == 3
    assert collector.stats.get("requests_failed", "internal_error") == 0


def _dump(value: object) -> bytes:
    """JSON text of a deeply nested value (json.dumps itself recurses)."""
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        return json.dumps(value).encode()
    finally:
        sys.setrecursionlimit(limit)


def test_bodies_in_flight_are_bounded(grpc_sink, collectors):
    collector = collectors(
        grpc_sink.target,
        receivers={
            "http": {
                "endpoint": "127.0.0.1:0",
                "max_body_bytes": MAX_BODY,
                "max_inflight_bytes": MAX_BODY,
                "body_timeout_seconds": 5,
            }
        },
    )
    slow = _connect(collector.http_port)
    try:
        slow.sendall(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: 60000\r\n\r\n" + b"\x00" * 10
        )
        time.sleep(0.3)  # its 60000 bytes are reserved: no room for another 10 KB body
        status, headers, _ = _post(collector.http_port, b"\x00" * 10_000)
        assert status == 503 and headers["Retry-After"] == "1"
    finally:
        slow.close()
    wait_until(lambda: _post(collector.http_port, _request())[0] == 200, timeout=5)
    wait_until(lambda: collector.http._inflight == 0, timeout=5)  # every reservation released


def test_framing_errors_are_logged_rate_limited(collector, caplog):
    caplog.set_level(logging.DEBUG)
    for _ in range(20):
        assert _raw(collector.http_port, CHUNKED, b"-1\r\n").startswith(b"HTTP/1.1 400")
    logged = [r for r in caplog.records if r.name.startswith("agentwatch.collector.http")]
    assert len(logged) <= 1  # a hostile client cannot flood the log
    assert collector.stats.get("requests_failed", "malformed") == 20
