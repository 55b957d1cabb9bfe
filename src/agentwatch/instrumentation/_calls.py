"""The one span-building helper every provider and framework module shares.

A call goes through four moves: *guard* (the live guard asks the engine
whether an enforced budget, loop or deny rule stops it before it is sent),
*start* (span with the GenAI attributes samplers need), *record* (response
facts: tokens, cost, tool calls, hashes, entities), *finish* (the inline
engine's findings become flags on the still-open span, then the span ends).

Errors inside agentwatch are logged once and swallowed; the user's own
exceptions pass through untouched; deliberate stops (``BudgetExceeded``,
``LoopDetected``, ``ToolDenied``) are raised before anything is sent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.trace import Span, SpanKind

from .. import _runtime, calllog
from .. import semconv as sc
from ..classify import error_class, error_type, mark, tool_stop_reason
from ..content import NO_CAPTURE, CaptureMode, capture_mode
from ..engine import noise, repeats
from ..engine.engine import CallTicket, quiet_first_call
from ..engine.entities import format_entities
from ..engine.record import Kind, SpanRecord
from ..errors import AnomalyStop, BudgetExceeded, LoopDetected, StopRun, ToolDenied, ToolOutputInvalid
from ..gateway.executor import REFUSED_ANOMALY_STOP
from ..hashing import Unparsed, canonical_json, digest, parse_arguments, value_hash
from ..implicit import IN_FLIGHT, ImplicitRun
from ..otel.findings import anomaly_update
from ..otel.reporting import AnomalyContext
from ..otel.trusted import set_trusted_attributes
from ..redaction import record_error, set_error_status
from ..runs import Run, _context_for, current_run
from ..semconv import ErrorClass, StopReason
from ._messages import CONTENT_EVENT

if TYPE_CHECKING:
    from ..engine.engine import Stop

try:  # the key the HTTP client instrumentations check (opentelemetry-instrumentation >= 0.40)
    from opentelemetry.instrumentation.utils import _SUPPRESS_HTTP_INSTRUMENTATION_KEY as _HTTP_KEY
except ImportError:  # pragma: no cover
    _HTTP_KEY = "suppress_http_instrumentation"
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.trace.propagation import _SPAN_KEY

_MISSING: Any = object()
_NO_TICKET = CallTicket(None, None)
_FIRST_TICKET = CallTicket(1, None)  # a new implicit run's first call: step 1, and nothing can stop it
_TOOL_KEY = otel_context.create_key("agentwatch-tool-call")


def current_tool_call() -> ToolCall | None:
    """The agentwatch tool call whose span is current, if any (for calls nested inside it)."""
    call = otel_context.get_value(_TOOL_KEY)
    if isinstance(call, ToolCall) and trace.get_current_span() is call.span:
        return call
    return None


class _Names:
    """Attribute names that depend on ``OTEL_SEMCONV_STABILITY_OPT_IN`` (read once per instrument())."""

    cache_write = sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS

    def configure(self) -> None:
        opt_in = {v.strip() for v in os.environ.get(sc.ENV_SEMCONV_OPT_IN, "").split(",")}
        latest = sc.SEMCONV_GENAI_LATEST in opt_in
        self.cache_write = (
            sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS if latest else sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
        )


_names = _Names()
configure_semconv = _names.configure


def active() -> bool:
    """Whether an instrumented call should produce a span now."""
    return _runtime.enabled() and is_instrumentation_enabled()


def _raise_stop(stop: Stop) -> None:
    """Raise the exception for a call the live guard refused (the engine keeps the finding for the run)."""
    reason = stop.stop_reason
    message = stop.finding.reason
    if reason is StopReason.LOOP_DETECTED:
        raise LoopDetected(message)
    if reason is StopReason.ANOMALY_STOP:
        flag = stop.finding.flag.value
        try:
            _runtime.get().gateway.count(REFUSED_ANOMALY_STOP, None)
        except Exception as err:
            _runtime.internal_error("gateway.count", err)
        raise AnomalyStop(f"run stopped after {flag} (agent.anomaly.stop_on): {message}", finding=flag)
    if reason in (
        StopReason.STEP_BUDGET,
        StopReason.TOOL_BUDGET,
        StopReason.TIME_BUDGET,
        StopReason.COST_BUDGET,
        StopReason.TOKEN_BUDGET,
    ):
        raise BudgetExceeded(message, stop_reason=reason)
    raise StopRun(message, stop_reason=reason)


def _content_to(span: Span, mode: CaptureMode, content: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Captured content goes where the capture mode says: span attributes, an event, or both."""
    if not content:
        return
    if mode.on_span:
        attrs.update(content)
    if mode.as_event:
        span.add_event(CONTENT_EVENT, content)


