"""OpenAI: Chat Completions, Responses, legacy Completions and Embeddings.

Works with the 1.x line and the current major versions, sync and async, plain
and streamed, through the ``.stream()`` helpers and ``with_raw_response``,
because it hooks the SDK's single request choke point (see ``_stainless``).
"""

from __future__ import annotations

from typing import Any

from .. import semconv as sc
from . import _messages as gm
from ._calls import LLMCall
from ._stainless import RequestInfo, StainlessPatch, numeric_params

_PATHS = {
    "/chat/completions": sc.OP_CHAT,
    "/responses": sc.OP_CHAT,
    "/completions": sc.OP_TEXT_COMPLETION,
    "/embeddings": sc.OP_EMBEDDINGS,
}
_RESPONSES = "responses"
_PARAMS = frozenset(
    (
        "temperature", "top_p", "frequency_penalty", "presence_penalty", "seed", "max_completion_tokens",
        "max_tokens", "max_output_tokens", "n", "stop", "stream", "response_format", "text",
    )
)
_NUMERIC = (
    ("temperature", sc.GEN_AI_REQUEST_TEMPERATURE),
    ("top_p", sc.GEN_AI_REQUEST_TOP_P),
    ("frequency_penalty", sc.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", sc.GEN_AI_REQUEST_PRESENCE_PENALTY),
    ("seed", sc.GEN_AI_REQUEST_SEED),
)


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


_FIELDS: dict[tuple[type, str], bool] = {}


def _knows(obj: Any, name: str) -> bool:
    """Whether ``obj`` can have field ``name``: asking a pydantic model for a missing one raises, slowly."""
    if isinstance(obj, dict):
        return name in obj
    key = (type(obj), name)
    known = _FIELDS.get(key)
    if known is None:
        fields = getattr(type(obj), "model_fields", None)
        known = _FIELDS[key] = name in fields if isinstance(fields, dict) else hasattr(obj, name)
    return known


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [gm.text(content)]
    parts = []
    for part in content if isinstance(content, list) else ():
        kind = _get(part, "type")
        if kind in ("text", "input_text", "output_text"):
            parts.append(gm.text(str(_get(part, "text") or "")))
        else:
            parts.append(gm.other(kind))
    return parts


def _reasoning(item: Any) -> dict[str, Any]:
    """A Responses reasoning item as a GenAI ``reasoning`` part (its summary text, when any)."""
    summary = _get(item, "summary") or ()
    texts = [str(_get(s, "text") or "") for s in summary if _get(s, "text")]
    return gm.reasoning("\n".join(texts))


def genai_messages(items: list[Any]) -> list[gm.Message]:
    """Chat Completions messages or Responses input items in the GenAI message shape.

    Responses spread one assistant turn over several items (reasoning, message,
    function calls): consecutive ones become one assistant message.
    """
    out: list[gm.Message] = []
    joinable = False  # the last message is an assistant turn built from Responses items
    for item in items:
        role = _get(item, "role")
        kind = _get(item, "type")
        if kind in ("function_call", "reasoning") or (kind == "message" and role == "assistant"):
            if kind == "function_call":
                parts = [gm.tool_call(_get(item, "call_id"), _get(item, "name"), _get(item, "arguments"))]
            elif kind == "reasoning":
                parts = [_reasoning(item)]
            else:
                parts = _parts(_get(item, "content"))
            if joinable:
                out[-1]["parts"].extend(parts)
            else:
                out.append(gm.message("assistant", parts))
                joinable = True
            continue
        joinable = False
        if kind == "function_call_output":
            out.append(gm.message("tool", [gm.tool_response(_get(item, "call_id"), _get(item, "output"))]))
        elif role == "tool":
            out.append(gm.message("tool", [gm.tool_response(_get(item, "tool_call_id"), _get(item, "content"))]))
        else:
            parts = _parts(_get(item, "content"))
            for tc in _get(item, "tool_calls") or ():
                fn = _get(tc, "function")
                parts.append(gm.tool_call(_get(tc, "id"), _get(fn, "name"), _get(fn, "arguments")))
            out.append(gm.message(role, parts))
    return out


_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}


