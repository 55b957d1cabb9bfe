"""SIGTERM drains: pending traces are decided and delivered before the process exits."""

from __future__ import annotations

import signal
import socket
import threading
import time

from .helpers import agent_run, by_call, capture, export, grpc_exporter, start_collector_process


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


class DrippingDownstream:
    """An OTLP/HTTP endpoint that reads the request, then sends its response one byte every 0.2 s:
    every read succeeds within the exporter's timeout, so the export lasts as long as the drip."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got_request = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = int(next(ln.split(b":")[1] for ln in lines if ln.startswith(b"content-length")))
            while len(body) < length:
                body += conn.recv(65536)
            self.got_request.set()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\n")
            while not self.stop.wait(0.2):
                conn.sendall(b"\x00")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_an_export_outliving_the_drain_is_counted_dropped_once(collectors):
    """Never neither: an attempt still running after the drain deadline and the workers' join is
    counted dropped (``shutdown``) when the collector stops; its late outcome does not count again."""
    downstream = DrippingDownstream()
    try:
        collector = collectors(
            f"http://127.0.0.1:{downstream.port}/v1/traces",
            "http/protobuf",
            exporter={"timeout_seconds": 1, "drain_timeout_seconds": 1},
            decision={"straggler_delay_ms": 20},
        )
        export(grpc_exporter(collector), capture(agent_run))
        assert downstream.got_request.wait(10)
        started = time.monotonic()
        collector.shutdown(timeout=1)
        assert time.monotonic() - started < 6
        counters = collector.stats.counters()
        assert counters["spans_forwarded"][""] == 0
        assert counters["spans_dropped"]["shutdown"] == 5
    finally:
        downstream.close()
    time.sleep(0.3)  # the abandoned attempt ends now (the connection closed mid-body)
    assert collector.stats.counters()["spans_dropped"] == counters["spans_dropped"]
