"""OTLP/HTTP receiver: ``POST /v1/traces`` with protobuf or JSON bodies, gzip/deflate allowed.

Answers as the OTLP specification asks: 200 with an ``ExportTraceServiceResponse``
(``partial_success`` when spans were rejected) in the request's encoding;
400 with a ``google.rpc.Status`` body for a malformed body; 413 when the body
(compressed or not) exceeds ``max_body_bytes``; 415 for another content type
or encoding; 405 for another method on ``/v1/traces``; 404 for another path;
503 with ``Retry-After`` while the export queue is full.
"""

from __future__ import annotations

import logging
import socket
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .config import HttpReceiverConfig
from .intake import Intake, Malformed, Throttled
from .otlp import (
    GRPC_INVALID_ARGUMENT,
    GRPC_RESOURCE_EXHAUSTED,
    GRPC_UNAVAILABLE,
    json_request_to_protobuf,
    response_body,
    status_body,
)
from .serving import ServerThread
from .telemetry import Stats

log = logging.getLogger("agentwatch.collector")

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
DRAIN_LIMIT = 64 * 1024 * 1024  # an oversized body is read (and discarded) up to this, then the socket closes
READ_TIMEOUT = 30.0


class BodyTooLarge(Exception):
    pass


class BadBody(Exception):
    pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], receiver: HttpReceiver) -> None:
        self.receiver = receiver
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "agentwatch-collector"
    sys_version = ""
    timeout = READ_TIMEOUT
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s - %s", self.address_string(), format % args)

    # ------------------------------------------------------------------ routing

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != PATH:
            self._discard_body()
            self.server.receiver.stats.add("requests_failed", 1, "not_found")
            self._error(HTTPStatus.NOT_FOUND, f"no such path: {path} (OTLP traces go to {PATH})", False)
            return
        if self.command != "POST":
            self._discard_body()
            self.server.receiver.stats.add("requests_failed", 1, "method_not_allowed")
            self._error(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{self.command} not allowed; use POST",
                False,
                extra={"Allow": "POST"},
            )
            return
        self.server.receiver.handle(self)

    do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _route

    def do_HEAD(self) -> None:
        self._discard_body()
        path = self.path.split("?", 1)[0]
        status = HTTPStatus.METHOD_NOT_ALLOWED if path == PATH else HTTPStatus.NOT_FOUND
        self.send_response(status)
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.end_headers()

    # ------------------------------------------------------------------ bodies

    def _discard_body(self) -> None:
        """Read a small body we don't need, or close the connection after a large one."""
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= 65536:
            self.rfile.read(int(length))
        elif length not in (None, "0") or self.headers.get("Transfer-Encoding"):
            self.close_connection = True

    def read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            raise BadBody(f"invalid Content-Length {length_header!r}") from None
        if length < 0:
            self.close_connection = True
            raise BadBody(f"invalid Content-Length {length_header!r}")
        if length > limit:
            self._drain(length)
            raise BodyTooLarge(f"the body has {length} bytes; the limit is {limit}")
        data = self.rfile.read(length)
        if len(data) != length:
            self.close_connection = True
            raise BadBody("the body ended before Content-Length bytes")
        return data

    def _drain(self, length: int) -> None:
        # Reading what the client is sending lets it see our 413 instead of a reset connection.
        self.close_connection = True
        if length > DRAIN_LIMIT:
            return
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                return
            remaining -= len(chunk)

    def _read_chunked(self, limit: int) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise BadBody("invalid chunked encoding") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(parts)
            total += size
            if total > limit:
                self.close_connection = True
                raise BodyTooLarge(f"the chunked body exceeds the limit of {limit} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(16)

    # ------------------------------------------------------------------ responses

    def respond(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _error(
        self,
        status: HTTPStatus,
        message: str,
        as_json: bool,
        code: int = GRPC_INVALID_ARGUMENT,
        extra: dict[str, str] | None = None,
    ) -> None:
        body = status_body(code, message, as_json=as_json)
        self.respond(status, body, JSON if as_json else PROTOBUF, extra)


def _decompress(data: bytes, encoding: str, limit: int) -> bytes:
    if encoding in ("", "identity"):
        return data
    wbits = 31 if encoding in ("gzip", "x-gzip") else 15
    decompressor = zlib.decompressobj(wbits)
    try:
        out = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BadBody(f"cannot decompress the {encoding} body: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
    if not decompressor.eof:
        raise BadBody(f"the {encoding} body is truncated")
    return out


class HttpReceiver:
    def __init__(self, config: HttpReceiverConfig, intake: Intake, stats: Stats) -> None:
        self.config = config
        self.intake = intake
        self.stats = stats
        self._serving = ServerThread(_Server((config.endpoint.host, config.endpoint.port), self), "agentwatch-http")
        self.port: int = self._serving.port

    def start(self) -> None:
        self._serving.start()

    def stop(self) -> None:
        self._serving.stop()

    def handle(self, req: _Handler) -> None:
        self.stats.add("requests_received", 1, "http")
        content_type = req.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        as_json = content_type == JSON
        if content_type not in (PROTOBUF, JSON):
            req._discard_body()
            self._fail(req, "unsupported_media_type")
            req._error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported Content-Type {content_type or '(none)'!r}; use {PROTOBUF} or {JSON}",
                False,
            )
            return
        encoding = req.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ("", "identity", "gzip", "x-gzip", "deflate"):
            req._discard_body()
            self._fail(req, "unsupported_media_type")
            req._error(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"unsupported Content-Encoding {encoding!r}", as_json
            )
            return
        limit = self.config.max_body_bytes
        try:
            body = _decompress(req.read_body(limit), encoding, limit)
            if as_json:
                body = json_request_to_protobuf(body) if body.strip() else b""
            accepted = self.intake.submit(body, "http")
        except BodyTooLarge as exc:
            self._fail(req, "too_large")
            req._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc), as_json, GRPC_RESOURCE_EXHAUSTED)
            return
        except (BadBody, Malformed, ValueError) as exc:
            self._fail(req, "malformed")
            req._error(HTTPStatus.BAD_REQUEST, str(exc), as_json)
            return
        except Throttled as exc:
            self._fail(req, "throttled")
            req._error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                str(exc),
                as_json,
                GRPC_UNAVAILABLE,
                extra={"Retry-After": str(exc.retry_after)},
            )
            return
        except (ConnectionError, TimeoutError):
            req.close_connection = True
            return
        except Exception:
            log.exception("unexpected error handling an OTLP/HTTP request")
            self._fail(req, "internal_error")
            req.close_connection = True
            req._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error", as_json, 13)
            return
        req.respond(
            HTTPStatus.OK,
            response_body(accepted.rejected, accepted.message, as_json=as_json),
            JSON if as_json else PROTOBUF,
        )

    def _fail(self, req: _Handler, reason: str) -> None:
        self.stats.add("requests_failed", 1, reason)