def responses_finish_reason(response: Any, called_tools: bool) -> str | None:
    """The GenAI finish reason of a Responses object (its ``status`` is not one).

    ``completed`` is ``stop``, or ``tool_call`` when the model asked for functions;
    ``incomplete`` says why (``max_output_tokens`` is ``length``); ``failed`` and
    ``cancelled`` are ``error``. Other states (``in_progress``, ``queued``) end nothing.
    """
    status = _get(response, "status")
    if status == "completed":
        return "tool_call" if called_tools else "stop"
    if status == "incomplete":
        why = _get(_get(response, "incomplete_details"), "reason")
        return _INCOMPLETE.get(str(why), str(why) if why else "length")
    if status in ("failed", "cancelled"):
        return "error"
    return None


def _history_payloads(messages: list[Any]) -> list[Any]:
    """Every text and tool-call argument of a message history (a run's first call learns them all)."""
    out: list[Any] = []
    for msg in messages:
        content = _get(msg, "content")
        if content is None:
            content = _get(msg, "output")
        if isinstance(content, list):
            content = gm.plain_text(content)
        if content:
            out.append(content)
        arguments = _get(msg, "arguments")
        if arguments:
            out.append(arguments)
        for tc in _get(msg, "tool_calls") or ():
            arguments = _get(_get(tc, "function"), "arguments")
            if arguments:
                out.append(arguments)
    return out


def _read_prompt(info: RequestInfo, text: str, capture: bool) -> None:
    """A request whose whole input is one user string (Responses ``input``, legacy ``prompt``)."""
    info.user_text = text
    info.new_input = (text,)
    if capture:
        info.input_messages = [gm.message("user", [gm.text(text)])]


