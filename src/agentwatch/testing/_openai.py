"""OpenAI wire formats: Chat Completions and Responses, JSON and SSE, plus error bodies.

Shapes follow the ``openai`` package's own types (``ChatCompletion``, ``ChatCompletionChunk``,
``Response`` and the ``response.*`` stream events), so the real client and its streaming
helpers accept them.
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
    neutral_stop,
    stop_reason,
    text_pieces,
    usage_for,
    with_ids,
)
from .reply import Answer, ErrorReply, Usage

_FINGERPRINT = "fp_agentwatch"

_CHAT_STOP = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_CHAT_FROM_NEUTRAL = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
}

# status -> (type, code, message), as the OpenAI API reports them.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You have insufficient permissions for this operation."),
    404: ("invalid_request_error", None, "The requested resource was not found."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
    504: ("server_error", None, "Gateway timeout."),
    529: ("server_error", None, "The server is overloaded or not ready yet."),
}


def _error_fields(error: ErrorReply) -> tuple[str, str | None, str]:
    default = _ERRORS.get(error.status) or (
        ("server_error", None, "The server had an error.")
        if error.status >= 500
        else ("invalid_request_error", None, "Invalid request.")
    )
    return (error.type or default[0], error.code or default[1], error.message or default[2])


def openai_error_body(error: ErrorReply) -> JSONObject:
    """``{"error": {"message", "type", "param", "code"}}``."""
    type_, code, message = _error_fields(error)
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class ChatCompletions:
    """``POST /v1/chat/completions``."""

    def body(self, answer: Answer, ctx: Context) -> JSONObject:
        calls = with_ids(answer, ctx.ids, "call_")
        message: JSONObject = {
            "role": "assistant",
            "content": answer.text if answer.text is not None else (None if calls else ""),
            "refusal": None,
            "annotations": [],
        }
        if calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments_json},
                }
                for call, call_id in calls
            ]
        return {
            "id": answer.id or ctx.ids("chatcmpl-"),
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.model(answer),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": stop_reason(answer, _CHAT_STOP, _CHAT_FROM_NEUTRAL),
                }
            ],
            "usage": chat_usage(usage_for(answer, ctx.request)),
            "service_tier": "default",
            "system_fingerprint": _FINGERPRINT,
        }

    def events(self, answer: Answer, ctx: Context) -> list[SSEEvent]:
        options = ctx.request.body.get("stream_options") if isinstance(ctx.request.body, dict) else None
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        completion_id = answer.id or ctx.ids("chatcmpl-")
        calls = with_ids(answer, ctx.ids, "call_")

        def chunk(choices: list[JSONObject], usage: JSONObject | None = None) -> SSEEvent:
            data: JSONObject = {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": ctx.created,
                "model": ctx.model(answer),
                "service_tier": "default",
                "system_fingerprint": _FINGERPRINT,
                "choices": choices,
            }
            if include_usage:
                data["usage"] = usage
            return SSEEvent(dumps(data))

        def delta(fields: JSONObject, finish_reason: str | None = None) -> SSEEvent:
            return chunk([{"index": 0, "delta": fields, "logprobs": None, "finish_reason": finish_reason}])

        first: JSONObject = {"role": "assistant", "content": None if calls and answer.text is None else ""}
        first["refusal"] = None
        events = [delta(first)]
        events += [delta({"content": piece}) for piece in text_pieces(answer.text or "", answer.chunk_size)]
        for index, (call, call_id) in enumerate(calls):
            events.append(
                delta(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": ""},
                            }
                        ]
                    }
                )
            )
            events += [
                delta({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                for piece in argument_pieces(call.arguments_json, answer.chunk_size)
            ]
        events.append(delta({}, stop_reason(answer, _CHAT_STOP, _CHAT_FROM_NEUTRAL)))
        if include_usage:
            events.append(chunk([], chat_usage(usage_for(answer, ctx.request))))
        events.append(SSEEvent("[DONE]"))
        return events

    def error_body(self, error: ErrorReply) -> JSONObject:
        return openai_error_body(error)

    def error_event(self, error: ErrorReply, sequence_number: int) -> SSEEvent:
        return SSEEvent(dumps(openai_error_body(error)))

    def malformed_event(self) -> SSEEvent:
        return SSEEvent('{"id":"chatcmpl-broken","object":"chat.completion.chunk","choices":[{')


def chat_usage(usage: Usage) -> JSONObject:
    """``CompletionUsage``; token details only when scripted."""
    out: JSONObject = {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }
    prompt_details: JSONObject = {}
    if usage.cached_tokens is not None:
        prompt_details["cached_tokens"] = usage.cached_tokens
    if usage.cache_creation_tokens is not None:
        prompt_details["cache_write_tokens"] = usage.cache_creation_tokens
    if prompt_details:
        out["prompt_tokens_details"] = prompt_details
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def responses_usage(usage: Usage) -> JSONObject:
    """``ResponseUsage``; its detail objects are required, so absent counts are 0."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cached_tokens": usage.cached_tokens or 0,
            "cache_write_tokens": usage.cache_creation_tokens or 0,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": usage.total_tokens,
    }


