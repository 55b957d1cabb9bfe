"""Replies the scripted LLM server can give, and small helpers that build them.

A reply is provider-neutral: the server renders the same :class:`Answer` as an OpenAI
chat completion, an OpenAI Responses ``response`` or an Anthropic ``message``, depending
on the endpoint the client hit, so one script drives any of the three client APIs.

Typical use::

    from agentwatch.testing import reply

    server.script(
        reply.tool_call("get_order", {"id": "ord_555"}),
        reply.text("Your order has shipped.", usage={"input_tokens": 42, "output_tokens": 7}),
        reply.error(429, retry_after=2),
        reply.delay(5.0),                      # longer than the client's timeout
        reply.cut_after(3),                    # stream dies after 3 events
    )
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .request import RecordedRequest

__all__ = [
    "Answer",
    "CutStream",
    "Delayed",
    "Disconnect",
    "ErrorReply",
    "Malformed",
    "Responder",
    "ScriptItem",
    "ScriptedReply",
    "StreamError",
    "ToolCall",
    "Usage",
    "cut_after",
    "delay",
    "disconnect",
    "echo",
    "error",
    "malformed",
    "stream_error",
    "text",
    "tool_call",
    "tool_calls",
]


@dataclass(frozen=True)
class Usage:
    """Token counts rendered verbatim into each provider's usage fields.

    ``cached_tokens`` becomes OpenAI ``*_tokens_details.cached_tokens`` and Anthropic
    ``cache_read_input_tokens``; ``cache_creation_tokens`` becomes Anthropic
    ``cache_creation_input_tokens`` (OpenAI ``cache_write_tokens``); ``reasoning_tokens``
    becomes OpenAI ``*_tokens_details.reasoning_tokens``. A detail left as ``None`` is
    omitted where the provider allows it, so tests can exercise both shapes. Note the
    providers count differently: OpenAI's prompt tokens include cached ones, Anthropic's
    ``input_tokens`` exclude them — script what the provider you emulate would send.
    """

    input_tokens: int
    output_tokens: int
    cached_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        """Sum reported as ``total_tokens`` by the OpenAI APIs."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class ToolCall:
    """One function/tool call the model makes.

    ``arguments`` is normally a mapping; a string is sent verbatim, which lets a test
    feed the client malformed argument JSON. ``id`` is generated when omitted.
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    @property
    def arguments_json(self) -> str:
        """The arguments as the JSON text the OpenAI APIs carry."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(dict(self.arguments), separators=(",", ":"))


@dataclass(frozen=True)
class Answer:
    """A successful model turn: text and/or tool calls.

    ``stop_reason`` accepts neutral names (``stop``, ``length``, ``tool_calls``,
    ``content_filter``) or either provider's own (``end_turn``, ``max_tokens``, ``tool_use``,
    ``stop_sequence``, ``refusal``…); it is mapped to the endpoint's vocabulary, and an
    unknown value is sent verbatim. By default it is ``tool_calls`` when there are tool
    calls and ``stop`` otherwise. ``model`` defaults to the request's model; ``usage`` to a
    deterministic estimate from the request and reply sizes. Streams split text at words
    and tool arguments into short slices, or every ``chunk_size`` characters when set;
    ``event_delay`` pauses between streamed events (for latency / time-to-first-token tests).
    """

    text: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    stop_reason: str | None = None
    model: str | None = None
    id: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    chunk_size: int | None = None
    event_delay: float = 0.0


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error status with the provider's own error body.

    ``type``/``code``/``message`` default to what the provider sends for ``status``.
    ``retry_after`` (seconds) sets the ``retry-after`` header; a 429 gets ``1`` unless told.
    Also used as the payload of a mid-stream :class:`StreamError`.
    """

    status: int
    message: str | None = None
    type: str | None = None
    code: str | None = None
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Delayed:
    """Wait ``seconds`` before serving ``then`` (the default reply when ``None``).

    Used to make a client hit its timeout; the wait ends early when the server closes.
    """

    seconds: float
    then: ScriptedReply | None = None


@dataclass(frozen=True)
class CutStream:
    """Serve ``then`` but close the connection abruptly partway.

    For a streaming request the first ``after`` SSE events are sent, then the connection is
    closed without ending the chunked body. For a non-streaming request the headers and the
    first ``after`` bytes of the JSON body are sent. Either way the client sees a broken
    transfer, as when a proxy or the provider drops the connection.
    """

    after: int
    then: Answer | None = None


@dataclass(frozen=True)
class StreamError:
    """Stream ``then`` for ``after`` events, then send the provider's error event.

    Anthropic gets ``event: error`` (``overloaded_error`` by default), OpenAI chat a
    ``data: {"error": …}`` event, OpenAI Responses an ``error`` event. A non-streaming
    request gets ``error`` as a plain HTTP error reply instead.
    """

    after: int
    error: ErrorReply = field(default_factory=lambda: ErrorReply(529))
    then: Answer | None = None


@dataclass(frozen=True)
class Malformed:
    """A 200 reply whose body is not valid JSON (or, when streaming, an SSE event whose data is not).

    ``body`` replaces the default truncated JSON text.
    """

    body: str | None = None


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without sending any response (a connection error for the client)."""


