"""A scripted LLM server that speaks the OpenAI and Anthropic HTTP APIs on 127.0.0.1.

It exists so tests and the demo can drive the *real* ``openai`` and ``anthropic`` clients —
their HTTP stack, retries, timeouts, SSE parsers and stream helpers — over a real socket,
with no API key and no network. Replies are scripted in a provider-neutral way
(:mod:`agentwatch.testing.reply`) and rendered in the wire format of the endpoint hit.

Example::

    import openai
    from agentwatch.testing import LLMServer, reply

    with LLMServer() as server:
        server.script(reply.tool_call("get_order", {"id": "ord_555"}), reply.text("Shipped."))
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="test")
        first = client.chat.completions.create(model="gpt-4o-mini", messages=[...], tools=[...])
        assert server.requests[0].tool_names == ["get_order"]

Standard library only: it ships in the package for users' own offline agent tests.
"""

from __future__ import annotations

import collections
import json
import logging
import selectors
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, cast

from ._anthropic import Messages
from ._openai import ChatCompletions, Responses
from ._wire import Context, IdSource, Renderer, dumps
from .reply import (
    Answer,
    CutStream,
    Delayed,
    Disconnect,
    ErrorReply,
    Malformed,
    ScriptedReply,
    ScriptItem,
    StreamError,
    echo,
)
from .request import Endpoint, RecordedRequest

__all__ = ["LLMServer"]

logger = logging.getLogger(__name__)

_REPLY_TYPES = (Answer, ErrorReply, Delayed, CutStream, StreamError, Malformed, Disconnect)
_RENDERERS: dict[Endpoint, Renderer] = {
    "chat.completions": ChatCompletions(),
    "responses": Responses(),
    "messages": Messages(),
}
_MALFORMED_BODY = '{"id":"broken","object":"chat.completion","choices":[{"index":0,"message":{"role":'