class Responses:
    """``POST /v1/responses``."""

    def _items(self, answer: Answer, ctx: Context) -> list[JSONObject]:
        """The finished output items: a message (if any text) then one item per function call."""
        items: list[JSONObject] = []
        if has_message(answer):
            items.append(
                {
                    "id": ctx.ids("msg_"),
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [_output_text(answer.text or "")],
                }
            )
        for call, call_id in with_ids(answer, ctx.ids, "call_"):
            items.append(
                {
                    "id": ctx.ids("fc_"),
                    "type": "function_call",
                    "status": "completed",
                    "arguments": call.arguments_json,
                    "call_id": call_id,
                    "name": call.name,
                }
            )
        return items

    def _response(
        self, answer: Answer, ctx: Context, response_id: str, output: list[JSONObject], *, done: bool
    ) -> JSONObject:
        request = ctx.request.body if isinstance(ctx.request.body, dict) else {}
        status, incomplete = "in_progress", None
        if done:
            reason = neutral_stop(answer)
            status = "completed"
            if reason == "length":
                status, incomplete = "incomplete", {"reason": "max_output_tokens"}
            elif reason == "content_filter":
                status, incomplete = "incomplete", {"reason": "content_filter"}
        response: JSONObject = {
            "id": response_id,
            "object": "response",
            "created_at": ctx.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": request.get("instructions"),
            "max_output_tokens": request.get("max_output_tokens"),
            "max_tool_calls": request.get("max_tool_calls"),
            "model": ctx.model(answer),
            "output": output,
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "previous_response_id": request.get("previous_response_id"),
            "reasoning": request.get("reasoning") or {"effort": None, "summary": None},
            "service_tier": "default",
            "store": request.get("store", True),
            "temperature": request.get("temperature", 1.0),
            "text": request.get("text") or {"format": {"type": "text"}},
            "tool_choice": request.get("tool_choice", "auto"),
            "tools": request.get("tools", []),
            "top_p": request.get("top_p", 1.0),
            "truncation": request.get("truncation", "disabled"),
            "usage": responses_usage(usage_for(answer, ctx.request)) if done else None,
            "user": request.get("user"),
            "metadata": request.get("metadata") or {},
        }
        if done:
            response["completed_at"] = ctx.created
        return response

    def body(self, answer: Answer, ctx: Context) -> JSONObject:
        response_id = answer.id or ctx.ids("resp_")
        return self._response(answer, ctx, response_id, self._items(answer, ctx), done=True)

    def events(self, answer: Answer, ctx: Context) -> list[SSEEvent]:
        response_id = answer.id or ctx.ids("resp_")
        items = self._items(answer, ctx)
        events: list[SSEEvent] = []

        def emit(type_: str, **fields: Any) -> None:
            events.append(SSEEvent(dumps({"type": type_, "sequence_number": len(events), **fields}), type_))

        emit("response.created", response=self._response(answer, ctx, response_id, [], done=False))
        emit("response.in_progress", response=self._response(answer, ctx, response_id, [], done=False))
        for index, item in enumerate(items):
            where = {"item_id": item["id"], "output_index": index}
            if item["type"] == "message":
                text = item["content"][0]["text"]
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "content": []},
                )
                emit("response.content_part.added", **where, content_index=0, part=_output_text(""))
                for piece in text_pieces(text, answer.chunk_size):
                    emit("response.output_text.delta", **where, content_index=0, delta=piece, logprobs=[])
                emit("response.output_text.done", **where, content_index=0, text=text, logprobs=[])
                emit("response.content_part.done", **where, content_index=0, part=_output_text(text))
            else:
                arguments = item["arguments"]
                emit(
                    "response.output_item.added",
                    output_index=index,
                    item={**item, "status": "in_progress", "arguments": ""},
                )
                for piece in argument_pieces(arguments, answer.chunk_size):
                    emit("response.function_call_arguments.delta", **where, delta=piece)
                emit("response.function_call_arguments.done", **where, arguments=arguments)
            emit("response.output_item.done", output_index=index, item=item)
        final = self._response(answer, ctx, response_id, items, done=True)
        emit(
            "response.completed" if final["status"] == "completed" else "response.incomplete", response=final
        )
        return events

    def error_body(self, error: ErrorReply) -> JSONObject:
        return openai_error_body(error)

    def error_event(self, error: ErrorReply, sequence_number: int) -> SSEEvent:
        type_, code, message = _error_fields(error)
        data = {
            "type": "error",
            "code": code or type_,
            "message": message,
            "param": None,
            "sequence_number": sequence_number,
        }
        return SSEEvent(dumps(data), "error")

    def malformed_event(self) -> SSEEvent:
        return SSEEvent('{"type":"response.created","sequence_number":0,"response":{', "response.created")


def _output_text(text: str) -> JSONObject:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
