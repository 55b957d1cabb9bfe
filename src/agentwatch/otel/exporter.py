"""``AnomalyExporter``: run the detectors on spans as they are exported.

It wraps a ``SpanExporter`` (by default the OTLP exporter the standard
``OTEL_EXPORTER_OTLP_*`` variables choose) and is registered as the
``opentelemetry_traces_exporter`` entry point ``agentwatch``, so
``OTEL_TRACES_EXPORTER=agentwatch opentelemetry-instrument python app.py``
tags spans with no code change.

An exporter sees only ended spans, children before their parents, spread over
any number of batches. The rule:

* Spans are grouped by trace. A trace's *local roots* are its spans whose
  parent is absent or remote (in another process).
* When a local root arrives, it and every held span that descends from it are
  evaluated together with ``Engine.evaluate_trace`` (so runs, their budgets and
  their summaries see the whole local tree) and passed on, tagged.
* Other spans are held, for at most ``straggler_seconds`` counted from the
  oldest held span of their trace. Then the trace is evaluated as far as it
  has arrived and its held spans are passed on; the normalised records of the
  spans passed on are kept, so the evaluation when the root finally arrives
  still counts them (run totals, loops) though it can no longer tag them.
* A span that ends after its local root was passed on (a fire-and-forget
  child) waits out ``straggler_seconds`` like any other and is evaluated with
  what is still known of its trace.
* LLM and tool spans that no run span holds and that carry
  ``gen_ai.conversation.id`` are evaluated in their conversation's run, which
  lasts across traces (contract §8; see :mod:`.conversations`), instead of in
  their trace's.
* Expiry is checked on every ``export`` call; ``force_flush`` and ``shutdown``
  evaluate and pass on everything held.
* Memory is bounded by ``max_held_spans`` (held spans plus kept records) and
  ``max_traces``: beyond either, the oldest trace's held spans are passed on
  unevaluated (marked ``agentwatch.anomaly.evaluated=false``, as the collector
  marks spans it could not judge) and counted as ``spans_evicted``; kept
  records of a trace whose root never comes are dropped after the
  configuration's ``agent.limits.run_ttl_seconds``.

No span is ever dropped here: a failure in detection passes the spans on
untagged and is counted. ``export`` returns the delegate's result (``SUCCESS``
when everything in the batch is being held).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .. import semconv as sc
from ..config import Config
from ..engine.record import Finding, Kind, RunSummary, SpanRecord
from ..implicit import KEY_PREFIX
from .conversations import ConversationRuns, conversation_key, unheld
from .enrich import enrich
from .findings import anomaly_update, run_summary_attributes, span_outcome
from .normalize import record_from_span, span_attributes
from .reporting import AnomalyContext, OnAnomaly, with_engine_stats
from .wiring import detection

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

    from ..engine.engine import Engine

__all__ = ["AnomalyExporter", "otlp_exporter_from_env"]

_logger = logging.getLogger(__name__)

DEFAULT_STRAGGLER_SECONDS = 30.0
DEFAULT_MAX_HELD_SPANS = 100_000
DEFAULT_MAX_TRACES = 10_000


def otlp_exporter_from_env(env: Mapping[str, str] | None = None) -> SpanExporter:
    """The OTLP span exporter ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``..._PROTOCOL`` name.

    ``grpc`` (the default) or ``http/protobuf``; endpoint, headers, TLS and
    timeout are read from the usual variables by the exporter itself.
    """
    env = os.environ if env is None else env
    protocol = (
        (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc")
        .strip()
        .lower()
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(
        f"agentwatch: unsupported OTLP protocol {protocol!r} in OTEL_EXPORTER_OTLP_TRACES_PROTOCOL/"
        "OTEL_EXPORTER_OTLP_PROTOCOL; use 'grpc' or 'http/protobuf'"
    )


class _Trace:
    """Spans of one trace waiting for their local root, and records of those already passed on."""

    __slots__ = ("held", "released", "touched")

    def __init__(self, now: float) -> None:
        self.held: dict[int, ReadableSpan] = {}  # span id -> span
        self.released: dict[int, SpanRecord] = {}  # span id -> record of a span passed on early
        self.touched = now  # last time a span of this trace arrived


def _ids(span: ReadableSpan) -> tuple[int, int, int | None, bool]:
    """(trace id, span id, parent span id, is local root)."""
    ctx = span.get_span_context()
    if ctx is None:
        raise ValueError("span without a span context")
    parent = span.parent
    if parent is None:
        return ctx.trace_id, ctx.span_id, None, True
    return ctx.trace_id, ctx.span_id, parent.span_id, bool(parent.is_remote)


class AnomalyExporter(SpanExporter):
    """A ``SpanExporter`` that tags spans with anomaly flags before ``delegate`` exports them.

    With no ``delegate`` it builds the OTLP exporter chosen by the standard
    variables (see :func:`otlp_exporter_from_env`). See the module docstring
    for how spans are held until their run can be evaluated.
    """

    def __init__(
        self,
        delegate: SpanExporter | None = None,
        *,
        config: Config | Mapping[str, Any] | str | None = None,
        engine: Engine | None = None,
        on_anomaly: OnAnomaly | None = None,
        meter_provider: MeterProvider | None = None,
        straggler_seconds: float = DEFAULT_STRAGGLER_SECONDS,
        max_held_spans: int = DEFAULT_MAX_HELD_SPANS,
        max_traces: int = DEFAULT_MAX_TRACES,
    ) -> None:
        self._delegate = delegate if delegate is not None else otlp_exporter_from_env()
        self._config, self._engine, self._extractor, self._reporter = detection(
            config, engine, on_anomaly, meter_provider
        )
        self._straggler_s = max(0.0, float(straggler_seconds))
        self._max_held = max(1, int(max_held_spans))
        self._max_traces = max(1, int(max_traces))
        self._record_ttl = max(self._straggler_s, float(self._config.limits.run_ttl_seconds))
        self._traces: dict[int, _Trace] = {}  # oldest first
        self._waiting: dict[int, float] = {}  # trace id -> arrival of its oldest held span, oldest first
        self._held = 0  # held spans plus kept records, across traces
        self._next_sweep = 0.0
        self._lock = threading.Lock()
        self._shutdown = False
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "spans_received",
                "spans_exported",
                "spans_flagged",
                "findings",
                "traces_evaluated",
                "traces_expired",
                "spans_evicted",
                "errors",
            ),
            0,
        )
        self._logged: set[str] = set()
        self._conversations: ConversationRuns | None = None  # made for the first conversation span

    # ------------------------------------------------------------------ SpanExporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return self._delegate.export(spans)
        ready: list[ReadableSpan] = []
        with self._lock:
            self._counts["spans_received"] += len(spans)
            try:
                self._route(spans, ready)
                self._expire(time.monotonic(), ready)
                self._bound(ready)
            except Exception as exc:
                # Pass on what the batch holds untagged; whatever was routed already
                # is in ``ready`` or held, never lost.
                self._problem("export", exc)
                seen = {id(s) for s in ready}
                held = {id(s) for t in self._traces.values() for s in t.held.values()}
                ready.extend(s for s in spans if id(s) not in seen and id(s) not in held)
        if not ready:
            return SpanExportResult.SUCCESS
        self._counts["spans_exported"] += len(ready)
        return self._delegate.export(ready)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Evaluate and export everything held (records are kept for roots still to come)."""
        ready = self._drain(forget=False)
        ok = True
        try:
            if ready:
                self._counts["spans_exported"] += len(ready)
                ok = self._delegate.export(ready) is SpanExportResult.SUCCESS
            flush = getattr(self._delegate, "force_flush", None)
            if flush is not None:
                ok = bool(flush(timeout_millis)) and ok
        except Exception as exc:
            self._problem("force_flush", exc)
            return False
        return ok

    def shutdown(self) -> None:
        ready = self._drain(forget=True)
        self._shutdown = True
        if ready:
            self._counts["spans_exported"] += len(ready)
            try:
                self._delegate.export(ready)
            except Exception as exc:
                self._problem("shutdown", exc)
        self._delegate.shutdown()

    @property
    def stats(self) -> dict[str, int]:
        """This exporter's counters, plus the engine's prefixed ``engine.``."""
        out = dict(self._counts)
        out["spans_held_now"] = sum(len(t.held) for t in self._traces.values())
        out["traces_held_now"] = len(self._traces)
        out["callback_errors"] = self._reporter.callback_errors
        if self._conversations is not None:
            for key, value in self._conversations.stats.items():
                out[f"conversations.{key}"] = value
        return with_engine_stats(out, self._engine)

    # ------------------------------------------------------------------ routing

    def _route(self, spans: Iterable[ReadableSpan], ready: list[ReadableSpan]) -> None:
        now = time.monotonic()
        roots: list[tuple[_Trace, int, int]] = []
        for span in spans:
            try:
                trace_id, span_id, _parent, is_root = _ids(span)
            except Exception as exc:
                self._problem("span_context", exc)
                ready.append(span)
                continue
            trace = self._traces.get(trace_id)
            if trace is None:
                trace = self._traces[trace_id] = _Trace(now)
            trace.touched = now
            if span_id in trace.held or span_id in trace.released:
                self._counts["duplicate_spans"] = self._counts.get("duplicate_spans", 0) + 1
                ready.append(span)
                continue
            if trace_id not in self._waiting:
                self._waiting[trace_id] = now
            trace.held[span_id] = span
            self._held += 1
            if is_root:
                roots.append((trace, trace_id, span_id))
        for trace, trace_id, root_id in roots:
            if root_id in trace.held:
                self._release_subtree(trace, trace_id, root_id, ready)

    def _release_subtree(self, trace: _Trace, trace_id: int, root_id: int, ready: list[ReadableSpan]) -> None:
        """Evaluate the local root ``root_id`` with its held and early-released descendants."""
        parents: dict[int, int | None] = {}
        for sid, span in trace.held.items():
            parent = span.parent
            parents[sid] = parent.span_id if parent is not None and not parent.is_remote else None
        for sid, record in trace.released.items():
            parents[sid] = int(record.parent_id, 16) if record.parent_id else None
        members = set(_descendants(root_id, parents))
        # in arrival order, as the delegate would have seen them without us
        spans = [span for sid, span in trace.held.items() if sid in members]
        kept = [record for sid, record in trace.released.items() if sid in members]
        for sid in members:
            trace.held.pop(sid, None)
            trace.released.pop(sid, None)
        self._held -= len(spans) + len(kept)
        ready.extend(self._evaluate(spans, kept))
        if not trace.held:
            self._waiting.pop(trace_id, None)
            if not trace.released:
                self._traces.pop(trace_id, None)

    def _expire(self, now: float, ready: list[ReadableSpan]) -> None:
        deadline = now - self._straggler_s
        waiting = self._waiting
        while waiting:
            trace_id, since = next(iter(waiting.items()))
            if since > deadline:
                break
            del waiting[trace_id]
            self._counts["traces_expired"] += 1
            self._release_partial(trace_id, ready)
        if now >= self._next_sweep:
            # Records kept for a root that never came (dropped upstream, or still running).
            self._next_sweep = now + max(1.0, self._straggler_s)
            stale = now - self._record_ttl
            for trace_id in [t for t, tr in self._traces.items() if not tr.held and tr.touched <= stale]:
                trace = self._traces.pop(trace_id)
                self._held -= len(trace.released)
                self._counts["records_expired"] = self._counts.get("records_expired", 0) + len(trace.released)

    def _release_partial(self, trace_id: int, ready: list[ReadableSpan]) -> None:
        """Evaluate a trace as far as it has arrived; keep the records for its later root."""
        trace = self._traces.get(trace_id)
        self._waiting.pop(trace_id, None)
        if trace is None:
            return
        spans = list(trace.held.values())
        if not spans:
            if not trace.released:
                self._traces.pop(trace_id, None)
            return
        trace.held.clear()
        self._held -= len(spans)
        out, records = self._evaluate(spans, list(trace.released.values()), keep=True)
        ready.extend(out)
        for record in records:
            try:
                trace.released[int(record.span_id, 16)] = record
                self._held += 1
            except ValueError:
                pass
        if not trace.released:
            self._traces.pop(trace_id, None)

    def _bound(self, ready: list[ReadableSpan]) -> None:
        while self._traces and (self._held > self._max_held or len(self._traces) > self._max_traces):
            trace_id = next(iter(self._traces))
            trace = self._traces.pop(trace_id)
            self._waiting.pop(trace_id, None)
            self._held -= len(trace.held) + len(trace.released)
            self._counts["spans_evicted"] += len(trace.held)
            ready.extend(_unevaluated(span) for span in trace.held.values())

    def _drain(self, *, forget: bool) -> list[ReadableSpan]:
        """Evaluate and return every held span; ``forget`` also drops the kept records."""
        ready: list[ReadableSpan] = []
        with self._lock:
            for trace_id in list(self._waiting):
                try:
                    self._release_partial(trace_id, ready)
                except Exception as exc:
                    self._problem("flush", exc)
                    trace = self._traces.get(trace_id)
                    if trace is not None:
                        ready.extend(trace.held.values())
                        self._held -= len(trace.held)
                        trace.held.clear()
            self._waiting.clear()
            if forget:
                self._traces.clear()
                self._held = 0
        return ready

    # ------------------------------------------------------------------ evaluation

    def _evaluate(self, spans: list[ReadableSpan], kept: list[SpanRecord], keep: bool = False) -> Any:
        """Tag ``spans`` from one evaluation of ``spans`` + ``kept`` records.

        Returns the spans to pass on, and with ``keep`` also their records.
        """
        records: list[SpanRecord] = []
        try:
            extractor = self._extractor
            records = [record_from_span(span, extractor) for span in spans]
            skewed = sum(1 for s in spans if (s.end_time or 0) < (s.start_time or 0))
            if skewed:
                self._counts["clock_skew"] = self._counts.get("clock_skew", 0) + skewed
            roots = {r.span_id for r, s in zip(records, spans, strict=True) if _ids(s)[3]}
            members = self._conversation_members(spans, records, kept)
            if members:  # those go to their conversation's run, not to this trace's
                kept = [r for r in kept if not _in_conversation(r)]
                in_trace = [r for r in records if not _in_conversation(r)]
            else:
                in_trace = records
            grouped = _group_orphans([*kept, *in_trace], roots)
            try:
                verdict = self._engine.evaluate_trace([*kept, *in_trace])
            finally:
                for record in grouped:  # kept records must not remember a provisional run
                    record.run_key = None
            if members:
                assert self._conversations is not None
                for span_id, found in self._conversations.evaluate(members).items():
                    verdict.findings.setdefault(span_id, []).extend(found)
            self._counts["traces_evaluated"] += 1
            agents = _agent_names([*kept, *records])
            out = [
                self._tag(span, record, verdict.findings, verdict.summaries, agents)
                for span, record in zip(spans, records, strict=True)
            ]
        except Exception as exc:
            self._problem("evaluate", exc)
            out = list(spans)
        return (out, records) if keep else out

    def _conversation_members(
        self, spans: list[ReadableSpan], records: list[SpanRecord], kept: list[SpanRecord]
    ) -> list[tuple[SpanRecord, str]]:
        """Records of ``spans`` that join a conversation's run (§8); marks them by their run key."""
        keys: dict[int, str] = {}
        for i, span in enumerate(spans):
            key = conversation_key(span_attributes(span))
            if key is not None:
                keys[i] = key
        if not keys:
            return []
        offset = len(kept)
        chosen = unheld([*kept, *records], {offset + i: k for i, k in keys.items()})
        if not chosen:
            return []
        if self._conversations is None:
            self._conversations = ConversationRuns(self._config)
        members = []
        for index, key in chosen.items():
            record = records[index - offset]
            record.run_key = key  # kept for a later root's evaluation: it is not this trace's
            members.append((record, key))
        return members

    def _tag(
        self,
        span: ReadableSpan,
        record: SpanRecord,
        findings_by_span: Mapping[str, list[Finding]],
        summaries: Mapping[str, RunSummary],
        agents: Mapping[str, str | None],
    ) -> ReadableSpan:
        try:
            findings, summary = span_outcome(
                record.kind, findings_by_span.get(record.span_id), summaries.get(record.span_id)
            )
            if not findings and summary is None:
                return span
            attrs = span.attributes or {}
            severity = attrs.get(sc.ANOMALY_SEVERITY)
            new_attrs, events, new = anomaly_update(
                record.flags_present, severity if isinstance(severity, str) else None, findings
            )
            if new:
                self._counts["findings"] += len(new)
                self._counts["spans_flagged"] += 1
                self._reporter.report(new, AnomalyContext.of(record, agents.get(record.span_id)))
            if summary is not None:
                summary_attrs = run_summary_attributes(summary, attrs.get(sc.RUN_ANOMALY_FLAGS))
                new_attrs.update({k: v for k, v in summary_attrs.items() if attrs.get(k) != v})
            if not new_attrs and not events:
                return span
            return enrich(span, new_attrs, events)
        except Exception as exc:
            self._problem("tag", exc)
            return span

    def _problem(self, where: str, exc: BaseException) -> None:
        self._counts["errors"] += 1
        self._counts[f"errors.{where}"] = self._counts.get(f"errors.{where}", 0) + 1
        key = f"{where}:{type(exc).__name__}"
        if key not in self._logged:
            self._logged.add(key)
            _logger.warning(
                "agentwatch: anomaly detection failed in %s; spans are exported untagged "
                "(further %s errors are counted, not logged)",
                where,
                type(exc).__name__,
                exc_info=exc,
            )


