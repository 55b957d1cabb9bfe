"""``agentwatch.run`` and ``agentwatch.phase``: the run → phase → call span tree.

A run is one agent attempt. Its state (budget, step counter, totals) lives in
the detector engine under the run's id; the Python handle travels in the
OpenTelemetry context, so it follows ``asyncio`` tasks and, with the usual OTel
context helpers, work handed to thread pools.
"""

from __future__ import annotations

import functools
import inspect
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import _runtime, calllog
from . import semconv as sc
from .budget import Budget
from .classify import error_type, stop_reason_for
from .engine.entities import credential_key, secret_value
from .gateway.idempotency import STORE
from .otel.findings import anomaly_update, run_summary_attributes
from .redaction import REDACTED, record_error, redact_text
from .semconv import StopReason

F = TypeVar("F", bound=Callable[..., Any])

RUN_CONTEXT_KEY = otel_context.create_key("agentwatch-run")


class Run:
    """The handle ``agentwatch.run`` yields: the run's id and an explicit stop."""

    __slots__ = (
        "_detail", "_reason", "_requested", "_schemas", "budget", "history_learnt", "key", "name", "parent",
        "run_id", "span",
    )

    def __init__(self, name: str, run_id: str, span: Span, parent: Run | None, budget: Budget | None) -> None:
        self.name = name
        self.run_id = run_id
        self.span = span
        # The engine keys runs by the run span's id, as the SDK processor and the
        # collector do, so every finding and fault origin names a real span.
        ctx = span.get_span_context()
        self.key = format(ctx.span_id, "016x") if ctx.is_valid else run_id
        self.parent = parent
        self.budget = budget
        self._reason: StopReason | None = None
        self._detail: str | None = None
        self._requested: dict[tuple[str, str], str] = {}  # (tool, args hash) -> tool call id
        self._schemas: dict[str, Any] = {}  # tool name -> JSON Schema offered to the model
        self.history_learnt = False  # the first LLM call's whole input history was scanned for ids

    def stop(self, reason: StopReason | str, detail: str | None = None) -> None:
        """Set the run's stop reason explicitly (wins over the classified outcome)."""
        self._reason = StopReason(reason)
        self._detail = detail

    @property
    def stop_reason(self) -> StopReason | None:
        return self._reason

    def remember_requested(self, tool: str, args_hash: str, call_id: str | None) -> None:
        """Tool calls the model asked for, so the tool span can carry ``gen_ai.tool.call.id``."""
        if call_id:
            if len(self._requested) > 1024:
                self._requested.clear()
            self._requested[(tool, args_hash)] = call_id

    def remember_schemas(self, schemas: Mapping[str, Any]) -> None:
        """The argument schemas the model was offered, checked when the tools run."""
        if len(self._schemas) > 256:
            self._schemas.clear()
        self._schemas.update(schemas)

    def schema_for(self, tool: str) -> Any:
        return self._schemas.get(tool)

    def requested_call_id(self, tool: str, args_hash: str) -> str | None:
        return self._requested.pop((tool, args_hash), None)

    def __repr__(self) -> str:
        return f"Run(name={self.name!r}, run_id={self.run_id!r})"


def current_run() -> Run | None:
    """The innermost run of the current context, if any."""
    value = otel_context.get_value(RUN_CONTEXT_KEY)
    return value if isinstance(value, Run) else None


