"""``AnomalyProcessor``: run the detectors on every span an SDK ``TracerProvider`` ends.

It wraps another ``SpanProcessor`` (usually a ``BatchSpanProcessor``) and hands
it every span, tagged with the contract's anomaly attributes and events when
the detectors found something. The SDK freezes a span's attributes when it
ends, so a tagged span is an enriched copy (:mod:`.enrich`); a span with no new
finding is forwarded as is, at no cost but the lookups.

Runs are resolved as spans start, from the span tree this process sees:

* a *run span* is one the conventions call an agent or workflow
  (``gen_ai.operation.name`` ``invoke_agent``/``invoke_workflow``, OpenInference
  ``AGENT``, OpenLLMetry ``agent``/``workflow``);
* every other span belongs to the run of its nearest run ancestor, else to the
  *local root*: the topmost span of its trace seen in this process (a span
  whose parent is remote is a local root), which then stands for the run;
* a span whose kind attribute is set just after it starts (OpenLLMetry's
  decorators do this) is looked at again when its first child starts.

Runs are opened in the engine lazily, when their first LLM or tool span ends,
so traces without GenAI spans cost a dictionary insert and pop per span. When a
run span ends the run is closed and the span gets the run summary (flags,
count, fault origin, failure mode); a local root that stood for a run gets the
summary only when the run had anomalies.

Nothing here raises into the tracer: any failure forwards the span unflagged,
is counted in :attr:`AnomalyProcessor.stats` and is logged once per kind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .. import semconv as sc
from ..budget import Budget
from ..config import Config, load_config
from ..engine.record import Finding, Kind, RunSummary, SpanRecord
from .enrich import enrich
from .findings import anomaly_update, run_summary_attributes
from .normalize import build_record, detect_kind, run_entities
from .reporting import AnomalyContext, FindingReporter, OnAnomaly

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from ..engine.engine import Engine

__all__ = ["AnomalyProcessor"]

_logger = logging.getLogger(__name__)

DEFAULT_MAX_OPEN_SPANS = 100_000


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


class _Entry:
    """What ``on_start`` learnt about a span that has not ended yet."""

    __slots__ = ("hex", "live", "parent_hex", "run", "trace_id")

    def __init__(self, trace_id: int, hex_id: str, parent_hex: str | None, run: _Run, live: Any) -> None:
        self.trace_id = trace_id
        self.hex = hex_id
        self.parent_hex = parent_hex
        self.run = run
        self.live = live  # set while the span's kind is still unknown (looked at again later)


class AnomalyProcessor(SpanProcessor):
    """Wraps ``delegate``; every span reaches it, with anomaly attributes and events added.

    ``engine`` defaults to a new :class:`~agentwatch.engine.engine.Engine` on
    ``config``; ``on_anomaly(finding, context)`` is called once per new finding;
    ``agentwatch.anomalies`` is counted on ``meter_provider`` (else the global
    one). At most ``max_open_spans`` started-but-unended spans are tracked; the
    oldest is forgotten beyond that and counted as ``spans_evicted``.
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
        self._config = load_config(config)
        if engine is None:
            from ..engine.engine import Engine

            engine = Engine(self._config)
        self._engine = engine
        self._reporter = FindingReporter(meter_provider, on_anomaly, log=self._config.anomaly.log_findings)
        self._max_open = max(1, int(max_open_spans))
        self._open: dict[int, _Entry] = {}
        self._lock = threading.Lock()  # engine calls: one run's spans may end on several threads
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "spans_started",
                "spans_ended",
                "spans_evaluated",
                "spans_flagged",
                "findings",
                "runs_opened",
                "runs_closed",
                "spans_evicted",
                "spans_untracked",
                "parent_cycles",
                "clock_skew",
                "errors",
            ),
            0,
        )
        self._logged: set[str] = set()

    # ------------------------------------------------------------------ SpanProcessor

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._delegate.on_start(span, parent_context=parent_context)
        try:
            self._track(span)
        except Exception as exc:
            self._problem("on_start", exc)

    def _on_ending(self, span: Span) -> None:
        hook = getattr(self._delegate, "_on_ending", None)
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
        out["spans_open"] = len(self._open)
        out["callback_errors"] = self._reporter.callback_errors
        try:
            for key, value in dict(self._engine.stats).items():
                out[f"engine.{key}"] = value
        except Exception:
            pass
        return out

    # ------------------------------------------------------------------ start

    def _track(self, span: Span) -> None:
        counts = self._counts
        counts["spans_started"] += 1
        ctx = span.get_span_context()
        span_id = ctx.span_id
        trace_id = ctx.trace_id
        hex_id = format(span_id, "016x")
        parent = span.parent
        entry = None
        if parent is not None and not parent.is_remote:
            entry = self._open.get(parent.span_id)
            if entry is not None and (entry.trace_id != trace_id or parent.span_id == span_id):
                counts["parent_cycles"] += 1
                entry = None
        attrs = span.attributes or {}
        kind = detect_kind(attrs)
        start_ns = span.start_time or 0
        if entry is not None:
            if entry.live is not None:
                self._settle(entry)
            run = entry.run
            parent_hex: str | None = entry.hex
            if kind is Kind.RUN:
                run = _Run(hex_id, run.trace_hex, run, span, start_ns)
                run.declared = True
        else:
            # A local root: the topmost span of this trace in this process.
            parent_hex = format(parent.span_id, "016x") if parent is not None else None
            run = _Run(hex_id, format(trace_id, "032x"), None, span, start_ns)
            run.declared = kind is Kind.RUN
        live = span if kind is None else None
        opened = self._open
        if len(opened) >= self._max_open:
            try:
                del opened[next(iter(opened))]
                counts["spans_evicted"] += 1
            except (StopIteration, KeyError, RuntimeError):
                pass
        opened[span_id] = _Entry(trace_id, hex_id, parent_hex, run, live)

    def _settle(self, entry: _Entry) -> None:
        """Look again at a span whose kind was unknown at start (its first child is starting)."""
        live = entry.live
        entry.live = None
        if detect_kind(live.attributes or {}) is not Kind.RUN:
            return
        run = entry.run
        if run.key == entry.hex:  # a local root that turns out to be a run span
            run.declared = True
            return
        promoted = _Run(entry.hex, run.trace_hex, run, live, live.start_time or 0)
        promoted.declared = True
        entry.run = promoted

    # ------------------------------------------------------------------ end

    def _evaluate(self, span: ReadableSpan) -> ReadableSpan:
        counts = self._counts
        counts["spans_ended"] += 1
        ctx = span.get_span_context()
        entry = self._open.pop(ctx.span_id, None) if ctx is not None else None
        if entry is None or ctx is None or entry.trace_id != ctx.trace_id:
            counts["spans_untracked"] += 1
            return span
        attrs = span.attributes or {}
        kind = detect_kind(attrs) or Kind.OTHER
        run = entry.run
        owns_run = run.key == entry.hex
        if kind is Kind.RUN and not owns_run:
            # Became a run span after its children started (or had none): a run of its own.
            run = _Run(entry.hex, run.trace_hex, run, span, span.start_time or 0)
            run.declared = True
            owns_run = True
        flags_present = attrs.get(sc.ANOMALY_FLAGS)
        if (
            (kind is Kind.OTHER or kind is Kind.PHASE)
            and not run.opened
            and not (owns_run and run.declared)
            and flags_present is None
        ):
            return span  # nothing to detect: not an agent span, no agent run around it

        start_ns = span.start_time or 0
        end_ns = span.end_time or start_ns
        if end_ns < start_ns:
            counts["clock_skew"] += 1
        status = span.status
        record = build_record(
            attrs,
            kind,
            trace_id=run.trace_hex,
            span_id=entry.hex,
            parent_id=entry.parent_hex,
            name=span.name,
            start_ns=start_ns,
            end_ns=end_ns,
            is_error=status is not None and not status.is_ok and not status.is_unset,
        )
        counts["spans_evaluated"] += 1

        findings: list[Finding] = []
        summary: RunSummary | None = None
        with self._lock:
            if kind is Kind.RUN:
                run.agent_name = run.agent_name or record.agent_name
                self._open_run(run, attrs)
                record.run_key = run.key
                record.parent_run_key = run.parent.key if run.parent is not None else None
                summary = self._close_run(run, record)
            else:
                if kind is not Kind.OTHER or run.opened:
                    self._open_run(run, None)
                record.run_key = run.key
                record.parent_run_key = run.parent.key if run.parent is not None else None
                record.agent_name = record.agent_name or run.agent_name
                if run.opened:
                    findings = self._engine.process(record)
                if owns_run and run.opened:
                    summary = self._close_run(run, record)
        if summary is not None:
            findings = [*findings, *summary.findings]
        if not findings and summary is None:
            return span
        return self._tag(span, record, attrs, findings, summary, run)

    def _open_run(self, run: _Run, attrs: Mapping[str, Any] | None) -> None:
        """Open ``run`` (and its unopened ancestors) in the engine; called under the lock."""
        if run.opened:
            return
        if run.parent is not None and not run.parent.opened:
            self._open_run(run.parent, None)
        entities: dict[str, str] | None = None
        budget = None
        if run.declared:
            source = attrs if attrs is not None else (run.span.attributes if run.span is not None else None)
            if source is not None:
                entities = run_entities(source) or None
                budget = Budget.from_attributes(source)
                if run.agent_name is None:
                    name = source.get(sc.GEN_AI_AGENT_NAME)
                    run.agent_name = name if isinstance(name, str) and name else None
        self._engine.open_run(
            run.key,
            parent_run_key=run.parent.key if run.parent is not None else None,
            agent_name=run.agent_name,
            entities=entities,
            budget=budget,
            start_ns=run.start_ns,
        )
        run.opened = True
        run.span = None
        self._counts["runs_opened"] += 1

    def _close_run(self, run: _Run, record: SpanRecord) -> RunSummary | None:
        summary = self._engine.close_run(run.key, stop_reason=record.stop_reason, end_ns=record.end_ns)
        self._counts["runs_closed"] += 1
        if summary is not None and not run.declared and not summary.flags and not summary.findings:
            return None  # a local root standing in for a run: summarised only when something was found
        return summary

    def _tag(
        self,
        span: ReadableSpan,
        record: SpanRecord,
        attrs: Mapping[str, Any],
        findings: list[Finding],
        summary: RunSummary | None,
        run: _Run,
    ) -> ReadableSpan:
        own = [f for f in findings if not f.span_id or f.span_id == record.span_id]
        severity = attrs.get(sc.ANOMALY_SEVERITY)
        new_attrs, events, new = anomaly_update(
            record.flags_present, severity if isinstance(severity, str) else None, own
        )
        context = AnomalyContext(
            trace_id=record.trace_id,
            span_id=record.span_id,
            span_name=record.name,
            run_key=run.key,
            agent_name=record.agent_name or run.agent_name,
        )
        elsewhere = [f for f in findings if f.span_id and f.span_id != record.span_id]
        if new or elsewhere:
            self._counts["findings"] += len(new) + len(elsewhere)
            self._reporter.report([*new, *elsewhere], context)
        if summary is not None:
            existing = attrs.get(sc.RUN_ANOMALY_FLAGS)
            summary_attrs = run_summary_attributes(
                summary, existing if isinstance(existing, (tuple, list)) else None
            )
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
