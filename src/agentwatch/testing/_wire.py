"""Pieces shared by the protocol renderers: SSE framing, ids, chunking, stop reasons, usage."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass
from typing import Any, Protocol

from .reply import Answer, ErrorReply, ToolCall, Usage
from .request import RecordedRequest

JSONObject = dict[str, Any]

# Neutral stop reasons and the provider spellings that mean the same thing.
_NEUTRAL_STOP = {
    "stop": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "max_output_tokens": "length",
    "tool_calls": "tool_calls",
    "tool_use": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}

_WORDS = re.compile(r"\S+\s*|\s+")
_ARGUMENT_SLICE = 12


def dumps(obj: Any) -> str:
    """Compact JSON, as the providers send it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class SSEEvent:
    """One server-sent event; ``event`` is ``None`` for OpenAI chat's bare ``data:`` lines."""

    data: str
    event: str | None = None

    def encode(self) -> bytes:
        head = f"event: {self.event}\n" if self.event else ""
        lines = "".join(f"data: {line}\n" for line in self.data.split("\n"))
        return f"{head}{lines}\n".encode()


class IdSource:
    """Ids counted per prefix (the first tool call is ``call_000001``) so tests can predict them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = {}

    def __call__(self, prefix: str) -> str:
        with self._lock:
            n = self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return f"{prefix}{n:06d}"

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()


@dataclass(frozen=True)
class Context:
    """What a renderer needs besides the reply: the request, an id source and a timestamp."""

    request: RecordedRequest
    ids: IdSource
    created: int

    def model(self, answer: Answer) -> str:
        return answer.model or self.request.model or "unknown-model"


class Renderer(Protocol):
    """Turns neutral replies into one provider API's wire format."""

    def body(self, answer: Answer, ctx: Context) -> JSONObject:
        """The JSON body of a non-streaming reply."""
        ...

    def events(self, answer: Answer, ctx: Context) -> list[SSEEvent]:
        """The complete SSE stream of a streaming reply, terminator included."""
        ...

    def error_body(self, error: ErrorReply) -> JSONObject:
        """The JSON body of an HTTP error reply."""
        ...

    def error_event(self, error: ErrorReply, sequence_number: int) -> SSEEvent:
        """The provider's mid-stream error event."""
        ...

    def malformed_event(self) -> SSEEvent:
        """An event whose data is not valid JSON."""
        ...


def stop_reason(answer: Answer, native: frozenset[str], to_native: dict[str, str]) -> str:
    """The answer's stop reason in an API's vocabulary (unknown values pass through)."""
    given = answer.stop_reason or ("tool_calls" if answer.tool_calls else "stop")
    if given in native:
        return given
    return to_native.get(_NEUTRAL_STOP.get(given, given), given)


def neutral_stop(answer: Answer) -> str:
    """The answer's stop reason as a neutral name (unknown values pass through)."""
    given = answer.stop_reason or ("tool_calls" if answer.tool_calls else "stop")
    return _NEUTRAL_STOP.get(given, given)


def text_pieces(text: str, chunk_size: int | None) -> list[str]:
    """Stream deltas for ``text``: words with their trailing space, or fixed-size slices."""
    if not text:
        return []
    if chunk_size:
        return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)]
    return _WORDS.findall(text)


def argument_pieces(arguments: str, chunk_size: int | None) -> list[str]:
    """Stream deltas for tool-call argument JSON, split mid-token as real models do."""
    size = chunk_size or _ARGUMENT_SLICE
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]


def estimate_tokens(text: str) -> int:
    """A deterministic stand-in for a tokenizer: about four characters a token."""
    return max(1, (len(text) + 3) // 4)


def usage_for(answer: Answer, request: RecordedRequest) -> Usage:
    """The scripted usage, or an estimate from the request body and the reply size."""
    if answer.usage is not None:
        return answer.usage
    produced = (answer.text or "") + "".join(c.name + c.arguments_json for c in answer.tool_calls)
    return Usage(
        input_tokens=estimate_tokens(request.raw_body.decode("utf-8", "replace")),
        output_tokens=estimate_tokens(produced),
    )


def tool_input(call: ToolCall) -> Any:
    """Arguments as the object Anthropic sends; unparsable string arguments go verbatim."""
    if not isinstance(call.arguments, str):
        return dict(call.arguments)
    try:
        return json.loads(call.arguments)
    except ValueError:
        return call.arguments


def with_ids(answer: Answer, ids: IdSource, prefix: str) -> list[tuple[ToolCall, str]]:
    """Each tool call paired with its id (the scripted one, or a fresh one)."""
    return [(call, call.id or ids(prefix)) for call in answer.tool_calls]


def has_message(answer: Answer) -> bool:
    """Whether the reply carries a text part (always, unless it is tool calls only)."""
    return answer.text is not None or not answer.tool_calls
