"""OTLP/HTTP receiver: ``POST /v1/traces`` with protobuf or JSON bodies, gzip/deflate allowed.

Served by uvicorn (see :mod:`.serving`). Answers as the OTLP specification
asks: 200 with an ``ExportTraceServiceResponse`` (``partial_success`` when
spans were rejected) in the request's encoding; 400 with a ``google.rpc.Status``
body for a malformed body (too deeply nested included); 413 when the body,
compressed or decompressed, exceeds ``max_body_bytes`` (or could never fit in the journal); 408 when the headers
or the body take longer than their deadline; 415 for another content type or
encoding; 405 for another method on ``/v1/traces``; 404 for another path; 503
with ``Retry-After`` while the export queue is full, while the journal cannot
take the request (full, or a write error), while the bodies being received
already hold ``max_inflight_bytes``, or past ``max_connections``.
A response sent before the whole body was read closes the connection.
With a journal, a request whose 200 was handed to the connection is marked acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor

from .config import HttpReceiverConfig
from .intake import Accepted, Intake, Malformed, Throttled, TooLarge
from .otlp import (
    GRPC_INVALID_ARGUMENT,
    GRPC_RESOURCE_EXHAUSTED,
    GRPC_UNAVAILABLE,
    json_request_to_protobuf,
    response_body,
    status_body,
)
from .serving import AsgiServer, Limits, Receive, Scope, Send, bind
from .telemetry import Stats

log = logging.getLogger("agentwatch.collector")

PATH = "/v1/traces"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
ENCODINGS = ("", "identity", "gzip", "x-gzip", "deflate")
WORKERS = 4  # threads decoding and buffering requests (CPU-bound, under the GIL: a few suffice)
BUSY_RETRY_AFTER = 1


class BodyTooLarge(Exception):
    pass


class BadBody(Exception):
    pass


Reply = tuple[int, bytes, str, dict[str, str]]


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """The decoded body: every gzip member, at most ``limit`` bytes; trailing garbage is an error."""
    if encoding in ("", "identity"):
        return data
    gzip = encoding in ("gzip", "x-gzip")
    out: list[bytes] = []
    total = 0
    rest = data
    while True:
        decompressor = zlib.decompressobj(31 if gzip else 15)
        try:
            part = decompressor.decompress(rest, limit + 1 - total)
        except zlib.error as exc:
            raise BadBody(f"cannot decompress the {encoding} body: {exc}") from None
        total += len(part)
        if total > limit:
            raise BodyTooLarge(f"the decompressed body exceeds the limit of {limit} bytes")
        out.append(part)
        if not decompressor.eof:
            raise BadBody(f"the {encoding} body is truncated")
        rest = decompressor.unused_data
        if not rest:
            return b"".join(out)
        if not gzip:
            raise BadBody(f"data after the end of the {encoding} stream")
        # another gzip member follows: read it too (RFC 1952 allows several)


def _handed_over(send: Send) -> bool:
    """Did the response just sent reach the connection? uvicorn's ``send`` returns silently, writing
    nothing, once the client is gone; its cycle says so in ``disconnected``. Unknown: no (the safe side:
    a replay then counts the request as possibly resent)."""
    return getattr(getattr(send, "__self__", None), "disconnected", True) is False


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name: value for name, value in scope["headers"]}


class HttpReceiver:
    def __init__(self, config: HttpReceiverConfig, intake: Intake, stats: Stats) -> None:
        self.config = config
        self.intake = intake
        self.stats = stats
        self._inflight = 0  # body bytes held by requests being received (event loop thread only)
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="agentwatch-http")
        limits = Limits(
            config.max_connections,
            config.header_timeout_seconds,
            config.idle_timeout_seconds,
            on_reject=self._fail,
        )
        sock = bind(config.endpoint, "OTLP/HTTP")
        self._serving = AsgiServer(sock, self._app, limits, "agentwatch-http")
        self.port: int = self._serving.port

    def start(self) -> None:
        self._serving.start()

    def stop(self) -> None:
        self._serving.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _fail(self, reason: str) -> None:
        self.stats.add("requests_failed", 1, reason)

    # ------------------------------------------------------------------ the ASGI app

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = _headers(scope)
        content_type = headers.get(b"content-type", b"").decode("latin-1").split(";", 1)[0].strip().lower()
        as_json = content_type == JSON
        path = scope["path"]
        method = scope["method"]
        unread = b"transfer-encoding" in headers or headers.get(b"content-length", b"0") != b"0"
        if path != PATH:
            self._fail("not_found")
            await self._error(send, 404, f"no such path: {path} (OTLP traces go to {PATH})", False, close=unread)
            return
        if method != "POST":
            self._fail("method_not_allowed")
            extra = {"allow": "POST"}
            await self._error(send, 405, f"{method} not allowed; use POST", False, extra=extra, close=unread)
            return
        self.stats.add("requests_received", 1, "http")
        if content_type not in (PROTOBUF, JSON):
            self._fail("unsupported_media_type")
            message = f"unsupported Content-Type {content_type or '(none)'!r}; use {PROTOBUF} or {JSON}"
            await self._error(send, 415, message, False, close=True)
            return
        encoding = headers.get(b"content-encoding", b"").decode("latin-1").strip().lower()
        if encoding not in ENCODINGS:
            self._fail("unsupported_media_type")
            await self._error(send, 415, f"unsupported Content-Encoding {encoding!r}", as_json, close=True)
            return
        limit = self.config.max_body_bytes
        length = headers.get(b"content-length")  # h11 has checked it is a valid number
        if length is not None and int(length) > limit:
            self._fail("too_large")
            message = f"the body has {int(length)} bytes; the limit is {limit}"
            await self._error(send, 413, message, as_json, GRPC_RESOURCE_EXHAUSTED, close=True)
            return
        held = [0]  # bytes reserved in max_inflight_bytes, released whatever happens
        try:
            body = await self._read_body(receive, send, limit, int(length or 0), as_json, held)
            if body is None:
                return
            loop = asyncio.get_running_loop()
            (status, payload, kind, extra), accepted = await loop.run_in_executor(
                self._pool, self._process, body, encoding, as_json
            )
            del body
            await self._respond(send, status, payload, kind, extra)
            if accepted is not None and accepted.record is not None and _handed_over(send):
                self.intake.acknowledged(accepted)
        finally:
            self._inflight -= held[0]

    async def _read_body(
        self, receive: Receive, send: Send, limit: int, expected: int, as_json: bool, held: list[int]
    ) -> bytes | None:
        """The whole body within ``body_timeout_seconds``, or ``None`` once an error was answered.

        Bytes are reserved in ``max_inflight_bytes`` as they come (a declared length up front);
        ``held[0]`` says how many, for the caller to release.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.body_timeout_seconds
        parts: list[bytes] = []
        total = 0
        more = True
        while more:
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except (TimeoutError, asyncio.TimeoutError):
                self._fail("timeout")
                seconds = self.config.body_timeout_seconds
                await self._error(send, 408, f"the body took longer than {seconds:g}s", as_json, close=True)
                return None
            if message["type"] != "http.request":  # the client went away
                return None
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            total += len(chunk)
            if total > limit:
                self._fail("too_large")
                message_text = f"the body exceeds the limit of {limit} bytes"
                await self._error(send, 413, message_text, as_json, GRPC_RESOURCE_EXHAUSTED, close=True)
                return None
            want = max(total, min(expected, limit)) - held[0]  # a declared length is reserved up front
            if want > 0:
                if self._inflight + want > self.config.max_inflight_bytes:
                    self._fail("throttled")
                    await self._error(
                        send,
                        503,
                        "the collector is receiving too much at once; retry later",
                        as_json,
                        GRPC_UNAVAILABLE,
                        extra={"retry-after": str(BUSY_RETRY_AFTER)},
                        close=True,
                    )
                    return None
                self._inflight += want
                held[0] += want
            if chunk:
                parts.append(chunk)
        return b"".join(parts)

    def _process(self, body: bytes, encoding: str, as_json: bool) -> tuple[Reply, Accepted | None]:
        """Decode and buffer one request (in a worker thread); the reply to send, and what was accepted."""
        kind = JSON if as_json else PROTOBUF
        limit = self.config.max_body_bytes
        try:
            data = decompress(body, encoding, limit)
            if as_json:
                data = json_request_to_protobuf(data) if data.strip() else b""
            accepted = self.intake.submit(data, "http")
        except (BodyTooLarge, TooLarge) as exc:
            self._fail("too_large")
            return self._status(413, str(exc), as_json, GRPC_RESOURCE_EXHAUSTED), None
        except (BadBody, Malformed, ValueError, RecursionError) as exc:
            self._fail("malformed")
            text = str(exc) if not isinstance(exc, RecursionError) else "the body is nested too deeply"
            return self._status(400, text, as_json, GRPC_INVALID_ARGUMENT), None
        except Throttled as exc:
            self._fail("throttled")
            reply = self._status(503, str(exc), as_json, GRPC_UNAVAILABLE)
            reply[3]["retry-after"] = str(exc.retry_after)
            return reply, None
        except Exception:
            log.exception("unexpected error handling an OTLP/HTTP request")
            self._fail("internal_error")
            return self._status(500, "internal error", as_json, 13), None
        return (200, response_body(accepted.rejected, accepted.message, as_json=as_json), kind, {}), accepted

    @staticmethod
    def _status(status: int, message: str, as_json: bool, code: int) -> Reply:
        return status, status_body(code, message, as_json=as_json), JSON if as_json else PROTOBUF, {}

    # ------------------------------------------------------------------ responses

    @staticmethod
    async def _respond(
        send: Send, status: int, body: bytes, content_type: str, extra: dict[str, str], close: bool = False
    ) -> None:
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"server", b"agentwatch-collector"),
        ]
        headers.extend((k.encode(), v.encode()) for k, v in extra.items())
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _error(
        self,
        send: Send,
        status: int,
        message: str,
        as_json: bool,
        code: int = GRPC_INVALID_ARGUMENT,
        extra: dict[str, str] | None = None,
        close: bool = False,
    ) -> None:
        """An error answer; ``close`` when the body was not read (the connection cannot be reused)."""
        body = status_body(code, message, as_json=as_json)
        await self._respond(send, status, body, JSON if as_json else PROTOBUF, extra or {}, close)

