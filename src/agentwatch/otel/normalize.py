"""Read span attributes written by any GenAI instrumentation into a :class:`SpanRecord`.

The detectors see one shape whatever wrote the span: agentwatch itself, the
official GenAI conventions (current names and the pre-1.37 ones), OpenInference
(Arize) or OpenLLMetry (Traceloop). This module is on the hot path of the SDK
processor and of the collector, so it does targeted lookups of the names each
convention uses rather than looping over every attribute, reads agentwatch's
own precomputed fingerprints first, and parses captured JSON content only when
a fingerprint the detectors need is missing (foreign spans) and the content is
small enough (:data:`MAX_PARSE_CHARS`). It never raises on mistyped, missing or
huge attributes: a value of the wrong type is treated as absent.

Run keys are not resolved here: the caller knows the span tree and sets
``run_key`` / ``parent_run_key`` on the returned record.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .. import semconv as sc
from ..budget import Budget
from ..config import Config
from ..engine import repeats
from ..engine.entities import EntityExtractor
from ..engine.record import Entity, Kind, SpanRecord, new_record
from ..hashing import canonical_json, digest

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from ..engine.engine import Engine

__all__ = [
    "MAX_PARSE_CHARS",
    "OPERATION_KIND",
    "build_record",
    "detect_kind",
    "kind_from_name",
    "record_from_attributes",
    "record_from_span",
    "records_extractor",
    "run_agent_name",
    "run_entities",
    "run_input",
    "span_attributes",
]

MAX_PARSE_CHARS = 65_536
"""Captured content longer than this is fingerprinted as raw text, never parsed."""

_MAX_INDEX = 64  # indexed attributes (llm.tools.{i}, gen_ai.prompt.{i}) read at most this far

# Names read on every span, bound at module level: a global lookup is cheaper than ``sc.NAME``.
_OPERATION = sc.GEN_AI_OPERATION_NAME
_PHASE = sc.PHASE
_OI_KIND = sc.OPENINFERENCE_SPAN_KIND
_TL_KIND = sc.TRACELOOP_SPAN_KIND
_REQUEST_TYPE = sc.LLM_REQUEST_TYPE
_ERROR_TYPE = sc.ERROR_TYPE
_FLAGS = sc.ANOMALY_FLAGS
_AGENT = sc.GEN_AI_AGENT_NAME
_TOOL_NAME = sc.GEN_AI_TOOL_NAME
_TOOL_CALL_ID = sc.GEN_AI_TOOL_CALL_ID
_SIDE_EFFECT = sc.TOOL_SIDE_EFFECT
_IDEMPOTENCY = sc.TOOL_IDEMPOTENCY_KEY
_ERROR_CLASS = sc.TOOL_ERROR_CLASS
_SCHEMA = sc.TOOL_SCHEMA
_ARG_ENTITIES = sc.TOOL_ARG_ENTITIES
_RESULT_ENTITIES = sc.TOOL_RESULT_ENTITIES
_ARGS_HASH = sc.TOOL_ARGS_HASH
_RESULT_HASH = sc.TOOL_RESULT_HASH
_RESPONSE_MODEL = sc.GEN_AI_RESPONSE_MODEL
_REQUEST_MODEL = sc.GEN_AI_REQUEST_MODEL
_INPUT_TOKENS = sc.GEN_AI_USAGE_INPUT_TOKENS
_OUTPUT_TOKENS = sc.GEN_AI_USAGE_OUTPUT_TOKENS
_COST = sc.COST_USD
_TOOL_CALLS = sc.LLM_TOOL_CALLS
_TOOLS_OFFERED = sc.LLM_TOOLS_OFFERED
_REQUESTED_ENTITIES = sc.LLM_REQUESTED_ENTITIES
_TOOL_CALL_IDS = sc.LLM_TOOL_CALL_IDS
_TOOL_RESULTS = sc.LLM_TOOL_RESULTS
_INPUT_ENTITIES = sc.LLM_INPUT_ENTITIES
_SYSTEM_HASH = sc.LLM_SYSTEM_HASH
_USER_HASH = sc.LLM_USER_HASH
_STEP = sc.STEP
_RUN_ID = sc.RUN_ID

# --------------------------------------------------------------------------- kind detection

OPERATION_KIND: dict[str, Kind] = {
    sc.OP_INVOKE_AGENT: Kind.RUN,
    sc.OP_INVOKE_WORKFLOW: Kind.RUN,
    sc.OP_EXECUTE_TOOL: Kind.TOOL,
    sc.OP_CHAT: Kind.LLM,
    sc.OP_TEXT_COMPLETION: Kind.LLM,
    sc.OP_GENERATE_CONTENT: Kind.LLM,
    sc.OP_EMBEDDINGS: Kind.LLM,
    sc.OP_CREATE_AGENT: Kind.OTHER,
    "retrieval": Kind.OTHER,
}
_OPENINFERENCE_KIND: dict[str, Kind] = {
    "AGENT": Kind.RUN,
    "TOOL": Kind.TOOL,
    "LLM": Kind.LLM,
    "EMBEDDING": Kind.LLM,
    "CHAIN": Kind.OTHER,
    "RETRIEVER": Kind.OTHER,
    "RERANKER": Kind.OTHER,
    "GUARDRAIL": Kind.OTHER,
    "EVALUATOR": Kind.OTHER,
    "UNKNOWN": Kind.OTHER,
}
_TRACELOOP_KIND: dict[str, Kind] = {
    "workflow": Kind.RUN,
    "agent": Kind.RUN,
    "tool": Kind.TOOL,
    "task": Kind.OTHER,
}
_LLM_REQUEST_TYPES = frozenset({"chat", "completion", "embedding", "rerank"})
# GenAI span names are "{operation} {target}": the operation is a last resort for the kind
# (the collector uses the same table), for spans that lost or never had their attributes.
NAME_KIND: dict[str, Kind] = {
    sc.OP_INVOKE_AGENT: Kind.RUN,
    sc.OP_INVOKE_WORKFLOW: Kind.RUN,
    sc.OP_EXECUTE_TOOL: Kind.TOOL,
    sc.OP_CHAT: Kind.LLM,
    sc.OP_TEXT_COMPLETION: Kind.LLM,
    sc.OP_GENERATE_CONTENT: Kind.LLM,
    sc.OP_EMBEDDINGS: Kind.LLM,
}
_HINT_KIND: dict[str, Kind] = {k.value: k for k in Kind}


def detect_kind(attrs: Mapping[str, Any]) -> Kind | None:
    """The span's kind by the first convention that names one; ``None`` when none does."""
    get = attrs.get
    op = get(_OPERATION)
    if op.__class__ is str:
        kind = OPERATION_KIND.get(op)
        if kind is not None:
            return kind
    if get(_PHASE) is not None:
        return Kind.PHASE
    oi = get(_OI_KIND)
    if oi.__class__ is str:
        return _OPENINFERENCE_KIND.get(oi.upper(), Kind.OTHER)
    tl = get(_TL_KIND)
    if tl.__class__ is str:
        return _TRACELOOP_KIND.get(tl.lower(), Kind.OTHER)
    request_type = get(_REQUEST_TYPE)
    if request_type.__class__ is str and request_type in _LLM_REQUEST_TYPES:
        return Kind.LLM
    return _kind_from_leftovers(attrs)


