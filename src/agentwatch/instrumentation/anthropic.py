"""Anthropic: ``messages.create`` (sync, async, streamed) and the ``messages.stream()`` managers.

Same choke point as OpenAI (``_stainless``). Token rule of the GenAI
conventions: ``gen_ai.usage.input_tokens`` = input + cache read + cache
creation, with the two cache counts also recorded on their own, so cost and
budgets see everything the provider bills.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from .. import _runtime
from .. import semconv as sc
from . import _messages as gm
from ._calls import LLMCall
from ._stainless import RequestInfo, StainlessPatch, numeric_params
from ._stream import AsyncStreamProxy, StreamProxy

_HELPERS = "anthropic.lib.streaming._messages"
_NUMERIC = (
    ("max_tokens", sc.GEN_AI_REQUEST_MAX_TOKENS),
    ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", sc.GEN_AI_REQUEST_TOP_P),
    ("top_k", sc.GEN_AI_REQUEST_TOP_K),
)


def _block_payload(block: Any) -> Any:
    """What a content block carries for entity extraction: text, tool input or tool result."""
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return None
    kind = block.get("type")
    if kind == "text":
        return block.get("text")
    if kind == "tool_result":
        content = block.get("content")
        return gm.plain_text(content) if isinstance(content, list) else content
    return None


def _history_payloads(messages: list[Any]) -> list[Any]:
    """Every text, tool input and tool result of a message history (a run's first call learns them all)."""
    out: list[Any] = []
    for msg in messages:
        content = msg.get("content") if isinstance(msg, dict) else None
        for block in content if isinstance(content, list) else [content]:
            payload = _block_payload(block)
            if payload is None and isinstance(block, dict) and block.get("type") == "tool_use":
                payload = block.get("input")
            if payload:
                out.append(payload)
    return out


def _genai_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [gm.text(content)]
    parts = []
    for block in content if isinstance(content, list) else ():
        get = block.get if isinstance(block, dict) else (lambda k, b=block: getattr(b, k, None))
        kind = get("type")
        if kind == "text":
            parts.append(gm.text(str(get("text") or "")))
        elif kind == "tool_use":
            parts.append(gm.tool_call(get("id"), get("name"), get("input")))
        elif kind == "tool_result":
            result = get("content")
            response = gm.plain_text(result) if isinstance(result, list) else result
            parts.append(gm.tool_response(get("tool_use_id"), response))
        elif kind == "thinking":
            parts.append(gm.reasoning(str(get("thinking") or "")))
        else:
            parts.append(gm.other(kind))
    return parts


class AnthropicProvider:
    name = sc.PROVIDER_ANTHROPIC

    def route(self, method: str, path: str) -> str | None:
        if method.lower() != "post":
            return None
        path = path.split("?", 1)[0].rstrip("/")
        return sc.OP_CHAT if path.endswith("/messages") else None

    def read_request(
        self, operation: str, body: dict[str, Any], deep: bool = True, capture: bool = True
    ) -> RequestInfo:
        attrs = numeric_params(body, _NUMERIC)
        stops = body.get("stop_sequences")
        if isinstance(stops, list):
            attrs[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = tuple(str(s) for s in stops)
        if body.get("stream"):
            attrs[sc.GEN_AI_REQUEST_STREAM] = True
        tools = body.get("tools")
        offered = [t["name"] for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)] if isinstance(
            tools, list
        ) else None
        # Schemas serve argument checks inside runs only (``deep``).
        schemas = {
            t["name"]: t["input_schema"] for t in tools or () if isinstance(t, dict)
            and isinstance(t.get("name"), str) and isinstance(t.get("input_schema"), dict)
        } if deep and isinstance(tools, list) else {}
        model = body.get("model")
        info = RequestInfo(operation=operation, model=model if isinstance(model, str) else None, attrs=attrs,
                           offered_tools=offered, offered_schemas=schemas or None)
        if not deep:
            return info
        system = body.get("system")
        if system:
            info.system_text = gm.plain_text(system)
        messages = body.get("messages")
        if isinstance(messages, list):
            last_user: str | None = None
            last_assistant = -1
            for i, msg in enumerate(messages):
                if not isinstance(msg, dict):
                    continue
                if msg.get("role") == "assistant":
                    last_assistant = i
                elif msg.get("role") == "user":
                    text = gm.plain_text(msg.get("content"))
                    if text:
                        last_user = text
            info.user_text = last_user
            fresh: list[Any] = []
            results: list[tuple[str, Any, bool]] | None = None
            for msg in messages[last_assistant + 1 :]:
                content = msg.get("content") if isinstance(msg, dict) else None
                blocks = content if isinstance(content, list) else [content]
                for block in blocks:
                    payload = _block_payload(block)
                    if payload:
                        fresh.append(payload)
                    # a tool result, matched to its request by id (request loops without tool spans)
                    if isinstance(block, dict) and block.get("type") == "tool_result":
                        call_id = block.get("tool_use_id")
                        if isinstance(call_id, str) and call_id:
                            if results is None:
                                results = info.tool_results = []
                            results.append((call_id, payload, block.get("is_error") is True))
            info.new_input = fresh
            info.history = (messages, _history_payloads)
            if capture:  # the GenAI message shape is for captured content only
                info.input_messages = [
                    gm.message(m.get("role"), _genai_parts(m.get("content")))
                    for m in messages
                    if isinstance(m, dict)
                ]
        return info

    def read_response(self, call: LLMCall, operation: str, response: Any) -> None:
        if response is None:
            return
        call.response_id = getattr(response, "id", None)
        model = getattr(response, "model", None)
        if isinstance(model, str):
            call.response_model = model
        reason = getattr(response, "stop_reason", None)
        if reason:
            call.finish_reasons = [str(reason)]
        usage = getattr(response, "usage", None)
        if usage is not None:
            _usage(call, usage)
        outputs = []
        for block in getattr(response, "content", None) or ():
            if getattr(block, "type", None) == "tool_use":
                call.requested.append((block.name, block.input, getattr(block, "id", None)))
            if call.capture:
                outputs.append(block)
        if call.capture and outputs:
            call.output_messages = [gm.message("assistant", _genai_parts(outputs), reason)]

    def chunk_handler(self, operation: str) -> Any:
        return _MessageStream()


def _usage(call: LLMCall, usage: Any) -> None:
    """Apply a usage object; message_delta usage is cumulative, so later values replace earlier ones."""
    fresh = getattr(usage, "input_tokens", None)
    read = getattr(usage, "cache_read_input_tokens", None)
    written = getattr(usage, "cache_creation_input_tokens", None)
    if isinstance(read, int):
        call.cache_read = read
    if isinstance(written, int):
        call.cache_write = written
    if isinstance(fresh, int):
        call.input_tokens = fresh + (call.cache_read or 0) + (call.cache_write or 0)
    out = getattr(usage, "output_tokens", None)
    if isinstance(out, int):
        call.output_tokens = out


class _MessageStream:
    """Accumulates message_start / content_block_* / message_delta events."""

    __slots__ = ("blocks", "text", "thinking")

    def __init__(self) -> None:
        self.blocks: dict[int, list[Any]] = {}  # index -> [name, partial json, id]
        self.text: list[str] = []
        self.thinking: list[str] = []

    def __call__(self, call: LLMCall, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            message = getattr(event, "message", None)
            call.response_id = getattr(message, "id", None)
            model = getattr(message, "model", None)
            if isinstance(model, str):
                call.response_model = model
            usage = getattr(message, "usage", None)
            if usage is not None:
                _usage(call, usage)
        elif kind == "content_block_start":
            block: Any = getattr(event, "content_block", None)
            if getattr(block, "type", None) == "tool_use":
                self.blocks[event.index] = [block.name, "", getattr(block, "id", None)]
                self._publish(call)
        elif kind == "content_block_delta":
            delta: Any = getattr(event, "delta", None)
            dtype = getattr(delta, "type", None)
            if dtype == "input_json_delta":
                slot = self.blocks.get(event.index)
                if slot is not None:
                    slot[1] += delta.partial_json
                    self._publish(call)
            elif dtype == "text_delta" and call.capture:
                self.text.append(delta.text)
                self._output(call)
            elif dtype == "thinking_delta" and call.capture:
                self.thinking.append(str(getattr(delta, "thinking", "") or ""))
                self._output(call)
        elif kind == "message_delta":
            delta = getattr(event, "delta", None)
            reason = getattr(delta, "stop_reason", None)
            if reason:
                call.finish_reasons = [str(reason)]
            if call.capture:
                self._output(call)
            usage = getattr(event, "usage", None)
            if usage is not None:
                _usage(call, usage)

    def _output(self, call: LLMCall) -> None:
        reason = call.finish_reasons[-1] if call.finish_reasons else None
        messages = gm.assistant_output("".join(self.text), call.requested, reason)
        if self.thinking:
            messages[0]["parts"].insert(0, gm.reasoning("".join(self.thinking)))
        call.output_messages = messages

    def _publish(self, call: LLMCall) -> None:
        call.requested = [(name, args or "{}", call_id) for name, args, call_id in self.blocks.values()]


_REQUEST_ATTR = {"sync": "_MessageStreamManager__api_request", "async": "_AsyncMessageStreamManager__api_request"}


def _adopt(stream: Any, proxy: Any, proxy_type: type) -> None:
    """Give the call of the proxy the manager dropped to the stream it rebuilt."""
    raw = getattr(stream, "_raw_stream", None)
    if proxy is None or raw is None or raw is proxy or not hasattr(proxy, "_self_hand_over"):
        return
    try:
        adopted = proxy._self_hand_over(raw, proxy_type)
        if adopted is None:
            return
        stream._raw_stream = adopted
        # These versions' close() shuts the HTTP response, not the raw stream: end the span too.
        close = stream.close
        if inspect.iscoroutinefunction(close):
            async def aclose() -> None:
                try:
                    await close()
                finally:
                    adopted._self_end(None)

            stream.close = aclose
        else:
            def sclose() -> None:
                try:
                    close()
                finally:
                    adopted._self_end(None)

            stream.close = sclose
    except Exception as err:
        _runtime.internal_error("anthropic.stream_manager", err)


def _enter(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    # Older managers build a fresh Stream from our proxy's response and drop the
    # proxy; capture it (keeping it alive until handed over) at their request hook.
    captured: list[Any] = []
    request = getattr(instance, _REQUEST_ATTR["sync"], None)
    if callable(request):
        def capture() -> Any:
            result = request()
            captured.append(result)
            return result

        setattr(instance, _REQUEST_ATTR["sync"], capture)
    stream = wrapped(*args, **kwargs)
    if captured:
        _adopt(stream, captured[0], StreamProxy)
    return stream


async def _aenter(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    captured: list[Any] = []
    pending = getattr(instance, _REQUEST_ATTR["async"], None)
    if inspect.isawaitable(pending):
        async def capture() -> Any:
            result = await pending
            captured.append(result)
            return result

        setattr(instance, _REQUEST_ATTR["async"], capture())
    stream = await wrapped(*args, **kwargs)
    if captured:
        _adopt(stream, captured[0], AsyncStreamProxy)
    return stream


class AnthropicPatch(StainlessPatch):
    """The choke point, plus stream-manager hand-over on SDKs that rebuild streams (< 0.4x)."""

    def __init__(self) -> None:
        super().__init__("anthropic._base_client", AnthropicProvider())
        self.managers = False

    def install(self) -> None:
        super().install()
        if not self.installed:
            return
        try:
            helpers = importlib.import_module(_HELPERS)
            rebuilds = "raw_stream" not in inspect.signature(helpers.MessageStream.__init__).parameters
        except Exception:
            return
        if rebuilds:
            wrapt.wrap_function_wrapper(_HELPERS, "MessageStreamManager.__enter__", _enter)
            wrapt.wrap_function_wrapper(_HELPERS, "AsyncMessageStreamManager.__aenter__", _aenter)
            self.managers = True

    def uninstall(self) -> None:
        if self.managers:
            helpers = importlib.import_module(_HELPERS)
            unwrap(helpers.MessageStreamManager, "__enter__")
            unwrap(helpers.AsyncMessageStreamManager, "__aenter__")
            self.managers = False
        super().uninstall()


def patch() -> AnthropicPatch:
    return AnthropicPatch()