class OpenAIProvider:
    name = sc.PROVIDER_OPENAI

    def route(self, method: str, path: str) -> str | None:
        if method.lower() != "post":
            return None
        path = path.rstrip("/")
        for suffix, op in _PATHS.items():
            if path.endswith(suffix):
                return _RESPONSES if suffix == "/responses" else op
        return None

    # ------------------------------------------------------------------ requests

    def read_request(
        self, operation: str, body: dict[str, Any], deep: bool = True, capture: bool = True
    ) -> RequestInfo:
        model = body.get("model")
        # Most calls set few parameters: one C-level check skips the dozen lookups when none is set.
        attrs = {} if _PARAMS.isdisjoint(body) else self._parameters(body)
        tools = body.get("tools")
        offered: list[str] | None = None
        schemas: dict[str, Any] = {}
        if isinstance(tools, list):
            offered = []
            for tool in tools:
                fn = _get(tool, "function")
                holder = fn if fn is not None else tool
                name = _get(holder, "name")
                if isinstance(name, str):
                    offered.append(name)
                    if deep:  # schemas serve argument checks inside runs only
                        params = _get(holder, "parameters")
                        if isinstance(params, dict):
                            schemas[name] = params

        op = sc.OP_CHAT if operation == _RESPONSES else operation
        info = RequestInfo(operation=op, model=model if isinstance(model, str) else None, attrs=attrs,
                           offered_tools=offered, offered_schemas=schemas or None)
        if not deep:
            return info
        if operation == sc.OP_CHAT:
            messages = body.get("messages")
            if isinstance(messages, list):
                self._read_messages(info, messages, capture)
        elif operation == _RESPONSES:
            instructions = body.get("instructions")
            if isinstance(instructions, str):
                info.system_text = instructions
            items = body.get("input")
            if isinstance(items, str):
                _read_prompt(info, items, capture)
            elif isinstance(items, list):
                self._read_messages(info, items, capture)
        elif operation == sc.OP_TEXT_COMPLETION:
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                _read_prompt(info, prompt, capture)
        return info

    def _parameters(self, body: dict[str, Any]) -> dict[str, Any]:
        """``gen_ai.request.*`` attributes for the sampling and output parameters of a request."""
        attrs = numeric_params(body, _NUMERIC)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_output_tokens")
        if isinstance(max_tokens, int):
            attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
        n = body.get("n")
        if isinstance(n, int) and n != 1:
            attrs[sc.GEN_AI_REQUEST_CHOICE_COUNT] = n
        stop = body.get("stop")
        if isinstance(stop, str):
            attrs[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = (stop,)
        elif isinstance(stop, list):
            attrs[sc.GEN_AI_REQUEST_STOP_SEQUENCES] = tuple(str(s) for s in stop)
        if body.get("stream"):
            attrs[sc.GEN_AI_REQUEST_STREAM] = True
        fmt = body.get("response_format") or _get(body.get("text"), "format")
        fmt_type = _get(fmt, "type")
        if isinstance(fmt_type, str):
            attrs[sc.GEN_AI_OUTPUT_TYPE] = "json" if fmt_type.startswith("json") else "text"
        return attrs

    def _read_messages(self, info: RequestInfo, messages: list[Any], capture: bool) -> None:
        system: list[str] = []
        last_user: str | None = None
        last_assistant = -1
        for i, msg in enumerate(messages):
            role = _get(msg, "role")
            kind = _get(msg, "type")
            if role in ("system", "developer"):
                system.append(gm.plain_text(_get(msg, "content")))
            elif role == "user":
                last_user = gm.plain_text(_get(msg, "content"))
            elif role == "assistant" or kind == "function_call":
                last_assistant = i
        if system:
            info.system_text = "\n".join(system)
        info.user_text = last_user
        fresh: list[Any] = []
        results: list[tuple[str, Any, bool]] | None = None
        for msg in messages[last_assistant + 1 :]:
            role = _get(msg, "role")
            if role in ("system", "developer"):
                continue
            content = _get(msg, "content")
            if content is None:
                content = _get(msg, "output")  # Responses API function_call_output
            if isinstance(content, list):
                content = gm.plain_text(content)
            if content:
                fresh.append(content)
            # a tool result, matched to its request by call id (request loops without tool spans)
            if role == "tool":
                call_id = _get(msg, "tool_call_id")
            elif role is None and _get(msg, "type") == "function_call_output":
                call_id = _get(msg, "call_id")
            else:
                continue
            if isinstance(call_id, str) and call_id:
                if results is None:
                    results = info.tool_results = []
                results.append((call_id, content, False))
        info.new_input = fresh
        info.history = (messages, _history_payloads)
        if capture:  # the GenAI message shape is for captured content only
            info.input_messages = genai_messages(messages)

    # ------------------------------------------------------------------ responses

    def read_response(self, call: LLMCall, operation: str, response: Any) -> None:
        if response is None:
            return
        call.response_id = getattr(response, "id", None)
        model = getattr(response, "model", None)
        if isinstance(model, str):
            call.response_model = model
        if operation == _RESPONSES:
            self._read_responses_object(call, response)
            return
        usage = getattr(response, "usage", None)
        if usage is not None:
            self._usage(call, usage)
        choices = getattr(response, "choices", None) or ()
        outputs = []
        for choice in choices:
            reason = getattr(choice, "finish_reason", None)
            if reason:
                call.finish_reasons.append(str(reason))
            message = getattr(choice, "message", None)
            if message is None:
                if call.capture and operation == sc.OP_TEXT_COMPLETION:  # legacy Completions: choice.text
                    outputs.append(gm.message("assistant", [gm.text(str(getattr(choice, "text", "") or ""))], reason))
                continue
            for tc in getattr(message, "tool_calls", None) or ():
                fn = getattr(tc, "function", None)
                if fn is not None:
                    call.requested.append((fn.name, fn.arguments, getattr(tc, "id", None)))
            if call.capture:
                (out,) = genai_messages([message])
                out["finish_reason"] = str(reason or "")
                outputs.append(out)
        if call.capture and outputs:
            call.output_messages = outputs

    def _usage(self, call: LLMCall, usage: Any, responses: bool = False) -> None:
        # Chat Completions names (prompt_/completion_) or Responses names (input_/output_);
        # asking a pydantic model for a field it lacks is slow, so ask for one family only.
        prompt = None if responses else getattr(usage, "prompt_tokens", None)
        if prompt is not None or (not responses and hasattr(usage, "completion_tokens")):
            completion = getattr(usage, "completion_tokens", None)
            details = getattr(usage, "prompt_tokens_details", None)
            out_details = getattr(usage, "completion_tokens_details", None)
        else:
            prompt = getattr(usage, "input_tokens", None)
            completion = getattr(usage, "output_tokens", None)
            details = getattr(usage, "input_tokens_details", None)
            out_details = getattr(usage, "output_tokens_details", None)
        if isinstance(prompt, int):
            call.input_tokens = prompt
        if isinstance(completion, int):
            call.output_tokens = completion
        # Older clients keep these details as plain dicts in the model's extras.
        cached = _get(details, "cached_tokens")
        if isinstance(cached, int):
            call.cache_read = cached
        if _knows(details, "cache_write_tokens"):  # newer APIs report cache writes too
            written = _get(details, "cache_write_tokens")
            if isinstance(written, int) and written:
                call.cache_write = written
        reasoning = _get(out_details, "reasoning_tokens")
        if isinstance(reasoning, int):
            call.reasoning_tokens = reasoning

    def _read_responses_object(self, call: LLMCall, response: Any) -> None:
        usage = getattr(response, "usage", None)
        if usage is not None:
            self._usage(call, usage, responses=True)
        items = getattr(response, "output", None) or ()
        for item in items:
            if getattr(item, "type", None) == "function_call":
                call.requested.append((item.name, item.arguments, getattr(item, "call_id", None)))
        reason = responses_finish_reason(response, bool(call.requested))
        if reason:
            call.finish_reasons.append(reason)
        if call.capture and items:
            outputs = genai_messages(list(items))
            for out in outputs:
                out["finish_reason"] = reason or "stop"
            call.output_messages = outputs

    # ------------------------------------------------------------------ streams

    def chunk_handler(self, operation: str) -> Any:
        return _ResponsesStream(self) if operation == _RESPONSES else _ChatStream(self)


class _ChatStream:
    """Accumulates a Chat (or legacy Completions) stream: ids, finish reasons, tool calls, final usage.

    Choices (``n`` > 1) are kept apart: each has its own text, tool calls and
    finish reason, and becomes its own output message.
    """

    __slots__ = ("provider", "reasons", "text", "tools")

    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider
        self.tools: dict[tuple[int, int], list[Any]] = {}
        self.text: dict[int, list[str]] = {}
        self.reasons: dict[int, str] = {}

    def __call__(self, call: LLMCall, chunk: Any) -> None:
        if call.response_id is None:
            call.response_id = getattr(chunk, "id", None)
            model = getattr(chunk, "model", None)
            if isinstance(model, str) and model:
                call.response_model = model
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.provider._usage(call, usage)
        for choice in getattr(chunk, "choices", None) or ():
            index = getattr(choice, "index", 0) or 0
            reason = getattr(choice, "finish_reason", None)
            if reason:
                call.finish_reasons.append(str(reason))
                self.reasons[index] = str(reason)
            delta = getattr(choice, "delta", None)
            if delta is None:
                if call.capture:
                    piece = getattr(choice, "text", None)  # legacy Completions
                    if piece:
                        self.text.setdefault(index, []).append(piece)
                continue
            if call.capture:
                piece = getattr(delta, "content", None)
                if piece:
                    self.text.setdefault(index, []).append(piece)
            deltas = getattr(delta, "tool_calls", None)
            if not deltas:
                continue
            for tc in deltas:
                key = (index, getattr(tc, "index", 0) or 0)
                slot = self.tools.setdefault(key, ["", "", None])
                fn = getattr(tc, "function", None)
                if fn is not None:
                    if getattr(fn, "name", None):
                        slot[0] += fn.name
                    if getattr(fn, "arguments", None):
                        slot[1] += fn.arguments
                if getattr(tc, "id", None):
                    slot[2] = tc.id
            call.requested = [(n, a, i) for n, a, i in self.tools.values()]
        if call.capture and (self.text or self.tools):
            self._output(call)

    def _output(self, call: LLMCall) -> None:
        choices = sorted(set(self.text) | {c for c, _ in self.tools})
        outputs = []
        for index in choices:
            calls = [(n, a, i) for (c, _), (n, a, i) in sorted(self.tools.items()) if c == index]
            outputs.extend(gm.assistant_output("".join(self.text.get(index, ())), calls, self.reasons.get(index)))
        call.output_messages = outputs


class _ResponsesStream:
    """A Responses stream carries the whole response on its terminal event."""

    __slots__ = ("provider",)

    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider

    def __call__(self, call: LLMCall, event: Any) -> None:
        kind = getattr(event, "type", "")
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            response = getattr(event, "response", None)
            if response is not None:
                call.finish_reasons.clear()
                call.requested = []
                self.provider.read_response(call, _RESPONSES, response)
        elif kind == "response.created":
            response = getattr(event, "response", None)
            call.response_id = getattr(response, "id", None)
            model = getattr(response, "model", None)
            if isinstance(model, str):
                call.response_model = model


def patch() -> StainlessPatch:
    return StainlessPatch("openai._base_client", OpenAIProvider())