# A span with more attributes than the SDK's limit (128 by default) loses its oldest ones
# first, and the kind attribute is usually among the first written: OpenInference LLM spans
# with long conversations lose ``openinference.span.kind``. Attributes written later (the
# model, token counts, output messages) still say what the span was.
_TOOL_LEFTOVERS = frozenset({"tool.name", "tool.parameters", sc.GEN_AI_TOOL_NAME, sc.GEN_AI_TOOL_CALL_ID})
_LLM_LEFTOVERS = frozenset(
    {
        # OpenInference
        "llm.model_name",
        "llm.provider",
        "llm.system",
        "llm.invocation_parameters",
        "llm.token_count.prompt",
        "llm.token_count.completion",
        "llm.token_count.total",
        "llm.input_messages.0.message.role",
        "llm.output_messages.0.message.role",
        "embedding.model_name",
        # GenAI conventions (current and pre-1.37 names) and OpenLLMetry
        sc.GEN_AI_REQUEST_MODEL,
        sc.GEN_AI_RESPONSE_MODEL,
        sc.GEN_AI_USAGE_INPUT_TOKENS,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS,
        "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens",
        "gen_ai.prompt.0.role",
        "gen_ai.completion.0.role",
        "llm.usage.total_tokens",
    }
)


def _kind_from_leftovers(attrs: Mapping[str, Any]) -> Kind | None:
    """LLM or tool for a span whose kind attribute was dropped; ``None`` for any other span.

    One set intersection test per family (C speed), so spans that are not
    GenAI at all (HTTP, database) pay almost nothing. Tool names win: an LLM
    span never carries ``tool.name`` / ``gen_ai.tool.name``.
    """
    keys = attrs.keys()
    if not keys:
        return None
    if not keys.isdisjoint(_TOOL_LEFTOVERS):
        return Kind.TOOL
    if not keys.isdisjoint(_LLM_LEFTOVERS):
        return Kind.LLM
    return None


# --------------------------------------------------------------------------- typed reads


def _str(value: Any) -> str | None:
    return value if value.__class__ is str and value else None


def _int(value: Any) -> int | None:
    cls = value.__class__
    if cls is int:
        return value if value >= 0 else None
    if cls is float:
        return int(value) if math.isfinite(value) and value >= 0 else None
    if cls is str and 0 < len(value) < 20:
        try:
            number = int(value)
        except ValueError:
            return None
        return number if number >= 0 else None
    return None


def _float(value: Any) -> float | None:
    cls = value.__class__
    if cls is float:
        return value if math.isfinite(value) and value >= 0 else None
    if cls is int:
        return float(value) if value >= 0 else None
    return None


def _bool(value: Any) -> bool:
    if value.__class__ is bool:
        return bool(value)
    if value.__class__ is str:
        return value.lower() == "true"
    return False