class _Scope:
    """A span scope usable as ``with``, ``async with`` and as a decorator of sync/async functions."""

    def _enter(self) -> Any:
        raise NotImplementedError

    def _exit(self, exc: BaseException | None) -> None:
        raise NotImplementedError

    def _fresh(self) -> _Scope:
        """A new scope with the same arguments (each decorated call gets its own span)."""
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self._enter()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._exit(exc)

    async def __aenter__(self) -> Any:
        return self._enter()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._exit(exc)

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh():
                    return await func(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return func(*args, **kwargs)

        return cast(F, wrapper)


class _RunScope(_Scope):
    def __init__(
        self,
        name: str,
        entities: Mapping[str, str] | None,
        budget: Budget | None,
        conversation_id: str | None,
        attributes: Mapping[str, Any] | None,
    ) -> None:
        self._args = (name, entities, budget, conversation_id, attributes)
        self._run: Run | None = None
        self._token: object | None = None

    def _fresh(self) -> _RunScope:
        return _RunScope(*self._args)

    def _enter(self) -> Run:
        name, entities, budget, conversation_id, attributes = self._args
        rt = _runtime.get()
        parent = current_run()
        run_id = "run_" + uuid.uuid4().hex[:20]
        if not _runtime.enabled():
            span: Span = trace.INVALID_SPAN
            self._run = Run(name, run_id, span, parent, budget)
            self._token = otel_context.attach(otel_context.set_value(RUN_CONTEXT_KEY, self._run))
            return self._run
        effective = budget if budget is not None else (None if rt.config.budget.is_empty() else rt.config.budget)
        attrs: dict[str, Any] = {
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
            sc.GEN_AI_AGENT_NAME: name,
            sc.RUN_ID: run_id,
        }
        if conversation_id:
            attrs[sc.GEN_AI_CONVERSATION_ID] = conversation_id
        declared = _declared_entities(entities)
        for kind, value in declared.items():
            attrs[sc.RUN_ENTITY_PREFIX + kind] = value if value is not None else REDACTED
        if effective is not None:
            attrs.update(effective.to_attributes())
        if attributes:
            attrs.update(attributes)
        start = time.time_ns()
        span = rt.tracer.start_span(f"{sc.OP_INVOKE_AGENT} {name}", kind=SpanKind.INTERNAL,
                                    attributes=attrs, start_time=start)
        run = Run(name, run_id, span, parent, effective)
        try:
            rt.engine.open_run(
                run.key,
                parent_run_key=parent.key if parent else None,
                agent_name=name,
                entities={k: v for k, v in declared.items() if v is not None},
                budget=effective,
                start_ns=start,
            )
        except Exception as exc:  # never break the user's run
            _runtime.internal_error("run.open", exc)
        ctx = otel_context.set_value(RUN_CONTEXT_KEY, run, trace.set_span_in_context(span))
        self._token = otel_context.attach(ctx)
        self._run = run
        return run

    def _exit(self, exc: BaseException | None) -> None:
        run = self._run
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        if run is None or run.span is trace.INVALID_SPAN:
            return
        try:
            _finish_run(run, exc)
        except Exception as err:
            _runtime.internal_error("run.finish", err)
            run.span.end()


def _declared_entities(entities: Mapping[str, str] | None) -> dict[str, str | None]:
    """``run(entities=...)`` as strings; ``None`` for a credential (``{"api_key": ...}``, ``sk-...``).

    A credential is no entity: it is not grounded against and its attribute says ``[REDACTED]``.
    """
    out: dict[str, str | None] = {}
    for kind, value in (entities or {}).items():
        k, v = str(kind), str(value)
        out[k] = None if credential_key(k) or secret_value(v) else v
    return out


def _finish_run(run: Run, exc: BaseException | None) -> None:
    rt = _runtime.get()
    span = run.span
    reason = run.stop_reason
    if reason is None:
        reason = StopReason.SUCCESS if exc is None else stop_reason_for(exc)
    end = time.time_ns()
    summary = rt.engine.close_run(run.key, stop_reason=reason.value, end_ns=end)
    attrs: dict[str, Any] = {sc.RUN_STOP_REASON: reason.value}
    if rt.inline:
        attrs[sc.ANOMALY_EVALUATED] = True
    if run._detail:
        attrs[sc.RUN_STOP_DETAIL] = redact_text(run._detail)
    if summary is not None:
        attrs.update(
            {
                sc.RUN_STEPS: summary.steps,
                sc.RUN_LLM_CALLS: summary.llm_calls,
                sc.RUN_TOOL_CALLS: summary.tool_calls,
                sc.RUN_INPUT_TOKENS: summary.input_tokens,
                sc.RUN_OUTPUT_TOKENS: summary.output_tokens,
                sc.RUN_COST_USD: summary.cost_usd,
                sc.RUN_FAILURE_MODE: str(summary.failure_mode),
            }
        )
        # Findings on the run span itself: refused calls, a time budget passed at the end.
        # (The engine keys the run by this span's id, so these findings already name it.)
        if rt.inline and summary.findings:
            flag_attrs, events, new = anomaly_update(None, None, summary.findings)
            attrs.update(flag_attrs)
            for name, event_attrs in events:
                span.add_event(name, event_attrs)
            rt.reporter.report(new, _context_for(span, run))
        if rt.inline:  # a clean run says so too: an empty flag list and a count of 0
            attrs.update(run_summary_attributes(summary))
    span.set_attributes(attrs)
    if exc is not None:
        record_error(span, exc)
        span.set_attribute(sc.ERROR_TYPE, error_type(exc))
    elif reason is not StopReason.SUCCESS:
        span.set_status(Status(StatusCode.ERROR, f"stopped: {reason.value}"))
    span.end(end_time=end)
    metric_attrs = {
        sc.GEN_AI_AGENT_NAME: run.name,
        sc.RUN_STOP_REASON: reason.value,
    }
    if summary is not None:
        metric_attrs[sc.RUN_FAILURE_MODE] = str(summary.failure_mode)
    rt.instruments.runs.add(1, metric_attrs)
    STORE.forget(run.key)  # the gateway's remembered results of this run
    if rt.config.call_log:
        ctx = span.get_span_context()
        calllog.emit("run", {
            "run_id": run.run_id, "trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"),
            "agent": run.name, "stop_reason": reason.value,
            "failure_mode": str(summary.failure_mode) if summary is not None else None,
            "steps": summary.steps if summary is not None else None,
            "tool_calls": summary.tool_calls if summary is not None else None,
            "llm_calls": summary.llm_calls if summary is not None else None,
            "elapsed_s": round((end - run_start_ns(span)) / 1e9, 3),
            "cost_usd": summary.cost_usd if summary is not None else None,
            "flags": list(summary.flags) if summary is not None and summary.flags else None,
        }, rt.config.call_log_include)


