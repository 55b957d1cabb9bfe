"""The health endpoint: ``GET /healthz`` (JSON status and counters), ``GET /metrics`` (Prometheus).

``/healthz`` answers 200 while the collector accepts data (status ``ok``, or
``degraded`` while the downstream fails or the export queue is full) and 503
once it is draining or stopped, so orchestrators stop routing to it.
"""

from __future__ import annotations

import json
import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .config import Endpoint
from .serving import ServerThread
from .telemetry import Stats

log = logging.getLogger("agentwatch.collector")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], stats: Stats) -> None:
        self.stats = stats
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentwatch-collector"
    sys_version = ""
    timeout = 10.0
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("health %s - %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        stats = self.server.stats
        if path in ("/healthz", "/health", "/"):
            snapshot = stats.snapshot()
            status = 200 if snapshot["status"] in ("ok", "degraded") else 503
            self._send(status, json.dumps(snapshot, indent=2, sort_keys=False).encode(), "application/json")
        elif path == "/metrics":
            self._send(200, stats.prometheus().encode(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._send(404, b'{"error": "not found; try /healthz or /metrics"}', "application/json")

    do_HEAD = do_GET


class HealthServer:
    def __init__(self, endpoint: Endpoint, stats: Stats) -> None:
        self._serving = ServerThread(_Server((endpoint.host, endpoint.port), stats), "agentwatch-health")
        self.port: int = self._serving.port

    def start(self) -> None:
        self._serving.start()

    def stop(self) -> None:
        self._serving.stop()