def _strings(value: Any) -> tuple[str, ...] | None:
    """A string array attribute (tuple from the SDK, list from OTLP); ``None`` when absent."""
    if value.__class__ is tuple:
        for item in value:
            if item.__class__ is not str or not item:
                break
        else:
            return value  # the SDK's own immutable tuple, already clean
    if value is None:
        return None
    if value.__class__ is str:
        return (value,) if value else ()
    if isinstance(value, (tuple, list)):
        return tuple(v for v in value if v.__class__ is str and v)
    return None


_ENTITY_CACHE: dict[Any, tuple[Entity, ...] | None] = {}
_ENTITY_CACHE_MAX = 4096
_MISS: Any = object()  # a cache miss (a cached parse may be None)


def _entities(value: Any) -> tuple[Entity, ...] | None:
    """``"type:id"`` strings into ``(type, id)`` pairs; malformed items are skipped.

    Same reading as :func:`agentwatch.engine.entities.parse_entities`. A run's
    spans repeat the same few entity lists (arguments, inputs), so parsed lists
    are cached; lists that are new on every span (tool results) are parsed with
    :func:`_parse_entities` and never enter the cache.
    """
    if value.__class__ is tuple:
        try:
            hit = _ENTITY_CACHE.get(value, _MISS)
        except TypeError:  # unhashable items
            return _parse_entities(value)
        if hit is not _MISS:
            return hit
        parsed = _parse_entities(value)
        if len(_ENTITY_CACHE) >= _ENTITY_CACHE_MAX:
            _ENTITY_CACHE.clear()
        _ENTITY_CACHE[value] = parsed
        return parsed
    return _parse_entities(value)


def _parse_entities(value: Any) -> tuple[Entity, ...] | None:
    if value.__class__ is str:
        value = (value,)
    elif not isinstance(value, (tuple, list)):
        return None
    out: list[Entity] = []
    for item in value:
        if item.__class__ is str:
            kind, sep, ident = item.partition(":")
            if not sep:
                kind, ident = "id", item
            ident = ident.strip()
            if ident:
                out.append((kind.strip() or "id", ident))
    return tuple(out)


def _first(attrs: Mapping[str, Any], *names: str) -> Any:
    get = attrs.get
    for name in names:
        value = get(name)
        if value is not None:
            return value
    return None


_NOT_JSON = object()


def _parse_json(value: Any) -> Any:
    """Parsed JSON for small JSON text; ``_NOT_JSON`` for other text; structured values as is."""
    if value.__class__ is not str:
        return value
    if len(value) > MAX_PARSE_CHARS:
        return _NOT_JSON
    head = value[:1]
    if head not in ("{", "[", '"') and not (head.isspace() and value.lstrip()[:1] in ("{", "[")):
        return _NOT_JSON
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return _NOT_JSON


def _fingerprint(value: Any) -> str:
    """``args_hash``-compatible fingerprint of parsed content, or of raw text too big to parse."""
    if value.__class__ is str and len(value) > MAX_PARSE_CHARS:
        return digest(value)
    return digest(canonical_json(value))


# Parsed JSON Schemas and tool definitions, keyed by their text: instrumentations
# write the same text on every call of a tool, so each is parsed once.
_SCHEMA_CACHE: dict[str, Any] = {}
_SCHEMA_CACHE_MAX = 512


def _cached_json(text: Any) -> Any:
    if text.__class__ is not str:
        return text if isinstance(text, (dict, list)) else None
    hit = _SCHEMA_CACHE.get(text, _NOT_JSON)
    if hit is not _NOT_JSON:
        return hit
    parsed = _parse_json(text)
    value = None if parsed is _NOT_JSON else parsed
    if len(_SCHEMA_CACHE) >= _SCHEMA_CACHE_MAX:
        _SCHEMA_CACHE.clear()
    _SCHEMA_CACHE[text] = value
    return value


# --------------------------------------------------------------------------- the record


def kind_from_name(name: object) -> Kind | None:
    """The kind a GenAI span name (``"execute_tool get_order"``) implies, if any."""
    if not isinstance(name, str):
        return None
    return NAME_KIND.get(name.partition(" ")[0])


def records_extractor(engine: Engine, fallback: Config | None = None) -> EntityExtractor:
    """The entity extractor every adapter passes to :func:`build_record` for ``engine``.

    One record path: the SDK processor and exporter, the collector and
    ``agentwatch analyze`` all read entity ids out of captured message content
    with the extractor of the engine's own configuration (``agent.entities``),
    so the same spans give the same records, and the same flags, everywhere.
    An engine-like object without a configuration gets ``fallback``'s patterns.
    """
    config = getattr(engine, "config", None)
    if not isinstance(config, Config):
        config = fallback if fallback is not None else Config()
    return EntityExtractor(config.entities)