def run_start_ns(span: Span) -> int:
    start = getattr(span, "start_time", None)
    return start if isinstance(start, int) else time.time_ns()


def _context_for(span: Span, run: Run | None) -> Any:
    from .otel.reporting import AnomalyContext

    ctx = span.get_span_context()
    return AnomalyContext(
        trace_id=format(ctx.trace_id, "032x"),
        span_id=format(ctx.span_id, "016x"),
        span_name=getattr(span, "name", ""),
        run_key=run.run_id if run else None,
        agent_name=run.name if run else None,
    )


class _PhaseScope(_Scope):
    def __init__(self, name: str) -> None:
        self._name = name
        self._span: Span | None = None
        self._token: object | None = None

    def _fresh(self) -> _PhaseScope:
        return _PhaseScope(self._name)

    def _enter(self) -> Span:
        if not _runtime.enabled():
            return trace.INVALID_SPAN
        rt = _runtime.get()
        span = rt.tracer.start_span(self._name, kind=SpanKind.INTERNAL, attributes={sc.PHASE: self._name})
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def _exit(self, exc: BaseException | None) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        span = self._span
        if span is None:
            return
        if exc is not None:
            record_error(span, exc)
            span.set_attribute(sc.ERROR_TYPE, error_type(exc))
        span.end()


def run(
    name: str,
    *,
    entities: Mapping[str, str] | None = None,
    budget: Budget | None = None,
    conversation_id: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Any:
    """Open one agent run span (``invoke_agent {name}``).

    Use as ``with``/``async with`` (yields a :class:`Run` with ``.run_id`` and
    ``.stop()``) or as a decorator of sync and async functions. ``entities``
    names the run's subject, e.g. ``{"customer": "cust_789"}``; ``budget``
    limits it (default: ``agent.budgets`` from configuration, if any).
    """
    return _RunScope(name, entities, budget, conversation_id, attributes)


def phase(name: str) -> Any:
    """A group span (plan, retrieve, execute, validate) inside a run."""
    return _PhaseScope(name)
