"""HTTP serving for the collector: uvicorn (with its h11 protocol) on an event loop in one thread.

Both HTTP endpoints (the OTLP/HTTP receiver and /healthz + /metrics) are
small ASGI apps served here. uvicorn brings the HTTP/1.1 parser (h11: strict,
rejects malformed framing such as a negative chunk size), keep-alive, flow
control and graceful shutdown; connections cost no thread. What uvicorn
leaves to its user is added here:

- a cap on open connections: one more is answered 503 and closed at once;
- a whole-request deadline for the headers, from a request's first byte
  (uvicorn only times out idle kept-alive connections);
- binding the socket ourselves, so that a port in use is an ``OSError`` that
  names the endpoint (uvicorn itself logs and exits the process).

Body deadlines and size limits belong to the app, which reads the body.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import Endpoint

log = logging.getLogger("agentwatch.collector")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_HEADER_BYTES = 16 * 1024  # request line + headers (h11's bound on an incomplete event)
_REJECT_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n"
    b"connection: close\r\ncontent-length: 21\r\n\r\ntoo many connections\n"
)
_REJECT_408 = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"


class _OnceEvery(logging.Filter):
    """Let a given message through at most once per ``interval`` seconds (hostile clients can repeat it)."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        key = str(record.msg)
        with self._lock:
            if now - self._last.get(key, -self.interval) < self.interval:
                return False
            if len(self._last) > 256:
                self._last.clear()
            self._last[key] = now
        return True


# uvicorn's per-connection messages ("Invalid HTTP request received.") go here, rate-limited.
_http_log = logging.getLogger("agentwatch.collector.http")
_http_log.addFilter(_OnceEvery())


def bind(endpoint: Endpoint, what: str) -> socket.socket:
    """A listening socket on ``endpoint``; ``OSError`` naming ``what`` and the endpoint otherwise."""
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((endpoint.host, endpoint.port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot listen for {what} on {endpoint}: {reason}") from None
    sock.setblocking(False)
    return sock


class Limits:
    """What one server allows; ``on_reject(reason)`` counts refusals (``too_many_connections``,
    ``timeout``, ``malformed`` for framing the HTTP parser refused)."""

    def __init__(
        self,
        max_connections: int,
        header_timeout: float,
        idle_timeout: float,
        on_reject: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.on_reject = on_reject


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a connection cap and a headers deadline."""

    limits: Limits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _http_log
        self._header_timer: asyncio.TimerHandle | None = None
        self._timed_cycle: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            self.limits.on_reject("too_many_connections")
            transport.write(_REJECT_503)
            transport.close()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm()  # the first bytes of a new request on a kept-alive connection
        super().data_received(data)
        if self.cycle is not None and self.cycle is not self._timed_cycle:
            self._timed_cycle = self.cycle  # its headers are complete
            self._disarm()

    def send_400_response(self, msg: str) -> None:
        # h11 refused the request's framing (a bad chunk size, Content-Length or header)
        self.limits.on_reject("malformed")
        super().send_400_response(msg)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._headers_expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.limits.on_reject("timeout")
            self.transport.write(_REJECT_408)
            self.transport.close()


class AsgiServer:
    """Serve ``app`` on an already bound socket, in a daemon thread running its own event loop."""

    def __init__(self, sock: socket.socket, app: App, limits: Limits, name: str) -> None:
        self.sock = sock
        self.port: int = int(sock.getsockname()[1])
        self.name = name
        protocol = type("Protocol", (_Protocol,), {"limits": limits})
        config = uvicorn.Config(
            app,
            http=protocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            timeout_keep_alive=max(1, round(limits.idle_timeout)),
            timeout_graceful_shutdown=1,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not self._server.started:
            raise OSError(f"{self.name}: the HTTP server did not start")

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self.sock]))
        except BaseException:  # a server thread must not die silently
            log.exception("%s stopped unexpectedly", self.name)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sock.close()


# uvicorn's own start/stop lines ("Started server process", "Uvicorn running on ...") are noise here.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