def record_from_attributes(
    attrs: Mapping[str, Any],
    *,
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str,
    start_ns: int,
    end_ns: int,
    is_error: bool,
    span_kind_hint: str | None = None,
    extractor: EntityExtractor | None = None,
) -> SpanRecord:
    """Normalise one span's attributes. Never raises.

    ``span_kind_hint`` is a :class:`Kind` value (``"run"``, ``"tool"``, ...) the
    caller already knows; it is used only when no convention's attribute names
    the kind. Other values (such as an OTLP ``SPAN_KIND_*`` name) are ignored.
    Without a hint the GenAI span name's operation decides (``"chat gpt-4o"`` is
    an LLM span), as in every adapter.

    ``extractor`` (built from the configuration's ``agent.entities``) lets
    foreign LLM spans that captured content say which entity ids the model read
    and requested, as agentwatch's own spans record in
    ``agentwatch.llm.input_entities`` / ``requested_entities``; without it the
    grounding detectors know less about foreign runs (never more).
    """
    try:
        kind = detect_kind(attrs)
        if kind is None:
            if span_kind_hint is None:
                kind = kind_from_name(name) or Kind.OTHER
            else:
                kind = _HINT_KIND.get(span_kind_hint, Kind.OTHER)
        return build_record(
            attrs,
            kind,
            trace_id=trace_id,
            span_id=span_id,
            parent_id=parent_id,
            name=name,
            start_ns=start_ns,
            end_ns=end_ns,
            is_error=is_error,
            extractor=extractor,
        )
    except Exception:
        # A mapping that fails on lookup: keep the span in the tree, detect nothing on it.
        return SpanRecord(
            trace_id=trace_id,
            span_id=span_id,
            parent_id=parent_id,
            kind=Kind.OTHER,
            name=name if isinstance(name, str) else "",
            start_ns=start_ns if isinstance(start_ns, int) else 0,
            end_ns=end_ns if isinstance(end_ns, int) else 0,
            is_error=bool(is_error),
        )


def span_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """A span's attributes as the plain dict the SDK keeps, when it keeps one.

    ``ReadableSpan.attributes`` wraps the SDK's ``BoundedAttributes`` in a
    proxy whose every lookup runs through Python-level ``Mapping.get`` (about
    0.5 µs each); the dict inside answers in nanoseconds. Callers must not
    mutate the result. Falls back to the public view for other span classes.
    """
    raw = getattr(span, "_attributes", None)
    inner = getattr(raw, "_dict", None)
    if isinstance(inner, dict):
        return inner
    if isinstance(raw, dict):
        return raw
    return span.attributes or {}


def record_from_span(span: ReadableSpan, extractor: EntityExtractor | None = None) -> SpanRecord:
    """Normalise an SDK span (ended or not). Never raises; see :func:`record_from_attributes`."""
    ctx = span.get_span_context()
    parent = span.parent
    status = span.status
    return record_from_attributes(
        span_attributes(span),
        trace_id=format(ctx.trace_id, "032x") if ctx is not None else "",
        span_id=format(ctx.span_id, "016x") if ctx is not None else "",
        parent_id=format(parent.span_id, "016x") if parent is not None else None,
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or 0,
        is_error=status is not None and not status.is_ok and not status.is_unset,
        span_kind_hint=str(kind.value) if (kind := kind_from_name(span.name)) is not None else None,
        extractor=extractor,
    )


def build_record(
    attrs: Mapping[str, Any],
    kind: Kind,
    trace_id: str,
    span_id: str,
    parent_id: str | None,
    name: str,
    start_ns: int,
    end_ns: int,
    is_error: bool,
    extractor: EntityExtractor | None = None,
    run_key: str | None = None,
    parent_run_key: str | None = None,
    run_details: bool = True,
) -> SpanRecord:
    """Normalise attributes of a span whose kind the caller has already detected.

    Unlike :func:`record_from_attributes` this may raise on a mapping whose
    lookups fail, so adapters can count the problem; typed reads never raise.
    The SDK processor passes everything positionally (it runs on every span) and
    gives the run keys it resolved; ``run_details=False`` skips a run span's
    entities, budget and input, which a caller that opened the run from the
    live span already has.
    """
    get = attrs.get
    if end_ns < start_ns:
        end_ns = start_ns
    error_type = get(_ERROR_TYPE)
    if error_type.__class__ is not str or not error_type:
        error_type = None
    agent = get(_AGENT)
    if agent.__class__ is not str or not agent:
        agent = None
    if kind is Kind.RUN and agent is None:
        agent = run_agent_name(attrs, name)
    is_error = bool(is_error) or error_type is not None
    record = new_record(
        trace_id, span_id, parent_id, kind, name, start_ns, end_ns, run_key, parent_run_key, agent, is_error,
        error_type,
    )  # fmt: skip
    flags = get(_FLAGS)
    if flags is not None:
        record.flags_present = _strings(flags) or ()
    if kind is Kind.TOOL:
        _read_tool(attrs, record)
    elif kind is Kind.LLM:
        _read_llm(attrs, record, extractor)
    elif kind is Kind.RUN:
        if run_details:
            _read_run(attrs, record, extractor)
        else:
            record.stop_reason = _str(get(sc.RUN_STOP_REASON))
    return record


def run_agent_name(attrs: Mapping[str, Any], span_name: str) -> str | None:
    """A run span's agent: ``gen_ai.agent.name``, a foreign convention's name, else the span name's."""
    agent = attrs.get(_AGENT)
    if agent.__class__ is str and agent:
        return agent
    agent = _str(_first(attrs, "agent.name", sc.TRACELOOP_ENTITY_NAME, "gen_ai.workflow.name"))
    if agent:
        return agent
    if span_name.startswith(sc.OP_INVOKE_AGENT + " "):
        return span_name[len(sc.OP_INVOKE_AGENT) + 1 :] or None
    if span_name.startswith(sc.OP_INVOKE_WORKFLOW + " "):
        return span_name[len(sc.OP_INVOKE_WORKFLOW) + 1 :] or None
    return span_name or None