ScriptedReply = Answer | ErrorReply | Delayed | CutStream | StreamError | Malformed | Disconnect
"""Anything the server can serve for one request."""

Responder = Callable[["RecordedRequest"], ScriptedReply | None]
"""A scripting function: given the request, decide the reply (``None`` means the default)."""

ScriptItem = ScriptedReply | Responder
"""What :meth:`LLMServer.script` accepts: a reply, or a one-shot scripting function."""


def _usage(usage: Usage | Mapping[str, int] | None) -> Usage | None:
    if usage is None or isinstance(usage, Usage):
        return usage
    return Usage(**usage)


def text(
    content: str,
    *,
    usage: Usage | Mapping[str, int] | None = None,
    stop_reason: str | None = None,
    model: str | None = None,
    id: str | None = None,
    headers: Mapping[str, str] | None = None,
    chunk_size: int | None = None,
    event_delay: float = 0.0,
) -> Answer:
    """A plain text answer."""
    return Answer(
        text=content,
        usage=_usage(usage),
        stop_reason=stop_reason,
        model=model,
        id=id,
        headers=dict(headers or {}),
        chunk_size=chunk_size,
        event_delay=event_delay,
    )


def tool_calls(
    *calls: ToolCall | tuple[str, Mapping[str, Any] | str],
    text: str | None = None,
    usage: Usage | Mapping[str, int] | None = None,
    stop_reason: str | None = None,
    model: str | None = None,
    id: str | None = None,
    headers: Mapping[str, str] | None = None,
    chunk_size: int | None = None,
    event_delay: float = 0.0,
) -> Answer:
    """An answer with one or more tool calls, given as :class:`ToolCall` or ``(name, args)`` pairs.

    ``text`` adds assistant text before the calls (Anthropic models often explain first).
    """
    if not calls:
        raise ValueError("tool_calls() needs at least one call")
    built = tuple(c if isinstance(c, ToolCall) else ToolCall(c[0], c[1]) for c in calls)
    return Answer(
        text=text,
        tool_calls=built,
        usage=_usage(usage),
        stop_reason=stop_reason,
        model=model,
        id=id,
        headers=dict(headers or {}),
        chunk_size=chunk_size,
        event_delay=event_delay,
    )


def tool_call(
    name: str,
    arguments: Mapping[str, Any] | str | None = None,
    *,
    call_id: str | None = None,
    text: str | None = None,
    usage: Usage | Mapping[str, int] | None = None,
    stop_reason: str | None = None,
    model: str | None = None,
    chunk_size: int | None = None,
    event_delay: float = 0.0,
) -> Answer:
    """An answer with a single tool call (``call_id`` fixes the call's id)."""
    return tool_calls(
        ToolCall(name, {} if arguments is None else arguments, call_id),
        text=text,
        usage=usage,
        stop_reason=stop_reason,
        model=model,
        chunk_size=chunk_size,
        event_delay=event_delay,
    )


def error(
    status: int,
    message: str | None = None,
    *,
    type: str | None = None,
    code: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> ErrorReply:
    """An HTTP error reply (429, 401, 403, 400, 500, 529…) in the provider's error shape."""
    return ErrorReply(status, message, type, code, retry_after, dict(headers or {}))


def delay(seconds: float, then: ScriptedReply | None = None) -> Delayed:
    """Answer with ``then`` (default reply when ``None``) only after ``seconds``."""
    return Delayed(seconds, then)


def cut_after(after: int, then: Answer | None = None) -> CutStream:
    """Drop the connection after ``after`` stream events (or body bytes when not streaming)."""
    return CutStream(after, then)


def stream_error(after: int, error: ErrorReply | int = 529, then: Answer | None = None) -> StreamError:
    """Send the provider's mid-stream error event after ``after`` events (status or ErrorReply)."""
    return StreamError(after, error if isinstance(error, ErrorReply) else ErrorReply(error), then)


def malformed(body: str | None = None) -> Malformed:
    """A 200 reply whose JSON cannot be parsed."""
    return Malformed(body)


def disconnect() -> Disconnect:
    """Close the connection before any response is sent."""
    return Disconnect()


def echo(request: RecordedRequest) -> Answer:
    """The default responder: answer with the text of the last user message."""
    return Answer(text=request.last_user_text or "OK")