class LLMServer:
    """An HTTP/1.1 server on an ephemeral loopback port, answering from a script.

    ``script()`` queues replies consumed one per model request, in order, across all three
    endpoints. When the queue is empty, ``default`` answers — a reply, or a scripting
    function given the :class:`RecordedRequest` (``reply.echo`` unless told). Every request
    is kept in ``requests``. Use as a context manager, or ``start()`` / ``close()``.
    """

    def __init__(
        self,
        *,
        default: ScriptItem = echo,
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout: float = 30.0,
    ) -> None:
        self._initial_default = default
        self._default: ScriptItem = default
        self._host = host
        self._requested_port = port
        self._idle_timeout = idle_timeout
        self._lock = threading.Lock()
        self._queue: collections.deque[ScriptItem] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._errors: list[BaseException] = []
        self._ids = IdSource()
        self._request_ids = IdSource()
        self._stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._accept_thread: threading.Thread | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> LLMServer:
        """Bind and start serving in a background thread; returns ``self``."""
        if self._accept_thread is not None:
            raise RuntimeError("LLMServer already started (a closed server cannot restart)")
        listener = socket.create_server((self._host, self._requested_port), backlog=64)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._wake = socket.socketpair()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"llm-server:{self._port}", daemon=True
        )
        self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, drop open connections, end pending delays and join every thread."""
        if self._accept_thread is None or self._stop.is_set():
            return
        self._stop.set()
        assert self._wake is not None and self._listener is not None
        try:
            self._wake[1].send(b"\0")
        except OSError:
            pass
        self._accept_thread.join()
        self._listener.close()
        with self._lock:
            connections, threads = list(self._connections), list(self._threads)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        # Every handler thread, including ones whose connection already ended but which
        # have not quite exited yet.
        for thread in threads:
            thread.join(timeout=5.0)
        for sock in self._wake:
            sock.close()

    def __enter__(self) -> LLMServer:
        if self._accept_thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"{self._host}:{self._port}" if self._port else "not started"
        return f"<LLMServer {where}, {self.pending} scripted replies pending>"

    # -- addresses -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("LLMServer not started")
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` — the server root."""
        return f"http://{self._host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for ``openai.OpenAI`` / ``AsyncOpenAI`` (ends in ``/v1``)."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for ``anthropic.Anthropic`` / ``AsyncAnthropic`` (the root)."""
        return self.url

    # -- scripting -------------------------------------------------------------------------

    def script(self, *replies: ScriptItem) -> None:
        """Queue replies for the next model requests; a callable is a one-shot scripting function."""
        for item in replies:
            _check_item(item)
        with self._lock:
            self._queue.extend(replies)

    @property
    def default(self) -> ScriptItem:
        """What answers when the script is empty: a reply, or a scripting function."""
        return self._default

    @default.setter
    def default(self, value: ScriptItem) -> None:
        _check_item(value)
        with self._lock:
            self._default = value

    @property
    def pending(self) -> int:
        """How many scripted replies have not been served yet."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError("no request received yet")
            return self._requests[-1]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by scripting functions or while serving (the client got a 500)."""
        with self._lock:
            return list(self._errors)

    def reset(self) -> None:
        """Forget the script, the recorded requests and errors; restore the initial default."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._errors.clear()
            self._default = self._initial_default
        self._ids.reset()
        self._request_ids.reset()

    # -- serving ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wake[0], selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select():
                    if key.fileobj is not self._listener:
                        return
                    try:
                        conn, address = self._listener.accept()
                    except OSError:
                        continue
                    thread = threading.Thread(
                        target=self._serve_connection,
                        args=(conn, address),
                        name=f"llm-server:{self._port}:conn",
                        daemon=True,
                    )
                    with self._lock:
                        self._connections.add(conn)
                        self._threads = [t for t in self._threads if t.is_alive()]
                        self._threads.append(thread)
                    thread.start()

    def _serve_connection(self, conn: socket.socket, address: Any) -> None:
        try:
            conn.settimeout(self._idle_timeout)
            _Handler(conn, address, cast(Any, self))
        except OSError:
            pass  # the client went away (or close() shut the socket): nothing to tell anyone
        except Exception as exc:  # a bug in the server: keep it for the test to see
            logger.exception("scripted LLM server failed")
            with self._lock:
                self._errors.append(exc)
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _record(self, handler: _Handler, raw: bytes) -> tuple[RecordedRequest, bool]:
        path, _, query = handler.path.partition("?")
        headers: dict[str, str] = {}
        for name, value in handler.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body: Any = None
        parsed = True
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                parsed = False
        record = RecordedRequest(handler.command, path, query, headers, body, raw, time.time())
        with self._lock:
            self._requests.append(record)
        return record, parsed

    def _dispatch(self, handler: _Handler) -> None:
        raw = handler.read_body()
        record, parsed = self._record(handler, raw)
        renderer = _RENDERERS.get(record.endpoint) if record.endpoint else None
        if renderer is None or handler.command != "POST":
            anthropic = "anthropic-version" in record.headers or "x-api-key" in record.headers
            shape: Renderer = _RENDERERS["messages" if anthropic else "chat.completions"]
            problem = ErrorReply(404, f"Unknown request URL: {handler.command} {record.path}")
            handler.send_body(404, dumps(shape.error_body(problem)).encode())
            return
        if not parsed or not isinstance(record.body, dict):
            problem = ErrorReply(400, "The request body is not a JSON object.")
            handler.send_body(400, dumps(renderer.error_body(problem)).encode())
            return
        try:
            self._serve(handler, renderer, record, self._next_reply(record))
        except OSError:
            raise
        except Exception as exc:
            logger.exception("scripted LLM server could not serve %s %s", handler.command, record.path)
            with self._lock:
                self._errors.append(exc)
            if handler.responded:
                handler.abort()
            else:
                problem = ErrorReply(500, f"agentwatch.testing server error: {exc!r}")
                handler.send_body(500, dumps(renderer.error_body(problem)).encode())

    def _resolve(self, item: ScriptItem, record: RecordedRequest) -> ScriptedReply | None:
        if isinstance(item, _REPLY_TYPES):
            return item
        result = item(record)
        if result is not None and not isinstance(result, _REPLY_TYPES):
            raise TypeError(f"scripting function returned {result!r}, not a reply")
        return result

    def _default_reply(self, record: RecordedRequest) -> ScriptedReply:
        with self._lock:
            default = self._default
        return self._resolve(default, record) or echo(record)

    def _next_reply(self, record: RecordedRequest) -> ScriptedReply:
        with self._lock:
            item = self._queue.popleft() if self._queue else None
        resolved = self._resolve(item, record) if item is not None else None
        return resolved if resolved is not None else self._default_reply(record)

    def _serve(
        self, handler: _Handler, renderer: Renderer, record: RecordedRequest, item: ScriptedReply
    ) -> None:
        while isinstance(item, Delayed):
            if self._stop.wait(item.seconds):
                handler.abort()
                return
            item = item.then if item.then is not None else self._default_reply(record)
        if isinstance(item, Disconnect):
            handler.abort()
            return
        if isinstance(item, ErrorReply):
            handler.send_body(item.status, dumps(renderer.error_body(item)).encode(), _error_headers(item))
            return
        if isinstance(item, Malformed):
            if record.stream:
                handler.start_stream({})
                handler.send_event(renderer.malformed_event().encode())
                handler.end_stream()
            else:
                handler.send_body(200, (item.body or _MALFORMED_BODY).encode())
            return

        cut: int | None = None
        failure: StreamError | None = None
        answer: ScriptedReply | None
        if isinstance(item, CutStream):
            cut, answer = item.after, item.then
        elif isinstance(item, StreamError):
            failure, answer = item, item.then
        else:
            answer = item
        if failure is not None and not record.stream:
            self._serve(handler, renderer, record, failure.error)
            return
        if answer is None:
            answer = self._default_reply(record)
        if not isinstance(answer, Answer):
            self._serve(handler, renderer, record, answer)
            return

        ctx = Context(record, self._ids, int(time.time()))
        if not record.stream:
            body = dumps(renderer.body(answer, ctx)).encode()
            if cut is None:
                handler.send_body(200, body, answer.headers)
            else:
                handler.send_body(200, body, answer.headers, truncate=cut)
                handler.abort()
            return

        events = renderer.events(answer, ctx)
        if failure is not None:
            keep = max(0, min(failure.after, len(events) - 1))
            events = [*events[:keep], renderer.error_event(failure.error, keep)]
        if cut is not None:
            events = events[:cut]
        handler.start_stream(answer.headers)
        for index, event in enumerate(events):
            if index and answer.event_delay and self._stop.wait(answer.event_delay):
                handler.abort()
                return
            handler.send_event(event.encode())
        if cut is not None:
            handler.abort()
        else:
            handler.end_stream()

    def _next_request_id(self) -> str:
        return self._request_ids("req_")


