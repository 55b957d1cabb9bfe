"""Anthropic Messages wire format, JSON and SSE, plus error bodies.

Shapes follow the ``anthropic`` package's ``Message`` and ``RawMessageStreamEvent`` types,
in the order the API sends them, so ``client.messages.stream()`` accumulates them.
"""

from __future__ import annotations

from typing import Any

from ._wire import (
    Context,
    JSONObject,
    SSEEvent,
    argument_pieces,
    dumps,
    has_message,
    stop_reason,
    text_pieces,
    tool_input,
    usage_for,
    with_ids,
)
from .reply import Answer, ErrorReply, Usage

_STOP = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"})
_FROM_NEUTRAL = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}

# status -> (error type, message), as the Anthropic API reports them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the API."),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error."),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def anthropic_error_body(error: ErrorReply) -> JSONObject:
    """``{"type": "error", "error": {"type", "message"}}``."""
    default = _ERRORS.get(error.status) or (
        ("api_error", "Internal server error.")
        if error.status >= 500
        else ("invalid_request_error", "Invalid request.")
    )
    return {
        "type": "error",
        "error": {"type": error.type or error.code or default[0], "message": error.message or default[1]},
    }


def _usage(usage: Usage, *, output_tokens: int | None = None) -> JSONObject:
    """``Usage``; cache counts only when scripted."""
    out: JSONObject = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens if output_tokens is None else output_tokens,
    }
    if usage.cache_creation_tokens is not None:
        out["cache_creation_input_tokens"] = usage.cache_creation_tokens
    if usage.cached_tokens is not None:
        out["cache_read_input_tokens"] = usage.cached_tokens
    return out


class Messages:
    """``POST /v1/messages``."""

    def _blocks(self, answer: Answer, ctx: Context) -> list[tuple[JSONObject, str]]:
        """Finished content blocks, each with the JSON text streamed for it (tool input)."""
        blocks: list[tuple[JSONObject, str]] = []
        if has_message(answer):
            blocks.append(({"type": "text", "text": answer.text or ""}, ""))
        for call, call_id in with_ids(answer, ctx.ids, "toolu_"):
            block = {"type": "tool_use", "id": call_id, "name": call.name, "input": tool_input(call)}
            blocks.append((block, call.arguments_json))
        return blocks

    def _message(self, answer: Answer, ctx: Context, message_id: str, content: list[Any]) -> JSONObject:
        return {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": ctx.model(answer),
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(usage_for(answer, ctx.request)),
        }

    def body(self, answer: Answer, ctx: Context) -> JSONObject:
        message = self._message(
            answer, ctx, answer.id or ctx.ids("msg_"), [b for b, _ in self._blocks(answer, ctx)]
        )
        message["stop_reason"] = stop_reason(answer, _STOP, _FROM_NEUTRAL)
        return message

    def events(self, answer: Answer, ctx: Context) -> list[SSEEvent]:
        usage = usage_for(answer, ctx.request)
        events: list[SSEEvent] = []

        def emit(type_: str, **fields: Any) -> None:
            events.append(SSEEvent(dumps({"type": type_, **fields}), type_))

        start = self._message(answer, ctx, answer.id or ctx.ids("msg_"), [])
        start["usage"] = _usage(usage, output_tokens=min(1, usage.output_tokens))
        emit("message_start", message=start)
        blocks = self._blocks(answer, ctx)
        for index, (block, arguments) in enumerate(blocks):
            if block["type"] == "text":
                emit("content_block_start", index=index, content_block={"type": "text", "text": ""})
                if index == 0:
                    emit("ping")
                for piece in text_pieces(block["text"], answer.chunk_size):
                    emit("content_block_delta", index=index, delta={"type": "text_delta", "text": piece})
            else:
                emit("content_block_start", index=index, content_block={**block, "input": {}})
                if index == 0:
                    emit("ping")
                for piece in ["", *argument_pieces(arguments, answer.chunk_size)]:
                    emit(
                        "content_block_delta",
                        index=index,
                        delta={"type": "input_json_delta", "partial_json": piece},
                    )
            emit("content_block_stop", index=index)
        if not blocks:
            emit("ping")
        emit(
            "message_delta",
            delta={"stop_reason": stop_reason(answer, _STOP, _FROM_NEUTRAL), "stop_sequence": None},
            usage=_usage(usage),
        )
        emit("message_stop")
        return events

    def error_body(self, error: ErrorReply) -> JSONObject:
        return anthropic_error_body(error)

    def error_event(self, error: ErrorReply, sequence_number: int) -> SSEEvent:
        return SSEEvent(dumps(anthropic_error_body(error)), "error")

    def malformed_event(self) -> SSEEvent:
        return SSEEvent('{"type":"message_start","message":{"id":', "message_start")