def _read_run(attrs: Mapping[str, Any], record: SpanRecord, extractor: EntityExtractor | None) -> None:
    record.entities = run_entities(attrs)
    record.budget = Budget.from_attributes(attrs)
    record.stop_reason = _str(attrs.get(sc.RUN_STOP_REASON))
    value = run_input(attrs)
    if value is not None:
        record.arguments = value
        if extractor is not None:
            record.input_entities = extractor.extract(value)


def run_input(attrs: Mapping[str, Any]) -> Any:
    """What the agent was asked, from a (foreign) run span's captured input; ``None`` without one.

    Its ids are known to the run (not invented by the model). The exporter, the
    collector and ``analyze`` read it from the run's record when they evaluate a
    trace; the SDK processor reads it when it opens the run.
    """
    value = _first(attrs, sc.OI_INPUT_VALUE, sc.TRACELOOP_ENTITY_INPUT, sc.GEN_AI_INPUT_MESSAGES)
    if value is not None and (value.__class__ is not str or len(value) <= MAX_PARSE_CHARS):
        return value
    return None


def run_entities(attrs: Mapping[str, Any]) -> dict[str, str]:
    """The run's declared subject from ``agentwatch.run.entity.<type>`` attributes.

    The only full scan of the attributes, done for run spans alone.
    """
    prefix = sc.RUN_ENTITY_PREFIX
    cut = len(prefix)
    entities: dict[str, str] = {}
    for key, value in attrs.items():
        if key.__class__ is str and key.startswith(prefix) and len(key) > cut:
            if value.__class__ is str and value:
                entities[key[cut:]] = value
            elif value.__class__ is int:
                entities[key[cut:]] = str(value)
    return entities


# --------------------------------------------------------------------------- tool spans


def _read_tool(attrs: Mapping[str, Any], record: SpanRecord) -> None:
    get = attrs.get
    tool = get(_TOOL_NAME)
    if tool.__class__ is not str or not tool:
        tool = _str(get(sc.OI_TOOL_NAME)) or _str(get(sc.TRACELOOP_ENTITY_NAME))
        if tool is None:
            span_name = record.name
            prefix = sc.OP_EXECUTE_TOOL + " "
            tool = span_name[len(prefix) :] if span_name.startswith(prefix) else (span_name or None)
    record.tool_name = tool
    value = get(_TOOL_CALL_ID)
    if value.__class__ is str:
        record.tool_call_id = value
    value = get(_SIDE_EFFECT)
    if value is not None:
        record.side_effect = value is True or _bool(value)
    value = get(_IDEMPOTENCY)
    if value is not None:
        record.idempotency_key = value is True or _bool(value)
    value = get(_ERROR_CLASS)
    if value.__class__ is str and value:
        record.error_class = value
    schema = get(_SCHEMA)
    if schema is None:
        schema = get(sc.OI_TOOL_PARAMETERS)  # OpenInference: JSON Schema of the parameters
    if schema is not None:
        parsed = _cached_json(schema)
        record.tool_schema = parsed if isinstance(parsed, dict) else None
    value = get(_ARG_ENTITIES)
    if value is not None:
        record.arg_entities = _entities(value)
    value = get(_RESULT_ENTITIES)
    if value is not None:
        # not cached: what a tool returns differs from call to call
        record.result_entities = _parse_entities(value)
    args_hash = get(_ARGS_HASH)
    if args_hash.__class__ is not str or not args_hash:
        args_hash = None
    record.args_hash = args_hash
    result_hash = get(_RESULT_HASH)
    if result_hash.__class__ is not str or not result_hash:
        result_hash = None
    record.result_hash = result_hash
    # Masked fingerprints and a long result's sketch (written only when they differ from the exact hashes).
    for attr, field in _NOISE_FIELDS:
        value = get(attr)
        if value.__class__ is str and value:
            setattr(record, field, value)

    # Captured content: needed for foreign spans (no fingerprints), for schema
    # validation, and for entity extraction when no entity lists were recorded.
    if args_hash is None or record.tool_schema is not None or record.arg_entities is None:
        raw_args = _tool_arguments(attrs)
        if raw_args is not None:
            arguments = _parse_arguments(raw_args)
            if args_hash is None:
                record.args_hash = _fingerprint(raw_args if arguments is _NOT_JSON else arguments)
                if arguments is not _NOT_JSON:
                    record.arguments = arguments
            elif arguments is not _NOT_JSON and _fingerprint(arguments) == args_hash:
                # Our own span with content capture on: use the content only when it
                # is complete (redaction or truncation would change the fingerprint).
                record.arguments = arguments
    if result_hash is None or record.result_entities is None:
        raw_result = _tool_result(attrs)
        if raw_result is not None:
            result = _parse_json(raw_result)
            if result is _NOT_JSON:
                result = raw_result if len(raw_result) <= MAX_PARSE_CHARS else None
            if result_hash is None:
                record.result_hash = _fingerprint(raw_result if result is None else result)
            record.result = result