def _check_item(item: object) -> None:
    if not isinstance(item, _REPLY_TYPES) and not callable(item):
        raise TypeError(f"not a reply or scripting function: {item!r}")


def _error_headers(error: ErrorReply) -> dict[str, str]:
    headers = dict(error.headers)
    retry_after = error.retry_after if error.retry_after is not None else (1 if error.status == 429 else None)
    if retry_after is not None:
        seconds = int(retry_after) if float(retry_after).is_integer() else retry_after
        headers.setdefault("retry-after", str(seconds))
    return headers


class _Handler(BaseHTTPRequestHandler):
    """One keep-alive connection; the owning :class:`LLMServer` decides every reply."""

    protocol_version = "HTTP/1.1"
    server_version = "agentwatch-llm-server"
    sys_version = ""
    responded = False

    @property
    def owner(self) -> LLMServer:
        return cast(LLMServer, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on ``LLMServer.requests``, not on access logs."""

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            self.close_connection = True

    def handle_one_request(self) -> None:
        self.responded = False
        super().handle_one_request()

    def do_POST(self) -> None:
        self.owner._dispatch(self)

    do_GET = do_POST
    do_PUT = do_POST
    do_PATCH = do_POST
    do_DELETE = do_POST

    def read_body(self) -> bytes:
        """The request body, whether sent with Content-Length or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _start(self, status: int, headers: Mapping[str, str], extra: Mapping[str, str]) -> None:
        self.responded = True
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        request_id = self.owner._next_request_id()
        self.send_header("x-request-id", request_id)
        self.send_header("request-id", request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def send_body(
        self,
        status: int,
        body: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        truncate: int | None = None,
    ) -> None:
        """A JSON reply with Content-Length (only ``truncate`` bytes of it, when given)."""
        self._start(
            status,
            headers or {},
            {"Content-Type": "application/json", "Content-Length": str(len(body))},
        )
        self.wfile.write(body if truncate is None else body[: max(0, truncate)])

    def start_stream(self, headers: Mapping[str, str]) -> None:
        """Begin a chunked ``text/event-stream`` reply (the connection stays reusable)."""
        self._start(
            200,
            headers,
            {
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "Transfer-Encoding": "chunked",
            },
        )

    def send_event(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def abort(self) -> None:
        """Close the connection now, mid-reply if need be."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
