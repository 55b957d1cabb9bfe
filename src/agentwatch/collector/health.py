"""The health endpoint: ``GET /healthz`` (JSON status and counters), ``GET /metrics`` (Prometheus).

``/healthz`` answers 200 while the collector accepts data (status ``ok``, or
``degraded`` while the downstream fails or the export queue is full) and 503
once it is draining or stopped, so orchestrators stop routing to it. Served
by the same uvicorn machinery as the OTLP/HTTP receiver (see :mod:`.serving`).
"""

from __future__ import annotations

import json
import logging

from .config import Endpoint
from .serving import AsgiServer, Limits, Receive, Scope, Send, bind
from .telemetry import Stats

log = logging.getLogger("agentwatch.collector")

MAX_CONNECTIONS = 64
HEADER_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0


class HealthServer:
    def __init__(self, endpoint: Endpoint, stats: Stats) -> None:
        self.stats = stats
        limits = Limits(MAX_CONNECTIONS, HEADER_TIMEOUT, IDLE_TIMEOUT)
        self._serving = AsgiServer(bind(endpoint, "the health endpoint"), self._app, limits, "agentwatch-health")
        self.port: int = self._serving.port

    def start(self) -> None:
        self._serving.start()

    def stop(self) -> None:
        self._serving.stop()

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        stats = self.stats
        if scope["method"] not in ("GET", "HEAD"):
            status, body, kind = 405, b'{"error": "use GET"}', "application/json"
        elif path in ("/healthz", "/health", "/"):
            snapshot = stats.snapshot()
            status = 200 if snapshot["status"] in ("ok", "degraded") else 503
            body, kind = json.dumps(snapshot, indent=2).encode(), "application/json"
        elif path == "/metrics":
            status, body, kind = 200, stats.prometheus().encode(), "text/plain; version=0.0.4; charset=utf-8"
        else:
            status, body, kind = 404, b'{"error": "not found; try /healthz or /metrics"}', "application/json"
        headers = [
            (b"content-type", kind.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        # A request body is never read here: close rather than reuse the connection after one.
        scope_headers = dict(scope["headers"])
        if b"transfer-encoding" in scope_headers or scope_headers.get(b"content-length", b"0") != b"0":
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