_NOISE_FIELDS = (
    (sc.TOOL_ARGS_MASKED_HASH, "args_key"),
    (sc.TOOL_RESULT_MASKED_HASH, "result_key"),
    (sc.TOOL_RESULT_SKETCH, "result_sketch"),
)


def _tool_arguments(attrs: Mapping[str, Any]) -> Any:
    get = attrs.get
    value = get(sc.GEN_AI_TOOL_CALL_ARGUMENTS)
    if value is not None:
        return value
    value = get(sc.OI_INPUT_VALUE)
    if value is not None:
        return value
    value = get(sc.TRACELOOP_ENTITY_INPUT)
    if value.__class__ is str and len(value) <= MAX_PARSE_CHARS:
        # OpenLLMetry's decorators record {"args": [...], "kwargs": {...}}.
        parsed = _parse_json(value)
        if isinstance(parsed, dict) and set(parsed) <= {"args", "kwargs"}:
            args, kwargs = parsed.get("args"), parsed.get("kwargs")
            if not args and isinstance(kwargs, dict):
                return kwargs
        return parsed if parsed is not _NOT_JSON else value
    return value


def _tool_result(attrs: Mapping[str, Any]) -> Any:
    value = _first(attrs, sc.GEN_AI_TOOL_CALL_RESULT, sc.OI_OUTPUT_VALUE, sc.TRACELOOP_ENTITY_OUTPUT)
    if value is None or value.__class__ is str:
        return value
    return canonical_json(value)


def _parse_arguments(raw: Any) -> Any:
    """Arguments as the contract's hash sees them: JSON text parsed, structures as is."""
    if raw.__class__ is str:
        if len(raw) > MAX_PARSE_CHARS:
            return _NOT_JSON
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return raw  # hashed as a JSON string, like agentwatch.hashing.args_hash does
    if isinstance(raw, (dict, list, tuple, int, float, bool)):
        return raw
    return _NOT_JSON


# --------------------------------------------------------------------------- LLM spans


def _read_llm(attrs: Mapping[str, Any], record: SpanRecord, extractor: EntityExtractor | None) -> None:
    get = attrs.get
    model = get(_RESPONSE_MODEL)
    if model.__class__ is not str or not model:
        model = _str(get(_REQUEST_MODEL)) or _str(get(sc.OI_LLM_MODEL_NAME)) or _str(get("embedding.model_name"))
    record.model = model
    tokens = get(_INPUT_TOKENS)
    if tokens is None:
        tokens = _first(attrs, sc.GEN_AI_USAGE_PROMPT_TOKENS, sc.OI_TOKEN_PROMPT)
    record.input_tokens = tokens if tokens.__class__ is int and tokens >= 0 else _int(tokens)
    tokens = get(_OUTPUT_TOKENS)
    if tokens is None:
        tokens = _first(attrs, sc.GEN_AI_USAGE_COMPLETION_TOKENS, sc.OI_TOKEN_COMPLETION)
    record.output_tokens = tokens if tokens.__class__ is int and tokens >= 0 else _int(tokens)
    cost = get(_COST)
    record.cost_usd = _float(cost if cost is not None else get("llm.cost.total"))

    # agentwatch's own LLM spans record fingerprints and entity lists (absent when empty),
    # never to be second-guessed from captured content; foreign spans need the content.
    ours = _STEP in attrs or _RUN_ID in attrs
    calls = get(_TOOL_CALLS)
    requested: list[_Requested] = []
    if calls is not None:
        record.requested_calls = _parse_requested(calls)
    elif not ours:
        requested = _requested_from_content(attrs)
        record.requested_calls = tuple((tool, args_hash) for tool, args_hash, _ in requested)
    ids = get(_TOOL_CALL_IDS)
    results = get(_TOOL_RESULTS)
    if ids is not None:
        record.requested_ids = _call_ids(ids)
    if results is not None:
        record.tool_results = repeats.decode(results)
    elif not ours:
        _tool_exchange_from_content(attrs, record, ids is None and bool(record.requested_calls))
    offered = get(_TOOLS_OFFERED)
    if offered is not None:
        record.offered_tools = _strings(offered)
    elif not ours:
        record.offered_tools = _offered_from_content(attrs)
    value = get(_REQUESTED_ENTITIES)
    if value is not None:
        record.requested_entities = _entities(value)
    elif extractor is not None and requested:
        found: dict[Entity, None] = {}
        for _, _, arguments in requested:
            if arguments is not None:
                found.update(dict.fromkeys(extractor.extract(arguments)))
        record.requested_entities = tuple(found)
    value = get(_INPUT_ENTITIES)
    if value is not None:
        record.input_entities = _entities(value)
    elif extractor is not None and not ours:
        content = _input_content(attrs)
        if content:
            found = {}
            for item in content:
                found.update(dict.fromkeys(extractor.extract(item)))
            record.input_entities = tuple(found)
            record.input_raw = content  # every value in it is learnt too (lazily, when an id is missing)
    system_hash = get(_SYSTEM_HASH)
    user_hash = get(_USER_HASH)
    if not ours and (system_hash.__class__ is not str or user_hash.__class__ is not str):
        content_system, content_user = _prompt_fingerprints(attrs)
        system_hash = system_hash if system_hash.__class__ is str and system_hash else content_system
        user_hash = user_hash if user_hash.__class__ is str and user_hash else content_user
    record.system_hash = system_hash
    record.user_hash = user_hash


