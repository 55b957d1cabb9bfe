"""``AnomalyProcessor``: run the detectors on every span an SDK ``TracerProvider`` ends.

It wraps another ``SpanProcessor`` (usually a ``BatchSpanProcessor``) and hands
it every span, tagged with the contract's anomaly attributes and events when
the detectors found something. The SDK freezes a span's attributes when it
ends, so a tagged span is an enriched copy (:mod:`.enrich`); a span with no new
finding is forwarded as is, at no cost but the lookups.

Runs are resolved from the span tree this process sees. ``on_start`` only
links each span to its parent's entry; a span's kind is read when it is first
needed (when its first child ends, or when it ends itself), by which time the
instrumentation has set it (OpenLLMetry's decorators set it just after start):

* a *run span* is one the conventions call an agent or workflow
  (``gen_ai.operation.name`` ``invoke_agent``/``invoke_workflow``, OpenInference
  ``AGENT``, OpenLLMetry ``agent``/``workflow``);
* every other span belongs to the run of its nearest run ancestor, else to the
  *local root*: the topmost span of its trace seen in this process (a span
  whose parent is remote is a local root), which then stands for the run;
* except that an LLM or tool span no run span holds, carrying
  ``gen_ai.conversation.id``, belongs to that conversation's run across
  traces (contract §8; see :mod:`.conversations`).

Runs are opened in the engine lazily, when their first LLM or tool span ends,
so traces without GenAI spans cost a dictionary insert and pop per span. When a
run span ends the run is closed and the span gets the run summary (flags,
count, fault origin, failure mode). A local root that only stood in for a run
is closed to free its state but gets no summary, as in the exporter and the
collector.

Nothing here raises into the tracer: any failure forwards the span unflagged,
is counted in :attr:`AnomalyProcessor.stats` and is logged once per kind.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext, StatusCode

from .. import semconv as sc
from ..budget import Budget
from ..config import Config
from ..engine.record import Finding, Kind, RunSummary, SpanRecord
from .conversations import conversation_key
from .enrich import enrich
from .findings import anomaly_update, run_summary_attributes
from .normalize import (
    OPERATION_KIND as _OPERATION_KIND,
)
from .normalize import (
    build_record,
    detect_kind,
    kind_from_name,
    run_agent_name,
    run_entities,
    run_input,
    span_attributes,
)
from .reporting import AnomalyContext, OnAnomaly, with_engine_stats
from .wiring import detection

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from ..engine.engine import Engine

__all__ = ["AnomalyProcessor"]

_logger = logging.getLogger(__name__)

DEFAULT_MAX_OPEN_SPANS = 100_000


_OPERATION = sc.GEN_AI_OPERATION_NAME
_RUN = Kind.RUN
_OTHER = Kind.OTHER
_PHASE = Kind.PHASE
_TOOL = Kind.TOOL
_LLM = Kind.LLM
_FLAGS = sc.ANOMALY_FLAGS
_EVALUATED = sc.ANOMALY_EVALUATED
_ERROR = StatusCode.ERROR


class _Run:
    """One run as this process sees it: a run span, or a local root standing for one."""

    __slots__ = ("agent_name", "declared", "key", "opened", "parent", "span", "start_ns", "trace_hex")

    def __init__(self, key: str, trace_hex: str, parent: _Run | None, span: Any, start_ns: int) -> None:
        self.key = key
        self.trace_hex = trace_hex
        self.parent = parent
        self.span = span  # the live span, read when the run is opened; dropped after
        self.start_ns = start_ns
        self.declared = False  # a run span (not a local root standing in for one)
        self.opened = False
        self.agent_name: str | None = None


# What on_start learnt about a span that has not ended yet: a list, not an object,
# because one is made per span and a list is four times cheaper to make.
# [trace id, parent's entry (None for a local root), the live span,
#  run of the span's children once resolved, span id hex once formatted]
_Entry = list
_TRACE, _PARENT, _LIVE, _RUN_OF, _HEX = range(5)


def _span_hex(span_id: int) -> str:
    return "%016x" % span_id  # noqa: UP031 - twice as fast as format() or an f-string


def _trace_hex(trace_id: int) -> str:
    return "%032x" % trace_id  # noqa: UP031


def _hex(entry: _Entry) -> str:
    """The entry's span id as 16 hex digits, formatted once."""
    value = entry[_HEX]
    if value is None:
        value = entry[_HEX] = _span_hex(entry[_LIVE].get_span_context().span_id)
    return value