def _detach(token: object | None) -> None:
    """Leave a call's context; a token from another context (a stream ended elsewhere) is dropped."""
    if token is not None:
        try:
            otel_context.detach(token)  # type: ignore[arg-type]
        except Exception:
            pass


def _hex(span: Span) -> tuple[str, str, str | None]:
    ctx = span.get_span_context()
    parent = getattr(span, "parent", None)
    return (
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        format(parent.span_id, "016x") if parent is not None else None,
    )


def _apply(span: Span, run: Run | None, record: SpanRecord) -> None:
    """Feed the inline engine and put its findings on the still-open span."""
    rt = _runtime.get()
    findings = rt.engine.process(record)
    if not findings or not rt.inline or not span.is_recording():
        return
    attrs, events, new = anomaly_update(None, None, findings)
    set_trusted_attributes(span, attrs)
    for name, event_attrs in events:
        span.add_event(name, event_attrs)
    rt.reporter.report(new, _context_for(span, run))


# --------------------------------------------------------------------------- tool calls


class ToolCall:
    """One ``execute_tool`` span, opened by :func:`start_tool` and closed by :meth:`finish`."""

    __slots__ = (
        "arg_entities",
        "args_hash",
        "args_key",
        "arguments",
        "capture",
        "failure",
        "idempotent",
        "name",
        "output_problem",
        "record_schema",
        "run",
        "side_effect",
        "span",
        "start_ns",
        "token",
    )

    name: str
    run: Run | None
    arguments: Any
    args_hash: str
    args_key: str
    side_effect: bool
    idempotent: bool
    arg_entities: tuple[tuple[str, str], ...]
    record_schema: dict[str, Any] | None
    start_ns: int
    capture: CaptureMode
    span: Span
    token: object | None

    def __init__(self) -> None:
        self.token = None
        # A failure reported from inside the tool (an MCP result with isError under a framework
        # tool that returns the error text as its output): recorded when the tool ends.
        self.failure: tuple[str, ErrorClass, str] | None = None
        self.output_problem: str | None = None  # set by the gateway: the result failed its output schema

    def finish(
        self,
        result: Any = _MISSING,
        exc: BaseException | None = None,
        *,
        failed: tuple[str, ErrorClass, str] | None = None,
    ) -> None:
        """End the span with the tool's result or exception; never raises.

        ``failed`` = (``error.type``, error class, message) records a failure that
        is a value, not an exception (an MCP result with ``isError``).
        """
        _detach(self.token)
        self.token = None
        span = self.span
        if failed is None and exc is None:
            failed = self.failure
        try:
            rt = _runtime.get()
            end = time.time_ns()
            trace_id, span_id, parent_id = _hex(span)
            record = SpanRecord(
                trace_id=trace_id, span_id=span_id, parent_id=parent_id, kind=Kind.TOOL,
                name=f"{sc.OP_EXECUTE_TOOL} {self.name}", start_ns=self.start_ns, end_ns=end,
                run_key=self.run.key if self.run else None,
                tool_name=self.name, args_hash=self.args_hash, args_key=self.args_key, arguments=self.arguments,
                side_effect=self.side_effect, idempotency_key=self.idempotent,
                arg_entities=self.arg_entities, tool_schema=self.record_schema,
            )
            if self.output_problem is not None or isinstance(exc, ToolOutputInvalid):
                record.output_invalid = True
            # Marked so an AnomalyProcessor in the same pipeline does not evaluate it twice.
            attrs: dict[str, Any] = {sc.ANOMALY_EVALUATED: True} if rt.inline else {}
            if failed is not None:
                kind, failure_class, message = failed
                record.is_error = True
                record.error_type = kind
                record.error_class = failure_class.value
                attrs[sc.ERROR_TYPE] = kind
                attrs[sc.TOOL_ERROR_CLASS] = failure_class.value
                set_error_status(span, message)
            elif exc is not None:
                cls = error_class(exc)
                mark(exc, tool_stop_reason(cls))
                record.is_error = True
                record.error_type = error_type(exc)
                record.error_class = cls.value
                attrs[sc.ERROR_TYPE] = record.error_type
                attrs[sc.TOOL_ERROR_CLASS] = cls.value
                record_error(span, exc)
            elif result is not _MISSING:
                record.result = result
                record.result_hash = value_hash(result)
                entities = rt.extractor.extract(result)
                record.result_entities = entities
                attrs[sc.TOOL_RESULT_HASH] = record.result_hash
                _noise_attrs(record, attrs)
                if entities:
                    attrs[sc.TOOL_RESULT_ENTITIES] = format_entities(entities)
                if self.capture.enabled:
                    _content_to(span, self.capture, {sc.GEN_AI_TOOL_CALL_RESULT: rt.redactor.render(result)}, attrs)
            if record.output_invalid:
                attrs[sc.TOOL_OUTPUT_INVALID] = True
            set_trusted_attributes(span, attrs)
            _apply(span, self.run, record)
            if rt.config.call_log:
                self._log(rt, record, end)
        except Exception as err:
            _runtime.internal_error("tool.finish", err)
        finally:
            span.end()

    def _log(self, rt: Any, record: SpanRecord, end: int) -> None:
        """Seed 004's structured record of this call (``agent.logging.structured``)."""
        attrs = getattr(self.span, "attributes", None) or {}
        calllog.emit("tool_call", {
            "run_id": self.run.run_id if self.run else None, "trace_id": record.trace_id,
            "span_id": record.span_id, "step": attrs.get(sc.STEP), "tool": self.name, "args_hash": self.args_hash,
            "elapsed_s": round((end - self.start_ns) / 1e9, 6), "status": "error" if record.is_error else "ok",
            "error_class": record.error_class, "attempt": attrs.get(sc.TOOL_ATTEMPT),
        }, rt.config.call_log_include)