def _parse_requested(value: Any) -> tuple[tuple[str, str], ...]:
    """``agentwatch.llm.tool_calls`` (``"name:args_hash"`` strings) as pairs.

    Not cached: the hashes make nearly every value new, and a cache of them only
    keeps garbage alive for the cyclic GC to scan.
    """
    out: list[tuple[str, str]] = []
    for item in _strings(value) or ():
        tool, sep, args_hash = item.rpartition(":")
        if sep and tool:
            out.append((tool, args_hash))
    return tuple(out)


_Requested = tuple[str, str, Any]  # (tool name, args hash, parsed arguments or None)


def _call_ids(value: Any) -> tuple[str, ...]:
    """``agentwatch.llm.tool_call_ids``, aligned with the tool calls ("" where a call has no id)."""
    if not isinstance(value, (tuple, list)):
        return ()
    return tuple(v[: repeats.MAX_CALL_ID_CHARS] if v.__class__ is str else "" for v in value[:_MAX_INDEX])


def _tool_exchange_from_content(attrs: Mapping[str, Any], record: SpanRecord, want_ids: bool) -> None:
    """A foreign span's requested call ids and received tool results, from captured GenAI messages.

    Only the GenAI shape names both ends of a call by id; other shapes leave the
    results unseen (``tool_results`` stays ``None``), and the request loop detector
    then counts nothing for them.
    """
    get = attrs.get
    if want_ids:
        parsed = _parse_json(get(sc.GEN_AI_OUTPUT_MESSAGES))
        ids: list[str] = []
        for message in parsed if isinstance(parsed, list) else ():
            parts = message.get("parts") if isinstance(message, dict) else None
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict) and part.get("type") == "tool_call":
                    tool = part.get("name")
                    if isinstance(tool, str) and tool:  # the same calls _requested_from_content kept
                        call_id = part.get("id")
                        ids.append(call_id[: repeats.MAX_CALL_ID_CHARS] if isinstance(call_id, str) else "")
        if len(ids) == len(record.requested_calls):
            record.requested_ids = tuple(ids)
    parsed = _parse_json(get(sc.GEN_AI_INPUT_MESSAGES))
    if not isinstance(parsed, list):
        return
    start = 0
    for i, message in enumerate(parsed):
        if isinstance(message, dict) and message.get("role") == "assistant":
            start = i + 1
    results: list[repeats.ToolResult] = []
    for message in parsed[start:]:
        parts = message.get("parts") if isinstance(message, dict) else None
        for part in parts if isinstance(parts, list) else ():
            if isinstance(part, dict) and part.get("type") == "tool_call_response":
                call_id = part.get("id")
                if isinstance(call_id, str) and call_id and len(results) < repeats.MAX_RESULTS_PER_CALL:
                    results.append(repeats.fingerprint(call_id[: repeats.MAX_CALL_ID_CHARS], part.get("response")))
    record.tool_results = tuple(results)


def _requested_from_content(attrs: Mapping[str, Any]) -> list[_Requested]:
    """Tool calls the model asked for, from captured output (GenAI, OpenInference, OpenLLMetry)."""
    get = attrs.get
    out: list[_Requested] = []
    messages = get(sc.GEN_AI_OUTPUT_MESSAGES)
    if messages is not None:
        parsed = _parse_json(messages)
        for message in parsed if isinstance(parsed, list) else ():
            parts = message.get("parts") if isinstance(message, dict) else None
            for part in parts if isinstance(parts, list) else ():
                if isinstance(part, dict) and part.get("type") == "tool_call":
                    tool = part.get("name")
                    if isinstance(tool, str) and tool:
                        out.append(_requested(tool, part.get("arguments")))
        return out
    oi_prefix = "llm.output_messages.0.message.tool_calls."
    if get(oi_prefix + "0.tool_call.function.name") is not None:
        for j in range(_MAX_INDEX):
            tool = get(f"{oi_prefix}{j}.tool_call.function.name")
            if tool is None:
                break
            if tool.__class__ is str and tool:
                out.append(_requested(tool, get(f"{oi_prefix}{j}.tool_call.function.arguments")))
        return out
    legacy_prefix = "gen_ai.completion.0.tool_calls."
    if get(legacy_prefix + "0.name") is not None:
        for j in range(_MAX_INDEX):
            tool = get(f"{legacy_prefix}{j}.name")
            if tool is None:
                break
            if tool.__class__ is str and tool:
                out.append(_requested(tool, get(f"{legacy_prefix}{j}.arguments")))
    return out


def _requested(tool: str, raw: Any) -> _Requested:
    arguments = _parse_arguments({} if raw is None else raw)
    if arguments is _NOT_JSON:
        return tool, _fingerprint(raw), None
    return tool, _fingerprint(arguments), arguments


_INDEXED_INPUT = tuple(
    (f"{prefix}0{content_key}", prefix, content_key)
    for prefix, content_key in (("llm.input_messages.", ".message.content"), ("gen_ai.prompt.", ".content"))
)