def _in_conversation(record: SpanRecord) -> bool:
    key = record.run_key
    return key is not None and key.startswith(KEY_PREFIX)


def _unevaluated(span: ReadableSpan) -> ReadableSpan:
    """``span`` marked ``agentwatch.anomaly.evaluated=false``, as the collector marks what it cannot judge."""
    try:
        return enrich(span, {sc.ANOMALY_EVALUATED: False})
    except Exception:
        return span


def _group_orphans(records: Sequence[SpanRecord], roots: set[str]) -> list[SpanRecord]:
    """Give spans whose parent has not arrived yet one provisional run, named after that parent.

    Otherwise the engine would take each such span for a local root of its own
    and, say, three identical calls of a run still in progress would never
    meet. Spans under a run span present here, and true local roots (parent
    absent or remote), are left to the engine. Returns the records changed.
    """
    by_id = {r.span_id: r for r in records}
    memo: dict[str, str | None] = {}
    changed: list[SpanRecord] = []
    for record in records:
        path: list[str] = []
        node = record
        key: str | None = None
        for _ in range(256):  # parent links may form cycles; the engine cuts those
            if node.kind is Kind.RUN:
                break
            if node.span_id in memo:
                key = memo[node.span_id]
                break
            path.append(node.span_id)
            parent_id = node.parent_id
            if not parent_id or node.span_id in roots:
                break
            parent = by_id.get(parent_id)
            if parent is None:
                key = parent_id
                break
            node = parent
        for span_id in path:
            memo[span_id] = key
        if key is not None and record.run_key is None and record.kind is not Kind.RUN:
            record.run_key = key
            changed.append(record)
    return changed


def _agent_names(records: Sequence[SpanRecord]) -> dict[str, str | None]:
    """Each span's agent: its own ``gen_ai.agent.name``, else its nearest run ancestor's."""
    by_id = {r.span_id: r for r in records}
    out: dict[str, str | None] = {}
    for record in records:
        node: SpanRecord | None = record
        name: str | None = None
        for _ in range(64):  # bounded: parent links may form cycles
            if node is None:
                break
            if node.agent_name and (node is record or node.kind is Kind.RUN):
                name = node.agent_name
                break
            node = by_id.get(node.parent_id) if node.parent_id else None
        out[record.span_id] = name
    return out


def _descendants(root: int, parents: Mapping[int, int | None]) -> list[int]:
    """``root`` and every span whose parent chain reaches it (cycle-safe)."""
    children: dict[int, list[int]] = {}
    for sid, parent in parents.items():
        if parent is not None and parent != sid:
            children.setdefault(parent, []).append(sid)
    out: list[int] = []
    seen = {root}
    stack = [root]
    while stack:
        sid = stack.pop()
        out.append(sid)
        for child in children.get(sid, ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return out
