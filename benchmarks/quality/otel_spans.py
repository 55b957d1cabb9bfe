"""Benchmark runs as real OpenTelemetry spans, for measuring every adapter on the same input.

The quality benchmarks (``tau_bench.py``, ``scenarios.py``) feed the engine
normalised records directly. To compare the adapters (``AnomalyProcessor``,
``AnomalyExporter``, the collector, ``agentwatch analyze``) the same runs must
exist as spans, with the attributes an instrumentation writes. Three sources:

* :func:`scenario_specs`: a scenario's records as agentwatch's own
  instrumentation writes them (fingerprints, entity lists, ``agentwatch.step``);
* :func:`tau_bench_specs`: a τ-bench airline trajectory as a *foreign* GenAI
  instrumentation with content capture on writes it (``gen_ai.input.messages``,
  ``gen_ai.output.messages``, ``gen_ai.tool.call.arguments``/``result``; no
  agentwatch fingerprints), so entity ids must be read out of the content;
* :func:`who_and_when_specs`: a Who&When CaptainAgent group chat: one
  ``invoke_agent`` root, a ``chat`` span per expert message (its system prompt
  and the chat so far as input) and an ``execute_tool python`` span per
  terminal execution (the previous message's code as arguments, the terminal's
  reply as result, a non-zero exit code as an error).

:func:`emit` replays specs through a ``TracerProvider`` with the span ids the
specs name, starting and ending spans in time order, so every adapter sees the
same ids, times and attributes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode

from agentwatch import semconv as sc
from agentwatch.engine import Kind, SpanRecord, repeats

SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND  # span times are wall-clock nanoseconds


@dataclass
class SpanSpec:
    """One span to emit: ids are ints (as the SDK holds them), times nanoseconds."""

    trace_id: int
    span_id: int
    parent_id: int | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # status description of an ERROR status


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _entities(pairs: Iterable[tuple[str, str]] | None) -> tuple[str, ...]:
    return tuple(f"{kind}:{ident}" for kind, ident in pairs or ())


# ----------------------------------------------------------------------------- scenarios


def scenario_specs(records: Sequence[SpanRecord], trace_id: int) -> list[SpanSpec]:
    """Records as agentwatch's own instrumentation writes them (contract §2 attributes)."""
    ids: dict[str, int] = {}
    for n, record in enumerate(records, start=1):
        ids[record.span_id] = (trace_id & 0xFFFFFFFF) << 16 | n
    specs = []
    for step, record in enumerate(records):
        attrs: dict[str, Any] = {}
        if record.kind is Kind.RUN:
            attrs[sc.GEN_AI_OPERATION_NAME] = sc.OP_INVOKE_AGENT
            if record.agent_name:
                attrs[sc.GEN_AI_AGENT_NAME] = record.agent_name
            for kind, ident in (record.entities or {}).items():
                attrs[sc.RUN_ENTITY_PREFIX + kind] = ident
            if record.budget is not None:
                attrs.update(record.budget.to_attributes())
            if record.stop_reason:
                attrs[sc.RUN_STOP_REASON] = record.stop_reason
        elif record.kind is Kind.LLM:
            attrs[sc.GEN_AI_OPERATION_NAME] = sc.OP_CHAT
            attrs[sc.STEP] = step
            if record.model:
                attrs[sc.GEN_AI_REQUEST_MODEL] = attrs[sc.GEN_AI_RESPONSE_MODEL] = record.model
            if record.input_tokens is not None:
                attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = record.input_tokens
            if record.output_tokens is not None:
                attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = record.output_tokens
            if record.cost_usd is not None:
                attrs[sc.COST_USD] = record.cost_usd
            attrs[sc.LLM_TOOL_CALLS] = tuple(f"{tool}:{h}" for tool, h in record.requested_calls or ())
            if record.requested_ids:
                attrs[sc.LLM_TOOL_CALL_IDS] = tuple(record.requested_ids)
            if record.tool_results:
                attrs[sc.LLM_TOOL_RESULTS] = repeats.encode(record.tool_results)
            if record.offered_tools is not None:
                attrs[sc.LLM_TOOLS_OFFERED] = tuple(record.offered_tools)
            if record.input_entities:
                attrs[sc.LLM_INPUT_ENTITIES] = _entities(record.input_entities)
            if record.requested_entities:
                attrs[sc.LLM_REQUESTED_ENTITIES] = _entities(record.requested_entities)
            for key, value in ((sc.LLM_SYSTEM_HASH, record.system_hash), (sc.LLM_USER_HASH, record.user_hash)):
                if value:
                    attrs[key] = value
        elif record.kind is Kind.TOOL:
            attrs[sc.GEN_AI_OPERATION_NAME] = sc.OP_EXECUTE_TOOL
            attrs[sc.STEP] = step
            attrs[sc.GEN_AI_TOOL_NAME] = record.tool_name or ""
            if record.tool_call_id:
                attrs[sc.GEN_AI_TOOL_CALL_ID] = record.tool_call_id
            if record.args_hash:
                attrs[sc.TOOL_ARGS_HASH] = record.args_hash
            if record.arguments is not None:
                attrs[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = _json(record.arguments)
            if record.result is not None:
                attrs[sc.GEN_AI_TOOL_CALL_RESULT] = (
                    record.result if isinstance(record.result, str) else _json(record.result)
                )
            if record.result_hash:
                attrs[sc.TOOL_RESULT_HASH] = record.result_hash
            if record.side_effect:
                attrs[sc.TOOL_SIDE_EFFECT] = True
            if record.tool_schema is not None:
                attrs[sc.TOOL_SCHEMA] = _json(record.tool_schema)
            if record.error_class:
                attrs[sc.TOOL_ERROR_CLASS] = record.error_class
        if record.error_type:
            attrs[sc.ERROR_TYPE] = record.error_type
        specs.append(
            SpanSpec(
                trace_id,
                ids[record.span_id],
                ids.get(record.parent_id) if record.parent_id else None,
                record.name,
                record.start_ns,
                max(record.end_ns, record.start_ns),
                attrs,
                record.error_type or ("error" if record.is_error else None),
            )
        )
    return specs


# ----------------------------------------------------------------------------- τ-bench


def _text(content: Any) -> list[dict[str, Any]]:
    return [{"type": "text", "content": content}] if content else []


def _genai_message(message: dict[str, Any]) -> dict[str, Any]:
    """A chat-completions message in the GenAI conventions' message shape."""
    role = message.get("role")
    if role == "tool":
        return {
            "role": "tool",
            "parts": [
                {"type": "tool_call_response", "id": message.get("tool_call_id"), "response": message.get("content")}
            ],
        }
    parts = _text(message.get("content"))
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        try:
            arguments: Any = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            arguments = fn.get("arguments")
        parts.append({"type": "tool_call", "id": call.get("id"), "name": fn.get("name"), "arguments": arguments})
    return {"role": role, "parts": parts}


def tau_bench_specs(raw: dict[str, Any], index: int, tools: Sequence[str], writes: Iterable[str]) -> list[SpanSpec]:
    """One τ-bench trajectory as a foreign GenAI instrumentation with content capture writes it."""
    trace_id = 0x7A0 << 64 | index + 1
    write_tools = frozenset(writes)
    counter = iter(range(1, 1 << 20))
    run_id = index + 1 << 24 | next(counter)
    user_id = str(raw["info"]["task"]["user_id"])
    definitions = _json([{"type": "function", "name": name} for name in tools])
    specs: list[SpanSpec] = []
    history: list[dict[str, Any]] = []
    pending: dict[str, SpanSpec] = {}
    clock = T0
    for message in raw["traj"]:
        clock += SECOND
        role = message.get("role")
        if role == "assistant":
            system = [m for m in history if m["role"] == "system"]
            attrs: dict[str, Any] = {
                sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
                sc.GEN_AI_PROVIDER_NAME: "openai",
                sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
                sc.GEN_AI_RESPONSE_MODEL: "gpt-4o",
                sc.GEN_AI_TOOL_DEFINITIONS: definitions,
                sc.GEN_AI_INPUT_MESSAGES: _json([m for m in history if m["role"] != "system"]),
                sc.GEN_AI_OUTPUT_MESSAGES: _json([{**_genai_message(message), "finish_reason": "stop"}]),
            }
            if system:
                attrs[sc.GEN_AI_SYSTEM_INSTRUCTIONS] = _json([p for m in system for p in m["parts"]])
            specs.append(
                SpanSpec(trace_id, index + 1 << 24 | next(counter), run_id, "chat gpt-4o", clock,
                         clock + SECOND // 2, attrs)
            )  # fmt: skip
            calls = message.get("tool_calls") or []
            slot = SECOND // 2 // max(1, len(calls))
            for i, call in enumerate(calls):
                fn = call.get("function") or {}
                name = str(fn.get("name"))
                start = clock + SECOND // 2 + i * slot
                tool_attrs: dict[str, Any] = {
                    sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                    sc.GEN_AI_TOOL_NAME: name,
                    sc.GEN_AI_TOOL_CALL_ID: str(call.get("id")),
                    sc.GEN_AI_TOOL_CALL_ARGUMENTS: fn.get("arguments") or "{}",
                }
                if name in write_tools:
                    tool_attrs[sc.TOOL_SIDE_EFFECT] = True
                spec = SpanSpec(
                    trace_id, index + 1 << 24 | next(counter), run_id, f"execute_tool {name}", start,
                    start + slot - 1, tool_attrs,
                )  # fmt: skip
                specs.append(spec)
                pending[str(call.get("id"))] = spec
        elif role == "tool":
            answered = pending.pop(str(message.get("tool_call_id")), None)
            if answered is not None:
                text = str(message.get("content") or "")
                answered.attributes[sc.GEN_AI_TOOL_CALL_RESULT] = text
                if text.startswith("Error:"):
                    answered.attributes[sc.ERROR_TYPE] = "ToolError"
                    answered.error = text[:200]
        history.append(_genai_message(message))
    run = SpanSpec(
        trace_id, run_id, None, "invoke_agent airline", T0, clock + SECOND,
        {
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
            sc.GEN_AI_AGENT_NAME: "airline",
            sc.RUN_ENTITY_PREFIX + "user": user_id,
        },
    )  # fmt: skip
    return [run, *specs]


# ----------------------------------------------------------------------------- Who&When

_CODE_BLOCK = re.compile(r"```(?:\w+)?\n(.*?)```", re.S)
_EXIT_CODE = re.compile(r"exitcode:\s*(-?\d+)")
TERMINAL = "Computer_terminal"


def who_and_when_specs(log: dict[str, Any], index: int) -> list[SpanSpec]:
    """One CaptainAgent group chat (see the module docstring)."""
    trace_id = 0x3A0 << 64 | index + 1
    counter = iter(range(1, 1 << 20))
    run_id = index + 1 << 24 | next(counter)
    prompts = log.get("system_prompt") or {}
    specs: list[SpanSpec] = []
    history: list[dict[str, Any]] = []
    previous = ""
    clock = T0
    for message in log.get("history") or []:
        clock += SECOND
        name = str(message.get("name") or "")
        content = str(message.get("content") or "")
        if name == TERMINAL:
            code = _CODE_BLOCK.findall(previous)
            match = _EXIT_CODE.search(content)
            if code or match:
                attrs: dict[str, Any] = {
                    sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                    sc.GEN_AI_TOOL_NAME: "python",
                    sc.GEN_AI_TOOL_CALL_ARGUMENTS: _json({"code": "\n".join(code)}),
                    sc.GEN_AI_TOOL_CALL_RESULT: content,
                }
                failed = match is not None and match.group(1) != "0"
                if failed:
                    attrs[sc.ERROR_TYPE] = "ExecutionError"
                specs.append(
                    SpanSpec(trace_id, index + 1 << 24 | next(counter), run_id, "execute_tool python", clock,
                             clock + SECOND // 2, attrs, content[:200] if failed else None)
                )  # fmt: skip
        else:
            attrs = {
                sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
                sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
                sc.GEN_AI_AGENT_NAME: name,
                sc.GEN_AI_INPUT_MESSAGES: _json(history),
                sc.GEN_AI_OUTPUT_MESSAGES: _json([{"role": "assistant", "parts": _text(content)}]),
            }
            prompt = prompts.get(name)
            if isinstance(prompt, str) and prompt:
                attrs[sc.GEN_AI_SYSTEM_INSTRUCTIONS] = _json(_text(prompt))
            specs.append(
                SpanSpec(trace_id, index + 1 << 24 | next(counter), run_id, "chat gpt-4o", clock,
                         clock + SECOND // 2, attrs)
            )  # fmt: skip
        history.append({"role": "user" if name == TERMINAL else "assistant", "parts": _text(content)})
        previous = content
    question = str(log.get("question") or "")
    run = SpanSpec(
        trace_id, run_id, None, "invoke_agent captain", T0, clock + SECOND,
        {
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
            sc.GEN_AI_AGENT_NAME: "captain",
            sc.GEN_AI_INPUT_MESSAGES: _json([{"role": "user", "parts": _text(question)}]),
        },
    )  # fmt: skip
    return [run, *specs]


# ----------------------------------------------------------------------------- emitting


class FixedIds(IdGenerator):
    """Hands out the ids the next span must have (set just before it starts)."""

    def __init__(self) -> None:
        self.trace_id = 0
        self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


def emit(specs: Sequence[SpanSpec], provider: TracerProvider, ids: FixedIds) -> None:
    """Start and end every span at its times, in time order (ends before starts at one instant)."""
    tracer = provider.get_tracer("agentwatch.benchmarks")
    by_id = {spec.span_id: spec for spec in specs}

    def depth(spec: SpanSpec) -> int:
        n = 0
        while spec.parent_id is not None and spec.parent_id in by_id and n < 64:
            spec = by_id[spec.parent_id]
            n += 1
        return n

    events = []
    for spec in specs:
        d = depth(spec)
        events.append((spec.start_ns, 1, d, spec.span_id, spec))
        events.append((max(spec.end_ns, spec.start_ns), 0, -d, spec.span_id, spec))
    live: dict[int, Any] = {}
    for _, is_start, _, span_id, spec in sorted(events, key=lambda e: e[:4]):
        if is_start:
            parent = live.get(spec.parent_id) if spec.parent_id is not None else None
            context = trace.set_span_in_context(parent) if parent is not None else None
            ids.trace_id, ids.span_id = spec.trace_id, span_id
            live[span_id] = tracer.start_span(
                spec.name, context=context, start_time=spec.start_ns, attributes=spec.attributes
            )
        else:
            span = live.pop(span_id)
            if spec.error is not None:
                span.set_status(Status(StatusCode.ERROR, spec.error))
            span.end(end_time=max(spec.end_ns, spec.start_ns))