# Framework integrations that know which agent of a multi-agent run is calling the model
# (a LangGraph node); the LLM span names it, so drift compares each agent with itself.
_AGENT_NAMERS: list[Callable[[], str | None]] = []


def add_agent_namer(namer: Callable[[], str | None]) -> None:
    if namer not in _AGENT_NAMERS:
        _AGENT_NAMERS.append(namer)


def _agent_name() -> str | None:
    for namer in _AGENT_NAMERS:
        try:
            name = namer()
        except Exception:
            continue
        if isinstance(name, str) and name:
            return name[:128]
    return None


def _noise_attrs(record: SpanRecord, attrs: dict[str, Any]) -> None:
    """The result's masked fingerprint and sketch, for loops in process and out (see engine.noise)."""
    result_hash = record.result_hash
    masked = record.result_key = noise.result_key(record.result, result_hash)
    if masked != result_hash:
        attrs[sc.TOOL_RESULT_MASKED_HASH] = masked
    sketch = record.result_sketch = noise.sketch(record.result)
    if sketch is not None:
        attrs[sc.TOOL_RESULT_SKETCH] = sketch


def start_tool(
    name: str,
    arguments: Any,
    *,
    side_effect: bool = False,
    description: str | None = None,
    schema: dict[str, Any] | None = None,
    call_id: str | None = None,
    tool_type: str = "function",
    extra: dict[str, Any] | None = None,
    reversible: bool | None = None,
    idempotent: bool = False,
    refuse: StopRun | None = None,
) -> ToolCall | None:
    """Guard and open a tool span; ``None`` when agentwatch is off or suppressed.

    Raises ``BudgetExceeded``/``LoopDetected``/``ToolDenied`` when an enforced
    rule stops the call before it runs. A denied call still gets its span (failed,
    ``error_class=denied``, flagged ``TOOL_DENIED``): the agent did try to call it.
    ``refuse`` is the gateway's refusal (safe mode, open breaker, invalid input):
    recorded the same way and raised. ``idempotent`` says the gateway supplied
    an idempotency key the arguments do not show.
    """
    if not active():
        return None
    stop: Stop | None = None
    denied: StopRun | None = None
    try:
        rt = _runtime.get()
        run = current_run()
        parsed = parse_arguments(arguments)
        h = digest(parsed) if parsed.__class__ is Unparsed else digest(canonical_json(parsed))  # = args_hash
        if run is None and rt.implicit is not None:  # a tool an implicit run's LLM call asked for
            run = rt.implicit.for_tool(name, h, call_id)
            if run is not None and run.deferred is not None:
                _replay_first_call(rt, run)
        loop_key = noise.args_key(parsed, h)  # the engine keys loops and budgets by masked arguments
        start = time.time_ns()
        ticket = rt.engine.begin_call(
            run.key if run else None, Kind.TOOL, tool_name=name, args_hash=loop_key, now_ns=start
        )
        stop = ticket.stop
        policy = rt.config.tools
        if stop is None and policy.enforce:
            why = policy.denial(name)
            if why is not None:
                denied = ToolDenied(why)
        if stop is None and denied is None and refuse is not None:
            denied = refuse
        if stop is None:
            call = ToolCall()
            call.name = name
            call.run = run
            call.arguments = parsed
            call.args_hash = h
            call.args_key = loop_key
            call.side_effect = side_effect or rt.config.tools.is_side_effect(name)
            call.idempotent = idempotent or (isinstance(parsed, dict) and any(
                parsed.get(k) not in (None, "") for k in rt.config.tools.idempotency_keys
            ))
            call.arg_entities = rt.extractor.extract(parsed)
            # The tool's own schema, else the one the model was offered for it in this run.
            call.record_schema = schema if schema is not None else (run.schema_for(name) if run else None)
            call.start_ns = start
            mode = capture_mode()
            call.capture = mode
            attrs: dict[str, Any] = {
                sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                sc.GEN_AI_TOOL_NAME: name,
                sc.GEN_AI_TOOL_TYPE: tool_type,
                sc.TOOL_ARGS_HASH: h,
                sc.TOOL_SIDE_EFFECT: call.side_effect,
            }
            if loop_key != h:
                attrs[sc.TOOL_ARGS_MASKED_HASH] = loop_key
            if ticket.step is not None:
                attrs[sc.STEP] = ticket.step
            if run is not None:
                attrs[sc.RUN_ID] = run.run_id
                if isinstance(run, ImplicitRun):
                    attrs.update(run.attributes)
                if call_id is None:
                    call_id = run.requested_call_id(name, h)
            if call_id:
                attrs[sc.GEN_AI_TOOL_CALL_ID] = call_id
            if description:
                attrs[sc.GEN_AI_TOOL_DESCRIPTION] = description
            if call.idempotent:
                attrs[sc.TOOL_IDEMPOTENCY_KEY] = True
            if reversible is not None:
                attrs[sc.TOOL_REVERSIBLE] = reversible
            if call.arg_entities:
                attrs[sc.TOOL_ARG_ENTITIES] = format_entities(call.arg_entities)
            content: dict[str, Any] = {}
            if mode.enabled:
                content[sc.GEN_AI_TOOL_CALL_ARGUMENTS] = rt.redactor.render(parsed)
                if schema is not None:
                    attrs[sc.TOOL_SCHEMA] = canonical_json(schema)
            if mode.on_span:
                attrs.update(content)
            if extra:
                attrs.update(extra)
            span = rt.tracer.start_span(
                f"{sc.OP_EXECUTE_TOOL} {name}", kind=SpanKind.INTERNAL, attributes=attrs, start_time=start
            )
            if mode.as_event and content:
                span.add_event(CONTENT_EVENT, content)
            call.span = span
            call.token = otel_context.attach(otel_context.set_value(_TOOL_KEY, call, trace.set_span_in_context(span)))
            if denied is None:
                return call
            call.finish(exc=denied)
    except Exception as err:
        _runtime.internal_error("tool.start", err)
        return None
    if denied is not None:
        raise denied
    if stop is not None:
        _raise_stop(stop)
    return None