class AnomalyProcessor(SpanProcessor):
    """Wraps ``delegate``; every span reaches it, with anomaly attributes and events added.

    ``engine`` defaults to a new :class:`~agentwatch.engine.engine.Engine` on
    ``config``; ``on_anomaly(finding, context)`` is called once per new finding;
    ``agentwatch.anomalies`` is counted on ``meter_provider`` (else the global
    one). At most ``max_open_spans`` started-but-unended spans are tracked; the
    oldest is forgotten beyond that and counted as ``spans_evicted``: when it
    ends it is forwarded marked ``agentwatch.anomaly.evaluated=false``.
    """

    def __init__(
        self,
        delegate: SpanProcessor,
        *,
        config: Config | Mapping[str, Any] | str | None = None,
        engine: Engine | None = None,
        on_anomaly: OnAnomaly | None = None,
        meter_provider: MeterProvider | None = None,
        max_open_spans: int = DEFAULT_MAX_OPEN_SPANS,
    ) -> None:
        self._delegate = delegate
        self._delegate_on_ending = getattr(delegate, "_on_ending", None)
        self._config, self._engine, self._extractor, self._reporter = detection(
            config, engine, on_anomaly, meter_provider
        )
        self._max_open = max(1, int(max_open_spans))
        self._open: dict[int, _Entry] = {}
        self._evaluated = 0
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "spans_flagged",
                "findings",
                "runs_opened",
                "runs_closed",
                "spans_evicted",
                "spans_untracked",
                "spans_evaluated_inline",
                "conversation_spans",
                "parent_cycles",
                "clock_skew",
                "errors",
            ),
            0,
        )
        self._logged: set[str] = set()

    # ------------------------------------------------------------------ SpanProcessor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._delegate.on_start(span, parent_context)
        try:
            # Only link the span to its parent's entry: kinds and runs are resolved
            # when first needed, so a leaf span costs one list and one dict insert here.
            ctx: SpanContext = span._context  # type: ignore[assignment]  # never None on an SDK span
            span_id = ctx.span_id
            trace_id = ctx.trace_id
            parent = span._parent
            opened = self._open
            entry = None
            if parent is not None and not parent.is_remote:
                entry = opened.get(parent.span_id)
                if entry is not None and (entry[_TRACE] != trace_id or parent.span_id == span_id):
                    self._counts["parent_cycles"] += 1
                    entry = None
            if len(opened) >= self._max_open:
                self._evict_oldest()
            opened[span_id] = [trace_id, entry, span, None, None]
        except Exception as exc:
            self._problem("on_start", exc)

    def _on_ending(self, span: Span) -> None:
        # The SDK's private hook before on_end (1.30+); forwarded so a delegate relying on it works.
        hook = self._delegate_on_ending
        if hook is not None:
            hook(span)

    def on_end(self, span: ReadableSpan) -> None:
        out = span
        try:
            out = self._evaluate(span)
        except Exception as exc:
            self._problem("on_end", exc)
        self._delegate.on_end(out)

    def shutdown(self) -> None:
        self._delegate.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._delegate.force_flush(timeout_millis)

    @property
    def stats(self) -> dict[str, int]:
        """This processor's counters, plus the engine's prefixed ``engine.``."""
        out = dict(self._counts)
        out["spans_evaluated"] = self._evaluated
        out["spans_open"] = len(self._open)
        out["callback_errors"] = self._reporter.callback_errors
        return with_engine_stats(out, self._engine)

    # ------------------------------------------------------------------ start

    def _evict_oldest(self) -> None:
        try:
            del self._open[next(iter(self._open))]
            self._counts["spans_evicted"] += 1
        except (StopIteration, KeyError, RuntimeError):
            pass

    def _children_run(self, entry: _Entry) -> _Run:
        """The run that ``entry``'s children belong to (resolved once, then remembered).

        Walks up to the nearest entry already resolved (or the local root), then
        resolves the entries on the way down: a run span opens a run nested in
        the one above it, a local root stands in for one, any other span
        passes its parent's on.
        """
        path: list[_Entry] = []
        node: _Entry | None = entry
        run: _Run | None = None
        while node is not None:
            run = node[_RUN_OF]
            if run is not None:
                break
            path.append(node)
            node = node[_PARENT]
        for item in reversed(path):
            live = item[_LIVE]
            _hex(item)  # children will want it as their parent id
            is_run = (detect_kind(span_attributes(live)) or kind_from_name(live.name)) is _RUN
            if is_run or run is None:
                trace_hex = run.trace_hex if run is not None else _trace_hex(item[_TRACE])
                run = _Run(_hex(item), trace_hex, run, live, live.start_time or 0)
                run.declared = is_run
            item[_RUN_OF] = run
        assert run is not None
        return run

    # ------------------------------------------------------------------ end

    def _evaluate(self, span: ReadableSpan) -> ReadableSpan:
        ctx = span._context
        entry = self._open.pop(ctx.span_id, None) if ctx is not None else None
        if entry is None or ctx is None or entry[_TRACE] != ctx.trace_id:
            # Started before this processor, or forgotten when the open-span table
            # overflowed: its run is unknown, so it is marked as not evaluated.
            self._counts["spans_untracked"] += 1
            return enrich(span, {_EVALUATED: False})
        try:
            attrs = span._attributes._dict  # type: ignore[union-attr]  # see span_attributes
        except AttributeError:
            attrs = span_attributes(span)
        if attrs.get(_EVALUATED) is True:
            # agentwatch's own live guard already ran the same engine on this span
            # inside the instrumented process: forward it as it is.
            self._counts["spans_evaluated_inline"] += 1
            return span
        op = attrs.get(_OPERATION)
        kind = _OPERATION_KIND.get(op) if op.__class__ is str else None
        if kind is None:
            kind = detect_kind(attrs) or kind_from_name(span.name) or _OTHER
        parent_entry = entry[_PARENT]
        if kind is _TOOL and parent_entry is not None and _same_tool_call(parent_entry[_LIVE], attrs):
            kind = _OTHER  # the server side of the call its parent already stands for (an MCP server)
        hex_id = entry[_HEX]
        if hex_id is None:
            hex_id = entry[_HEX] = _span_hex(ctx.span_id)
        resolved = entry[_RUN_OF]  # set when a child needed it
        if kind is _OTHER or kind is _PHASE:
            # Not an agent span: its only business is to close the run it stood in for.
            if resolved is None or not resolved.opened or resolved.key != hex_id:
                return span
            run = resolved
        elif kind is _RUN:
            if resolved is not None and resolved.key == hex_id:
                run = resolved
            else:  # a run span whose children never asked, or that became one late
                parent_run = resolved
                if parent_run is None and parent_entry is not None:
                    parent_run = parent_entry[_RUN_OF] or self._children_run(parent_entry)
                trace_hex = parent_run.trace_hex if parent_run is not None else _trace_hex(ctx.trace_id)
                run = _Run(hex_id, trace_hex, parent_run, span, span.start_time or 0)
            run.declared = True
        elif resolved is not None:
            run = resolved
        elif parent_entry is not None:
            run = parent_entry[_RUN_OF] or self._children_run(parent_entry)
        else:  # an LLM or tool span that is its own local root
            run = _Run(hex_id, _trace_hex(ctx.trace_id), None, span, span.start_time or 0)
        owns_run = run.key == hex_id
        if parent_entry is not None:
            parent_hex: str | None = parent_entry[_HEX] or _hex(parent_entry)
        else:
            parent_ctx = span.parent
            parent_hex = _span_hex(parent_ctx.span_id) if parent_ctx is not None else None

        try:  # the SDK's fields, read directly: properties cost a call each
            start_ns = span._start_time or 0
            end_ns = span._end_time or start_ns
            name = span._name
            status = span._status
        except AttributeError:
            start_ns = span.start_time or 0
            end_ns = span.end_time or start_ns
            name = span.name
            status = span.status
        if end_ns < start_ns:
            self._counts["clock_skew"] += 1
        # An LLM or tool span no run span holds joins its conversation's run across traces (§8).
        conversation = None
        if (kind is _LLM or kind is _TOOL) and not run.declared:
            conversation = conversation_key(attrs)
        record = build_record(
            attrs,
            kind,
            run.trace_hex,
            hex_id,
            parent_hex,
            name,
            start_ns,
            end_ns,
            status is not None and status.status_code is _ERROR,
            self._extractor,
            run.key if conversation is None else conversation,
            run.parent.key if run.parent is not None and conversation is None else None,
            False,  # a run's entities and budget are read once, when it is opened
        )
        self._evaluated += 1
        findings: list[Finding] = []
        summary: RunSummary | None = None
        # The engine is thread-safe and open_run is idempotent: no lock of our own needed.
        if kind is _RUN:
            if run.agent_name is None:
                run.agent_name = record.agent_name
            self._open_run(run, attrs)
            summary = self._close_run(run, record)
        elif conversation is not None:
            # The engine opens the conversation's run lazily (configured budgets apply) and
            # forgets it by its own LRU and TTL: there is no run span to close it.
            self._counts["conversation_spans"] += 1
            findings = self._engine.process(record)
            if owns_run and run.opened:  # the local root of spans that did open its stand-in run
                self._close_run(run, record)
        else:
            if not run.opened and kind is not _OTHER and kind is not _PHASE:
                self._open_run(run, None)
            # No run-name fallback on the record: the engine reads a call's agent name as its
            # identity (drift per agent); the report below falls back to the run's name itself.
            if run.opened:
                findings = self._engine.process(record)
                if owns_run:
                    summary = self._close_run(run, record)
        if summary is not None:
            if summary.findings:
                findings = [*findings, *summary.findings]
        elif not findings:
            return span
        return self._tag(span, record, attrs, findings, summary, run)

    def _open_run(self, run: _Run, attrs: Mapping[str, Any] | None) -> None:
        """Open ``run`` (and its unopened ancestors) in the engine.

        Two threads may race to open one run: ``Engine.open_run`` is idempotent.
        """
        if run.opened:
            return
        if run.parent is not None and not run.parent.opened:
            self._open_run(run.parent, None)
        entities: dict[str, str] | None = None
        budget = None
        input_entities = None
        if run.declared:
            source = attrs
            if source is None and run.span is not None:
                source = span_attributes(run.span)
            if source is not None:
                entities = run_entities(source) or None
                budget = Budget.from_attributes(source)
                # The run's own input grounds ids, as when a whole trace is evaluated.
                asked = run_input(source)
                if asked is not None:
                    input_entities = self._extractor.extract(asked)
                if run.agent_name is None:
                    span_name = getattr(run.span, "name", "") if run.span is not None else ""
                    run.agent_name = run_agent_name(source, span_name if isinstance(span_name, str) else "")
        self._engine.open_run(
            run.key,
            parent_run_key=run.parent.key if run.parent is not None else None,
            agent_name=run.agent_name,
            entities=entities,
            budget=budget,
            start_ns=run.start_ns,
            input_entities=input_entities,
        )
        run.opened = True
        run.span = None
        self._counts["runs_opened"] += 1

    def _close_run(self, run: _Run, record: SpanRecord) -> RunSummary | None:
        summary = self._engine.close_run(run.key, stop_reason=record.stop_reason, end_ns=record.end_ns)
        self._counts["runs_closed"] += 1
        # A local root only stood in for a run: closing frees the state, and like the
        # exporter and the collector it gets no run summary (it is not a run span).
        return summary if run.declared else None

    def _tag(
        self,
        span: ReadableSpan,
        record: SpanRecord,
        attrs: Mapping[str, Any],
        findings: list[Finding],
        summary: RunSummary | None,
        run: _Run,
    ) -> ReadableSpan:
        span_id = record.span_id
        own = [f for f in findings if not f.span_id or f.span_id == span_id]
        # Findings about another span (none today: the engine reports on the span it is
        # given) are still reported, though no span can carry them any more.
        elsewhere = [f for f in findings if f.span_id and f.span_id != span_id]
        severity = attrs.get(sc.ANOMALY_SEVERITY)
        new_attrs, events, new = anomaly_update(
            record.flags_present, severity if isinstance(severity, str) else None, own
        )
        if new or elsewhere:
            self._counts["findings"] += len(new) + len(elsewhere)
            context = AnomalyContext(
                trace_id=record.trace_id,
                span_id=span_id,
                span_name=record.name,
                run_key=run.key,
                agent_name=record.agent_name or run.agent_name,
            )
            self._reporter.report([*new, *elsewhere], context)
        if summary is not None:
            summary_attrs = run_summary_attributes(summary, attrs.get(sc.RUN_ANOMALY_FLAGS))
            changed = {k: v for k, v in summary_attrs.items() if attrs.get(k) != v}
            new_attrs.update(changed)
        if not new_attrs and not events:
            return span
        if new:
            self._counts["spans_flagged"] += 1
        return enrich(span, new_attrs, events)

    # ------------------------------------------------------------------ problems

    def _problem(self, where: str, exc: BaseException) -> None:
        self._counts["errors"] += 1
        key = f"{where}:{type(exc).__name__}"
        self._counts[f"errors.{where}"] = self._counts.get(f"errors.{where}", 0) + 1
        if key not in self._logged:
            self._logged.add(key)
            _logger.warning(
                "agentwatch: anomaly detection failed in %s; the span is forwarded unflagged "
                "(further %s errors are counted, not logged)",
                where,
                type(exc).__name__,
                exc_info=exc,
            )


def _same_tool_call(parent: Any, attrs: Mapping[str, Any]) -> bool:
    """Whether ``parent`` is a tool span of the same tool (this span is then its server side)."""
    parent_attrs = getattr(parent, "attributes", None)
    if not parent_attrs or parent_attrs.get(_OPERATION) != sc.OP_EXECUTE_TOOL:
        return False
    name = attrs.get(sc.GEN_AI_TOOL_NAME)
    return name is not None and parent_attrs.get(sc.GEN_AI_TOOL_NAME) == name
