"""The normalised span record the detector engine reads, and what it returns.

Nothing here knows OpenTelemetry types: adapters at the edges (the
instrumentation's live guard, the SDK processor and exporter, the collector)
convert their spans into :class:`SpanRecord` and turn :class:`Finding` back
into attributes and events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from ..budget import Budget
from ..semconv import FailureMode, Flag, Severity


class Kind(str, Enum):
    """What a span is, as far as the detectors care."""

    RUN = "run"  # invoke_agent / OpenInference AGENT / OpenLLMetry agent|workflow
    PHASE = "phase"
    LLM = "llm"  # chat, text_completion, generate_content, embeddings
    TOOL = "tool"  # execute_tool / OpenInference TOOL / OpenLLMetry tool
    OTHER = "other"


Entity = tuple[str, str]
"""An extracted entity id: ``(type, id)``, e.g. ``("customer", "cust_789")``."""


@dataclass
class SpanRecord:
    """One span, normalised. Fields that a span does not carry stay at their defaults.

    ``run_key`` is resolved by the adapter: the span id of the nearest run
    ancestor (ours or foreign), else the local root's span id. For a run span
    it is its own span id and ``parent_run_key`` names the enclosing run.
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    kind: Kind
    name: str = ""
    start_ns: int = 0
    end_ns: int = 0
    run_key: str | None = None
    parent_run_key: str | None = None
    agent_name: str | None = None
    is_error: bool = False
    error_type: str | None = None
    flags_present: tuple[str, ...] = ()  # flags already on the span (merged as a set)

    # LLM calls
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    requested_calls: tuple[tuple[str, str], ...] = ()  # (tool name, args hash) the model asked for
    requested_ids: tuple[str, ...] = ()  # their tool call ids, aligned ("" = none given)
    # tool results in this call's new input: (call id, masked result fingerprint or None when the
    # result failed, sketch); None = not visible (see repeats)
    tool_results: tuple[tuple[str, str | None, str | None], ...] | None = None
    requested_entities: tuple[Entity, ...] | None = None  # entity ids in those requested arguments
    offered_tools: tuple[str, ...] | None = None  # tool names offered to the model; None = unknown
    input_entities: tuple[Entity, ...] | None = None  # entity ids in the call's input messages
    system_hash: str | None = None  # fingerprint of the system instructions
    input_raw: Any = None  # in process only: the input texts, learnt lazily as known ids (never exported)
    user_hash: str | None = None  # fingerprint of the latest user turn

    # tool calls
    tool_name: str | None = None
    tool_call_id: str | None = None
    args_hash: str | None = None
    args_key: str | None = None  # args hash with volatile values masked (noise.args_key); None = compute
    arguments: Any = None  # parsed arguments when available (inline, or captured content)
    result: Any = None  # result when available
    result_hash: str | None = None
    result_key: str | None = None  # result hash with volatile parts masked (noise.result_key); None = compute
    result_sketch: str | None = None  # similarity sketch of a long result (noise.sketch)
    side_effect: bool = False
    idempotency_key: bool = False  # the arguments carry an idempotency key
    error_class: str | None = None  # contract's agentwatch.tool.error_class
    output_invalid: bool = False  # the result failed the tool's output schema (the gateway checked it)
    tool_schema: dict[str, Any] | None = None  # JSON Schema of the arguments
    arg_entities: tuple[Entity, ...] | None = None  # None = not extracted yet (engine extracts)
    result_entities: tuple[Entity, ...] | None = None

    # run spans
    entities: Mapping[str, str] | None = None  # declared subject {type: id}
    budget: Budget | None = None
    stop_reason: str | None = None


_new = object.__new__


def new_record(
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    kind: Kind,
    name: str,
    start_ns: int,
    end_ns: int,
    run_key: str | None,
    parent_run_key: str | None,
    agent_name: str | None,
    is_error: bool,
    error_type: str | None,
) -> SpanRecord:
    """``SpanRecord(...)`` with these twelve fields, the others left at their class-level defaults.

    Equal to the dataclass constructor with the same arguments at a fraction of
    the cost: adapters build one record per span, and most of the other fields keep
    their defaults on any one span.
    """
    record: SpanRecord = _new(SpanRecord)
    record.trace_id = trace_id
    record.span_id = span_id
    record.parent_id = parent_id
    record.kind = kind
    record.name = name
    record.start_ns = start_ns
    record.end_ns = end_ns
    record.run_key = run_key
    record.parent_run_key = parent_run_key
    record.agent_name = agent_name
    record.is_error = is_error
    record.error_type = error_type
    return record


@dataclass(slots=True, frozen=True)
class Finding:
    """One anomaly on one span: becomes a flag, a severity and an ``agentwatch.anomaly`` event."""

    flag: Flag
    severity: Severity
    reason: str
    span_id: str
    related_span_id: str | None = None


@dataclass(slots=True, frozen=True)
class RunSummary:
    """What the run span carries when it ends (contract §2 and §3)."""

    run_key: str
    flags: tuple[str, ...]  # every flag seen in the run, deduplicated, in first-seen order
    anomaly_count: int
    fault_origin_span_id: str | None  # earliest of the run's flagged spans and their evidence spans
    failure_mode: FailureMode
    steps: int
    llm_calls: int
    tool_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    findings: tuple[Finding, ...] = ()  # findings on the run span itself (e.g. enforced budgets)