# --------------------------------------------------------------------------- LLM calls


class RequestInfo:
    """What the LLM span needs from a request body, read once before the call.

    A plain class with class-level defaults: a bare call sets four fields, not ten.
    """

    offered_tools: Sequence[str] | None = None
    offered_schemas: dict[str, Any] | None = None  # tool name -> JSON Schema of its arguments
    system_text: str | None = None
    user_text: str | None = None
    new_input: Iterable[Any] = ()
    # (messages, reader): every payload of the history, read on a run's first LLM call only
    history: tuple[Any, Callable[[Any], list[Any]]] | None = None
    input_messages: Any = None
    # (call id, content, failed) of the tool results in the new input; raw, never kept past the call
    tool_results: list[tuple[str, Any, bool]] | None = None

    def __init__(
        self, operation: str, model: str | None, attrs: dict[str, Any],
        offered_tools: Sequence[str] | None = None, offered_schemas: dict[str, Any] | None = None,
    ) -> None:
        self.operation = operation
        self.model = model
        self.attrs = attrs  # gen_ai.request.* parameters
        if offered_tools is not None:
            self.offered_tools = offered_tools
        if offered_schemas is not None:
            self.offered_schemas = offered_schemas


class LLMCall:
    """One LLM span. Provider modules fill the response fields, then call :meth:`finish` once.

    Fields that most calls never set are class-level defaults, so opening a call
    costs a handful of assignments (this runs on every LLM request).
    """

    span: Span
    token: object | None = None
    metric_attrs: dict[str, Any]
    pending_attrs: dict[str, Any]  # set on the span when it ends, with the response's
    foreign = False
    capture = False
    content_mode: CaptureMode = NO_CAPTURE
    offered_tools: tuple[str, ...] | None = None
    system_hash: str | None = None
    user_hash: str | None = None
    input_entities: tuple[tuple[str, str], ...] | None = None
    input_raw: list[Any] | None = None
    tool_results: tuple[repeats.ToolResult, ...] | None = None
    requested_ids: tuple[str, ...] = ()
    agent_name: str | None = None
    finished = False
    response_id: str | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning_tokens: int | None = None
    output_messages: Any = None
    time_to_first_chunk: float | None = None

    def __init__(self, run: Run | None, provider: str, model: str | None, start: int) -> None:
        self.run = run
        self.provider = provider
        self.model = model
        self.start = start
        self.finish_reasons: list[str] = []
        self.requested: list[tuple[str, Any, str | None]] = []  # (tool name, raw args, call id)

    def detach(self) -> None:
        """Leave the call's context (done as soon as the client returns, even for streams)."""
        _detach(self.token)
        self.token = None

    def finish(self, exc: BaseException | None = None) -> None:
        """Record the response (or error) and end the span. Idempotent; never raises."""
        if self.finished:
            return
        self.finished = True
        self.detach()
        span = self.span
        try:
            self._record(exc)
        except Exception as err:
            _runtime.internal_error("llm.finish", err)
            # The request's attributes wait for the end (one write): still say what the call was.
            try:
                set_trusted_attributes(span, self.pending_attrs)
            except Exception:
                pass
        finally:
            if not self.foreign:
                span.end()

    def _record(self, exc: BaseException | None) -> None:
        rt = _runtime.get()
        span = self.span
        end = time.time_ns()
        model = self.response_model or self.model
        input_tokens = self.input_tokens
        output_tokens = self.output_tokens
        cost = rt.prices.cost(model, input_tokens, output_tokens, self.cache_read, self.cache_write)
        attrs = self.pending_attrs
        if not self.foreign:
            if self.response_id:
                attrs[sc.GEN_AI_RESPONSE_ID] = self.response_id
            if self.response_model:
                attrs[sc.GEN_AI_RESPONSE_MODEL] = self.response_model
            if self.finish_reasons:
                attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(self.finish_reasons)
            if input_tokens is not None:
                attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
            if output_tokens is not None:
                attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
            if self.cache_read is not None:
                attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = self.cache_read
            if self.cache_write is not None:
                attrs[_names.cache_write] = self.cache_write
            if self.reasoning_tokens is not None:
                attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = self.reasoning_tokens
            if self.time_to_first_chunk is not None:
                attrs[sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = self.time_to_first_chunk
            if self.capture and self.output_messages is not None:
                for message in self.output_messages:  # a stream that broke off before the model said why
                    if not message.get("finish_reason"):
                        message["finish_reason"] = "error"
                _content_to(span, self.content_mode,
                            {sc.GEN_AI_OUTPUT_MESSAGES: rt.redactor.render_messages(self.output_messages)}, attrs)
        if cost is not None:
            attrs[sc.COST_USD] = cost
        run = self.run
        if self.response_id and isinstance(run, ImplicitRun):
            run.remember_response(self.response_id)
        requested: list[tuple[str, str]] = []
        requested_entities: list[tuple[str, str]] = []
        if self.requested:
            try:  # isolated: whatever the model asked for, the call's tokens and cost are recorded
                self._requested(rt, run, requested, requested_entities, attrs)
            except Exception as err:
                _runtime.internal_error("llm.tool_calls", err)
        if rt.inline:
            attrs[sc.ANOMALY_EVALUATED] = True  # by the live guard, even when nothing could be found
        if exc is not None:
            mark(exc, StopReason.LLM_ERROR)
            attrs[sc.ERROR_TYPE] = error_type(exc)
            if not self.foreign:
                record_error(span, exc)
        set_trusted_attributes(span, attrs)

        # Outside a run the only thing detectors could find is a tool the model was not offered.
        offered = self.offered_tools
        if run is not None or (requested and offered is not None and any(n not in offered for n, _ in requested)):
            self._detect(span, run, exc, end, cost, requested, requested_entities, attrs)
        self._metrics(rt, exc, end, cost, attrs)

    def _requested(
        self, rt: Any, run: Run | None, requested: list[tuple[str, str]],
        requested_entities: list[tuple[str, str]], attrs: dict[str, Any],
    ) -> None:
        """Fingerprints (and entities) of the tool calls the model asked for, and their call ids."""
        ids: list[str] = []
        for name, raw_args, call_id in self.requested:
            parsed = parse_arguments(raw_args)
            h = digest(parsed) if parsed.__class__ is Unparsed else digest(canonical_json(parsed))
            requested.append((name, h))
            ids.append(call_id[: repeats.MAX_CALL_ID_CHARS] if isinstance(call_id, str) else "")
            if run is not None:
                requested_entities.extend(rt.extractor.extract(parsed))
                run.remember_requested(name, h, call_id)
        attrs[sc.LLM_TOOL_CALLS] = tuple([f"{n}:{h}" for n, h in requested])
        if any(ids):
            attrs[sc.LLM_TOOL_CALL_IDS] = self.requested_ids = tuple(ids)
        if requested_entities:
            attrs[sc.LLM_REQUESTED_ENTITIES] = format_entities(tuple(dict.fromkeys(requested_entities)))

    def _detect(
        self, span: Span, run: Run | None, exc: BaseException | None, end: int, cost: float | None,
        requested: list[tuple[str, str]], requested_entities: list[tuple[str, str]], attrs: dict[str, Any],
    ) -> None:
        trace_id, span_id, parent_id = _hex(span)
        record = SpanRecord(
            trace_id=trace_id, span_id=span_id, parent_id=parent_id, kind=Kind.LLM,
            start_ns=self.start, end_ns=end, run_key=run.key if run else None,
            is_error=exc is not None, model=self.response_model or self.model,
            input_tokens=self.input_tokens, output_tokens=self.output_tokens, cost_usd=cost,
            requested_calls=tuple(requested), requested_entities=tuple(requested_entities),
            offered_tools=self.offered_tools, input_entities=self.input_entities, input_raw=self.input_raw,
            requested_ids=self.requested_ids, tool_results=self.tool_results,
            system_hash=self.system_hash, user_hash=self.user_hash, agent_name=self.agent_name,
            error_type=attrs.get(sc.ERROR_TYPE),
        )
        if run.__class__ is ImplicitRun and run.deferred is IN_FLIGHT:  # type: ignore[union-attr]
            rt = _runtime.get()
            table = rt.implicit
            if table is not None and exc is None and quiet_first_call(record) and table.defer(run, record):
                return  # replayed if the conversation goes on (see implicit)
            if table is not None:
                table.materialize(run)  # type: ignore[arg-type]
            rt.engine.begin_call(run.key, Kind.LLM, now_ns=self.start)  # type: ignore[union-attr]
        _apply(span, run, record)

    def _metrics(self, rt: Any, exc: BaseException | None, end: int, cost: float | None,
                 attrs: dict[str, Any]) -> None:
        ins = rt.instruments
        if cost is not None:  # recorded beside foreign spans too: no other instrumentation counts cost
            ins.cost.add(cost, {sc.GEN_AI_PROVIDER_NAME: self.provider, sc.GEN_AI_REQUEST_MODEL: self.model or ""})
        if self.foreign:
            return
        metric = self.metric_attrs
        if exc is not None or self.response_model:
            metric = dict(metric)
            if exc is not None:
                metric[sc.ERROR_TYPE] = attrs[sc.ERROR_TYPE]
            if self.response_model:
                metric[sc.GEN_AI_RESPONSE_MODEL] = self.response_model
        ins.duration.record((end - self.start) / 1e9, metric)
        if self.input_tokens is not None:
            ins.token_usage.record(self.input_tokens, {**metric, sc.GEN_AI_TOKEN_TYPE: "input"})
        if self.output_tokens is not None:
            ins.token_usage.record(self.output_tokens, {**metric, sc.GEN_AI_TOKEN_TYPE: "output"})


def _replay_first_call(rt: Any, run: ImplicitRun) -> None:
    """Give the engine a conversation's deferred first call before anything that came after it."""
    table = rt.implicit
    record = table.materialize(run) if table is not None else None
    if record is None:
        return
    rt.engine.begin_call(run.key, Kind.LLM, now_ns=record.start_ns)
    findings = rt.engine.process(record)
    if findings:  # none, by quiet_first_call; were that ever wrong, they are reported, not lost
        rt.reporter.report(findings, AnomalyContext(
            trace_id=record.trace_id, span_id=record.span_id, span_name="", run_key=run.run_id, agent_name=run.name,
        ))


def _foreign_llm_span(current: otel_context.Context) -> Span | None:
    """An LLM span another instrumentation already opened for this very call, if any.

    Rule (documented in the README): the outermost LLM span wins. When it is a
    foreign one (official openai-v2, OpenLLMetry, OpenInference), agentwatch
    adds its own attributes (cost, step, tool-call hashes) to it instead of
    opening a second span; tokens are not recorded twice.
    """
    span: Any = current.get(_SPAN_KEY)
    if span is None or not span.is_recording():
        return None
    scope = getattr(span, "instrumentation_scope", None)
    if scope is not None and getattr(scope, "name", None) == "agentwatch":
        return None
    attrs = getattr(span, "attributes", None)
    if not attrs:
        return None
    op = attrs.get(sc.GEN_AI_OPERATION_NAME)
    if op in sc.LLM_OPERATIONS or attrs.get(sc.LLM_REQUEST_TYPE) or attrs.get(sc.OPENINFERENCE_SPAN_KIND) == "LLM":
        return span
    return None


def start_llm(
    provider: str,
    info: RequestInfo,
    *,
    server: tuple[str | None, int | None] = (None, None),
    capture: CaptureMode | None = None,
    run: Any = _MISSING,  # Run | None, or _MISSING to look it up
) -> LLMCall | None:
    """Guard and open an LLM span; ``None`` when off, suppressed or on internal error.

    ``run`` is the current run when the caller already looked it up. Raises
    ``BudgetExceeded``/``LoopDetected`` when an enforced budget stops the call.
    """
    if run is _MISSING:
        if not active():
            return None
        run = current_run()
    stop: Stop | None = None
    try:
        rt = _runtime.get()
        start = time.time_ns()
        # Budgets and loops live in runs: an LLM call outside any run has nothing to guard.
        if run is None:
            ticket = _NO_TICKET
        elif run.__class__ is ImplicitRun and run.deferred is not None:
            if rt.implicit is not None and rt.implicit.claim_first(run):
                ticket = _FIRST_TICKET  # a new conversation: no engine state unless it goes on (implicit)
            else:
                _replay_first_call(rt, run)
                ticket = rt.engine.begin_call(run.key, Kind.LLM, now_ns=start)
        else:
            ticket = rt.engine.begin_call(run.key, Kind.LLM, now_ns=start)
        stop = ticket.stop
        if stop is None:
            operation = info.operation
            model = info.model
            call = LLMCall(run, provider, model, start)
            # What samplers may look at is given at span creation (GenAI convention);
            # the rest is written with the response's attributes when the span ends.
            head: dict[str, Any] = {sc.GEN_AI_OPERATION_NAME: operation, sc.GEN_AI_PROVIDER_NAME: provider}
            if model:
                head[sc.GEN_AI_REQUEST_MODEL] = model
            host, port = server
            if host:
                head[sc.SERVER_ADDRESS] = host
            if port:
                head[sc.SERVER_PORT] = port
            call.metric_attrs = head
            attrs = call.pending_attrs = dict(info.attrs)
            if info.offered_tools is not None:
                offered = call.offered_tools = tuple(info.offered_tools)
                if offered:
                    attrs[sc.LLM_TOOLS_OFFERED] = offered
            if run is not None:
                if ticket.step is not None:
                    attrs[sc.STEP] = ticket.step
                attrs[sc.RUN_ID] = run.run_id
                if isinstance(run, ImplicitRun):
                    attrs.update(run.attributes)
                if info.offered_schemas:
                    run.remember_schemas(info.offered_schemas)
                # Drift and entity grounding are judged within a run: outside one,
                # skip the work so a bare client call stays as cheap as possible.
                if info.system_text:
                    call.system_hash = attrs[sc.LLM_SYSTEM_HASH] = digest(info.system_text)
                if info.user_text:
                    call.user_hash = attrs[sc.LLM_USER_HASH] = digest(info.user_text)
                if _AGENT_NAMERS:
                    agent = _agent_name()
                    if agent is not None:
                        call.agent_name = attrs[sc.GEN_AI_AGENT_NAME] = agent
                new_input = info.new_input
                if not getattr(run, "history_learnt", True):
                    # The run's first LLM call: everything the model was sent is what it knows
                    # (a second turn of a chat, a checkpointed thread), not only the newest turn.
                    run.history_learnt = True
                    if info.history is not None:
                        messages, reader = info.history
                        new_input = [info.system_text, *reader(messages)] if info.system_text else reader(messages)
                    # every value of it is learnt too (lazily); later calls' new input is mostly
                    # tool results, which their own spans teach the engine
                    call.input_raw = new_input if isinstance(new_input, list) else list(new_input)
                entities: list[tuple[str, str]] = []
                for item in new_input:
                    entities.extend(rt.extractor.extract(item))
                call.input_entities = tuple(dict.fromkeys(entities))
                if info.tool_results:  # fingerprinted here, before any redaction; only they are kept
                    results = call.tool_results = tuple(
                        repeats.fingerprint(cid, content, failed)
                        for cid, content, failed in info.tool_results[: repeats.MAX_RESULTS_PER_CALL]
                    )
                    attrs[sc.LLM_TOOL_RESULTS] = repeats.encode(results)
                # Recorded even when empty: "input scanned, nothing found" grounds the run.
                attrs[sc.LLM_INPUT_ENTITIES] = format_entities(call.input_entities)
            mode = capture if capture is not None else capture_mode()
            content: dict[str, Any] | None = None
            if mode.enabled:
                call.capture = True
                call.content_mode = mode
                messages = info.input_messages
                if messages is not None:
                    content = {sc.GEN_AI_INPUT_MESSAGES: rt.redactor.render_messages(messages)}
                    in_history = any(m.get("role") in ("system", "developer") for m in messages)
                    if info.system_text and not in_history:  # apart from the history (instructions, system=)
                        content[sc.GEN_AI_SYSTEM_INSTRUCTIONS] = rt.redactor.render_messages(
                            [{"type": "text", "content": info.system_text}]
                        )
                    if mode.on_span:
                        attrs.update(content)
            current = otel_context.get_current()
            foreign = _foreign_llm_span(current)
            if foreign is not None:
                call.foreign = True
                ours = {k: v for k, v in attrs.items() if k.startswith("agentwatch.")}
                theirs = getattr(foreign, "attributes", None) or {}
                if isinstance(run, ImplicitRun) and sc.GEN_AI_CONVERSATION_ID not in theirs:
                    ours[sc.GEN_AI_CONVERSATION_ID] = run.conversation_id  # so exporters can group it too
                foreign.set_attributes(ours)
                attrs.clear()
                span = foreign
            else:
                # The SDK's own samplers never read attributes: then everything is written
                # once, when the span ends (see otel.trusted); any other sampler sees them.
                blind = rt.sampler_blind
                span = rt.tracer.start_span(
                    f"{operation} {model}" if model else operation,
                    kind=SpanKind.CLIENT, attributes=None if blind else head, start_time=start, context=current,
                )
                if blind:
                    call.pending_attrs = {**head, **attrs}
            if content and mode.as_event:
                span.add_event(CONTENT_EVENT, content)
            # Inside the client call: no nested HTTP span, and no second LLM span from
            # an inner instrumentation of the same call. One copy of the context, not three.
            ctx = otel_context.Context(
                {**current, _SPAN_KEY: span, _HTTP_KEY: True, _SUPPRESS_INSTRUMENTATION_KEY: True}
            )
            call.span = span
            call.token = otel_context.attach(ctx)
            return call
    except Exception as err:
        _runtime.internal_error("llm.start", err)
        return None
    _raise_stop(stop)
    return None  # unreachable