def _input_content(attrs: Mapping[str, Any]) -> list[Any]:
    """The captured input of an LLM call (messages, instructions), raw, for entity extraction."""
    get = attrs.get
    out = [v for v in (get(sc.GEN_AI_SYSTEM_INSTRUCTIONS), get(sc.GEN_AI_INPUT_MESSAGES)) if v is not None]
    if out:
        return out
    value = get(sc.OI_INPUT_VALUE)
    if value is not None:
        return [value]
    # Spans without content (capture off, the common case) end here after four lookups.
    for first, prefix, content_key in _INDEXED_INPUT:
        if get(first) is not None:
            for i in range(_MAX_INDEX * 4):
                value = get(f"{prefix}{i}{content_key}")
                if value is None:
                    break
                out.append(value)
            return out
    return out


def _definition_name(definition: Any) -> str | None:
    if not isinstance(definition, dict):
        return None
    name = definition.get("name")
    if isinstance(name, str) and name:
        return name
    function = definition.get("function")
    if isinstance(function, dict):
        name = function.get("name")
        if isinstance(name, str) and name:
            return name
    return None


def _offered_from_content(attrs: Mapping[str, Any]) -> tuple[str, ...] | None:
    """Tool names offered to the model; ``None`` when the span does not say."""
    get = attrs.get
    definitions = get(sc.GEN_AI_TOOL_DEFINITIONS)
    if definitions is not None:
        parsed = _cached_json(definitions)
        if isinstance(parsed, list):
            return tuple(n for n in map(_definition_name, parsed) if n)
        return None
    if get("llm.tools.0.tool.json_schema") is not None:
        names: list[str] = []
        for i in range(_MAX_INDEX):
            schema = get(f"llm.tools.{i}.tool.json_schema")
            if schema is None:
                break
            name = _definition_name(_cached_json(schema))
            if name:
                names.append(name)
        return tuple(names)
    if get("llm.request.functions.0.name") is not None:
        names = []
        for i in range(_MAX_INDEX):
            name = get(f"llm.request.functions.{i}.name")
            if name is None:
                break
            if name.__class__ is str and name:
                names.append(name)
        return tuple(names)
    return None


_SYSTEM_ROLES = ("system", "developer")


def _message_text(body: Any) -> str:
    """Plain text of a message body: a string, or GenAI/OpenAI parts with text in them.

    Mirrors what agentwatch's own instrumentation fingerprints, so a run mixing
    our spans and foreign ones compares like with like.
    """
    if body.__class__ is str:
        return body
    if isinstance(body, list):
        texts: list[str] = []
        for part in body:
            if part.__class__ is str:
                texts.append(part)
            elif isinstance(part, dict):
                text = part.get("content") if part.get("type") == "text" else part.get("text")
                if text.__class__ is str:
                    texts.append(text)
        return "\n".join(texts)
    return ""


def _fingerprints(system_texts: list[str], user_text: str | None) -> tuple[str | None, str | None]:
    system = "\n".join(system_texts)
    return (digest(system) if system else None), (digest(user_text) if user_text else None)


def _prompt_fingerprints(attrs: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Fingerprints of the system instructions and of the latest user turn, from content.

    Same recipe as the instrumentation's ``agentwatch.llm.system_hash`` /
    ``user_hash``: the digest of the system messages' text joined by newlines,
    and of the last user message's text.
    """
    get = attrs.get
    instructions = get(sc.GEN_AI_SYSTEM_INSTRUCTIONS)
    messages = get(sc.GEN_AI_INPUT_MESSAGES)
    if instructions is not None or messages is not None:
        system_texts: list[str] = []
        user_text: str | None = None
        if instructions is not None:
            parsed = _parse_json(instructions)
            text = _message_text(instructions if parsed is _NOT_JSON else parsed)
            if text:
                system_texts.append(text)
        parsed = _parse_json(messages) if messages is not None else None
        if isinstance(parsed, list):
            from_messages: list[str] = []
            for message in parsed:
                if not isinstance(message, dict):
                    continue
                role = message.get("role")
                body = message.get("parts", message.get("content"))
                if role in _SYSTEM_ROLES:
                    from_messages.append(_message_text(body))
                elif role == "user":
                    user_text = _message_text(body)
            if not system_texts:
                system_texts = from_messages
        return _fingerprints(system_texts, user_text)
    for prefix, role_key, content_key in (
        ("llm.input_messages.", ".message.role", ".message.content"),  # OpenInference
        ("gen_ai.prompt.", ".role", ".content"),  # OpenLLMetry before the GenAI message names
    ):
        if get(f"{prefix}0{role_key}") is None:
            continue
        system_texts = []
        user_text = None
        for i in range(_MAX_INDEX * 4):
            role = get(f"{prefix}{i}{role_key}")
            if role is None:
                break
            if role in _SYSTEM_ROLES:
                system_texts.append(_message_text(get(f"{prefix}{i}{content_key}")))
            elif role == "user":
                user_text = _message_text(get(f"{prefix}{i}{content_key}"))
        return _fingerprints(system_texts, user_text)
    return None, None
