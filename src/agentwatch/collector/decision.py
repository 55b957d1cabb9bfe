"""Decide traces: evaluate them with the detector engine and tag their spans.

For a trace taken from the buffer, every span's attributes are decoded once
into a :class:`~agentwatch.engine.record.SpanRecord`, the engine evaluates the
whole trace, and only spans with findings (or a run summary) are parsed into
``Span`` messages, tagged exactly as the in-process exporter tags them
(``anomaly_update`` / ``run_summary_attributes``) and re-serialised; every
other span is forwarded as the bytes it arrived as.

Late spans (their trace was already decided) are re-evaluated together with
the spans the verdict retained; findings on late spans tag them directly,
findings on spans that already left are reported on one synthetic
``agentwatch.anomaly.summary`` span per run, a child of the run span (or of the
local root). Without retained spans, a late span that repeats a forwarded
span id is tagged from the cached findings, and any other is marked
``agentwatch.anomaly.evaluated=false``.

The collector decides per trace, but a zero-code agent makes one trace per
LLM call: LLM and tool spans that carry ``gen_ai.conversation.id`` and that no
run span holds are evaluated in one cross-trace run per conversation
(:mod:`agentwatch.otel.conversations`, bounded and expiring with the
detection config's run limits; its counters are under ``conversations`` in the
health output).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .. import semconv as sc
from ..engine import Engine
from ..engine.entities import EntityExtractor
from ..engine.record import Finding, Kind, RunSummary, SpanRecord
from ..engine.state import Stats as EngineStats
from ..engine.trace import plan
from ..otel.conversations import ConversationRuns, conversation_key, unheld
from ..otel.findings import anomaly_update, run_summary_attributes, safe_reason, span_outcome
from ..otel.normalize import NAME_KIND, build_record, detect_kind, record_from_attributes, records_extractor
from ..otel.reporting import AnomalyContext, FindingReporter
from ..version import __version__
from .buffer import Decided, PendingTrace, TraceBuffer
from .forwarder import Forwarder
from .journal import Piece
from .otlp import (
    STATUS_CODE_ERROR,
    Group,
    IdsView,
    RequestBuilder,
    Span,
    SpanView,
    StatusView,
    collector_group,
    decode_attributes,
    edit_span,
    keyvalue_field,
    set_attributes,
)
from .telemetry import Stats
from .verdicts import Verdict, VerdictCache

log = logging.getLogger("agentwatch.collector")

SUMMARY_SPAN_ID = sc.ANOMALY_SPAN_ID
SUMMARY_SPAN_IDS = sc.ANOMALY_SUMMARY_SPAN_IDS
_EVALUATED_FALSE = keyvalue_field(sc.ANOMALY_EVALUATED, False)
_EVALUATED_KEY = sc.ANOMALY_EVALUATED.encode()
_ZERO_SPAN = bytes(8)

Out = list[tuple[Group, bytes]]


def mark_unevaluated(raw: bytes) -> bytes:
    """The span with ``agentwatch.anomaly.evaluated=false``: an appended field, no re-encoding."""
    if raw.find(_EVALUATED_KEY) < 0:
        return raw + _EVALUATED_FALSE
    span = Span.FromString(raw)
    set_attributes(span.attributes, {sc.ANOMALY_EVALUATED: False})
    return span.SerializeToString()


class Decider:
    """Turns decided traces into export batches. One thread calls :meth:`process` at a time."""

    def __init__(
        self,
        engine: Engine,
        buffer: TraceBuffer,
        verdicts: VerdictCache,
        forwarder: Forwarder,
        stats: Stats,
        *,
        max_batch_bytes: int,
        reporter: FindingReporter | None = None,
    ) -> None:
        self.engine = engine
        self.buffer = buffer
        self.verdicts = verdicts
        self.forwarder = forwarder
        self.stats = stats
        self.max_batch_bytes = max_batch_bytes
        self.reporter = reporter
        self.extractor = records_extractor(engine)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._flags: Counter[str] = Counter()
        self._lock = threading.Lock()  # process() runs in the decider thread, then once at shutdown
        # Conversations spanning traces (contract §8): made for the first span that needs it.
        self._conversations: ConversationRuns | None = None
        self.stats.extra["conversations"] = self._conversation_stats

    def _conversation_stats(self) -> dict[str, int]:
        runs = self._conversations
        return runs.stats if runs is not None else {}

    # ------------------------------------------------------------------ loop

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agentwatch-decider", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.buffer.wait(0.25)
            if self._stop.is_set():
                return
            try:
                due = self.buffer.pop_due()
                if due:
                    self.process(due)
                self.forwarder.flush_logs()
            except Exception:  # the loop must survive anything
                log.exception("the decision loop failed; continuing")
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self.buffer.wake()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ------------------------------------------------------------------ batches

    def process(self, decided: Sequence[Decided]) -> None:
        with self._lock:
            builder = RequestBuilder()
            pieces: list[Piece] = []  # journal pieces whose spans are in ``builder``
            reasons: Counter[str] = Counter()
            for trace, reason, verdict in decided:
                reasons[reason] += 1
                try:
                    out = (
                        self._late(trace, verdict)
                        if trace.verdict is not None
                        else self._decide(trace, verdict)
                    )
                except Exception:
                    log.exception(
                        "evaluating trace %s failed; forwarding it unevaluated", trace.trace_id.hex()
                    )
                    self.stats.add("evaluation_errors")
                    verdict.evaluated = False
                    out = [(g, mark_unevaluated(r)) for g, r in zip(trace.groups, trace.raws, strict=True)]
                builder.add_all(out)
                pieces.extend(trace.pieces())
                if builder.size >= self.max_batch_bytes:
                    self._send(builder, pieces)
                    builder = RequestBuilder()
                    pieces = []
            self._send(builder, pieces)
            self.stats.add_many("traces_decided", reasons.items())
            if self._flags:
                self.stats.add_many("findings", self._flags.items())
                self._flags.clear()

    def _send(self, builder: RequestBuilder, pieces: Sequence[Piece]) -> None:
        self.forwarder.put(builder.build() if builder.spans else b"", builder.spans, pieces)

    def forward_unevaluated(self, traces: Iterable[PendingTrace], reason: str = "overflow") -> None:
        """Forward traces untagged with ``evaluated=false`` (buffer overflow). Thread-safe.

        A trace is never split across batches, so its journal pieces finish with its one batch.
        """
        builder = RequestBuilder()
        pieces: list[Piece] = []
        n_traces = 0
        for trace in traces:
            n_traces += 1
            builder.add_all((g, mark_unevaluated(r)) for g, r in zip(trace.groups, trace.raws, strict=True))
            pieces.extend(trace.pieces())
            if builder.size >= self.max_batch_bytes:
                self.stats.add("spans_evicted", builder.spans)
                self._send(builder, pieces)
                builder = RequestBuilder()
                pieces = []
        self.stats.add("spans_evicted", builder.spans)
        self._send(builder, pieces)
        self.stats.add("traces_decided", n_traces, reason)

    # ------------------------------------------------------------------ records

    def _records(self, trace_hex: str, raws: Sequence[bytes]) -> tuple[list[SpanRecord], list[dict[str, Any]]]:
        """Each span's record and decoded attributes, with this engine's entity extractor."""
        return otlp_records(trace_hex, raws, self.extractor)

    # ------------------------------------------------------------------ a whole trace

    def _decide(self, trace: PendingTrace, verdict: Verdict) -> Out:
        raws = trace.raws
        groups = trace.groups
        records, decoded = self._records(trace.trace_id.hex(), raws)
        members = self._conversation_members(records, decoded)
        if members:  # evaluated in their conversation's run, across traces, not in this trace's
            chosen = {id(record) for record, _ in members}
            result = self.engine.evaluate_trace([r for r in records if id(r) not in chosen])
            assert self._conversations is not None
            for span_id, found in self._conversations.evaluate(members).items():
                result.findings.setdefault(span_id, []).extend(found)
        else:
            result = self.engine.evaluate_trace(records)
        findings = result.findings
        summaries = result.summaries
        out: Out = list(zip(groups, raws, strict=True))
        if findings or summaries:
            for i, record in enumerate(records):
                sid = record.span_id
                if sid in findings or sid in summaries:
                    tagged = self._tag(
                        raws[i], record, decoded[i], findings.get(sid), summaries.get(sid), verdict
                    )
                    out[i] = (groups[i], tagged)
        self._anchor(verdict, groups, records)
        self.verdicts.retain(verdict, groups, raws, trace.nbytes)
        return out

    def _conversation_members(
        self, records: list[SpanRecord], decoded: list[dict[str, Any]]
    ) -> list[tuple[SpanRecord, str]]:
        """LLM and tool spans with ``gen_ai.conversation.id`` that no run span of the trace holds."""
        keys: dict[int, str] = {}
        for i, attrs in enumerate(decoded):
            key = conversation_key(attrs)
            if key is not None:
                keys[i] = key
        if not keys:
            return []
        chosen = unheld(records, keys)
        if not chosen:
            return []
        if self._conversations is None:
            self._conversations = ConversationRuns(self.engine.config)
        return [(records[i], key) for i, key in chosen.items()]

    @staticmethod
    def _anchor(verdict: Verdict, groups: Sequence[Group], records: Sequence[SpanRecord]) -> None:
        """Where summary spans hang when no better parent is known: root, else a run, else a span."""
        if verdict.anchor_id is not None or not records:
            return
        best = 0
        for i, record in enumerate(records):
            if not record.parent_id:
                best = i
                break
            if record.kind is Kind.RUN and records[best].kind is not Kind.RUN:
                best = i
        verdict.anchor_id = records[best].span_id
        verdict.anchor_group = groups[best]

    def _tag(
        self,
        raw: bytes,
        record: SpanRecord,
        attrs: Mapping[str, Any],
        findings: Sequence[Finding] | None,
        summary: RunSummary | None,
        verdict: Verdict,
    ) -> bytes:
        """Apply findings and a run summary to one span, as the in-process exporter does."""
        found, summary = span_outcome(record.kind, findings, summary)
        if not found and summary is None:
            return raw
        severity = attrs.get(sc.ANOMALY_SEVERITY)
        new_attrs, events, new = anomaly_update(
            record.flags_present, severity if isinstance(severity, str) else None, found
        )
        if summary is not None:
            summary_attrs = run_summary_attributes(summary, attrs.get(sc.RUN_ANOMALY_FLAGS))
            new_attrs.update({k: v for k, v in summary_attrs.items() if attrs.get(k) != v})
            verdict.run_flags[summary.run_key] = tuple(summary_attrs[sc.RUN_ANOMALY_FLAGS])
            verdict.run_attributes[record.span_id] = dict(summary_attrs)
        if found:
            known = verdict.findings.setdefault(record.span_id, [])
            known.extend(f for f in found if f not in known)
        if new:
            self._count(new, record)
        if not new_attrs and not events:
            return raw
        return edit_span(raw, attrs, new_attrs, events, record.end_ns or record.start_ns)

    def _count(self, new: Sequence[Finding], record: SpanRecord) -> None:
        for finding in new:
            self._flags[str(finding.flag)] += 1
        if self.reporter is not None:
            self.reporter.report(new, AnomalyContext.of(record))

    # ------------------------------------------------------------------ late spans

    def _late(self, trace: PendingTrace, verdict: Verdict) -> Out:
        if not verdict.evaluated:
            self.stats.add("late_spans", len(trace.raws), "unevaluated")
            return [(g, mark_unevaluated(r)) for g, r in zip(trace.groups, trace.raws, strict=True)]
        trace_hex = trace.trace_id.hex()
        late_records, late_attrs = self._records(trace_hex, trace.raws)
        retained = verdict.retained
        known: set[str] = set()
        if retained is not None:
            known = {v.span_id.hex() for v in map(IdsView.FromString, retained)}
        out: Out = []
        fresh: list[int] = []
        cached = unevaluated = 0
        for i, record in enumerate(late_records):
            sid = record.span_id
            if sid in known or (retained is None and sid in verdict.findings):
                # The same span again (a client retry): the same tags as the first time.
                out.append((trace.groups[i], self._retag(trace.raws[i], record, late_attrs[i], verdict)))
                cached += 1
            elif retained is None:
                out.append((trace.groups[i], mark_unevaluated(trace.raws[i])))
                unevaluated += 1
            else:
                fresh.append(i)
        self.stats.add("late_spans", cached, "cached")
        self.stats.add("late_spans", unevaluated, "unevaluated")
        if fresh:
            assert retained is not None
            out.extend(self._reevaluate(trace, verdict, retained, fresh, late_records, late_attrs))
            self.stats.add("late_spans", len(fresh), "reevaluated")
        return out

    def _retag(self, raw: bytes, record: SpanRecord, attrs: Mapping[str, Any], verdict: Verdict) -> bytes:
        findings = verdict.findings.get(record.span_id)
        run_attrs = verdict.run_attributes.get(record.span_id)
        if not findings and not run_attrs:
            return raw
        severity = attrs.get(sc.ANOMALY_SEVERITY)
        new_attrs, events, _ = anomaly_update(
            record.flags_present, severity if isinstance(severity, str) else None, findings or ()
        )
        new_attrs.update(run_attrs or {})
        return edit_span(raw, attrs, new_attrs, events, record.end_ns or record.start_ns)

    def _reevaluate(
        self,
        trace: PendingTrace,
        verdict: Verdict,
        retained: list[bytes],
        fresh: list[int],
        late_records: list[SpanRecord],
        late_attrs: list[dict[str, Any]],
    ) -> Out:
        trace_hex = trace.trace_id.hex()
        old_records, old_attrs = self._records(trace_hex, retained)
        old_groups = verdict.retained_groups or []
        new_records = [late_records[i] for i in fresh]
        members = self._conversation_members(
            [*old_records, *new_records], [*old_attrs, *(late_attrs[i] for i in fresh)]
        )
        if members:  # as in _decide; the retained ones were fed to their conversation already
            chosen = {id(record) for record, _ in members}
            result = self.engine.evaluate_trace([r for r in (*old_records, *new_records) if id(r) not in chosen])
            new_ids = {id(record) for record in new_records}
            assert self._conversations is not None
            late_members = [(record, key) for record, key in members if id(record) in new_ids]
            for span_id, found in self._conversations.evaluate(late_members).items():
                result.findings.setdefault(span_id, []).extend(found)
        else:
            result = self.engine.evaluate_trace([*old_records, *new_records])
        out: Out = []
        fresh_ids = set()
        for i, record in zip(fresh, new_records, strict=True):
            sid = record.span_id
            fresh_ids.add(sid)
            raw = trace.raws[i]
            if sid in result.findings or sid in result.summaries:
                raw = self._tag(
                    raw, record, late_attrs[i], result.findings.get(sid), result.summaries.get(sid), verdict
                )
            out.append((trace.groups[i], raw))

        # What is new about spans that already left goes on summary spans, one per run.
        planned = plan([*old_records, *new_records], EngineStats())
        run_of = {span_id: run_key for trace_plan in planned for _, _, span_id, _, run_key, _, _ in trace_plan}
        groups_by_id = {r.span_id: g for r, g in zip(old_records, old_groups, strict=True)}
        for i, record in zip(fresh, new_records, strict=True):
            groups_by_id.setdefault(record.span_id, trace.groups[i])
        kinds = {r.span_id: r.kind for r in old_records}
        pending: dict[str, list[Finding]] = {}
        for sid, findings in result.findings.items():
            if sid in fresh_ids or sid not in run_of:
                continue
            reported = {f.flag for f in verdict.findings.get(sid, ())}
            new = [f for f in findings if f.flag not in reported]
            if new:
                pending.setdefault(run_of[sid], []).extend(new)
                verdict.findings.setdefault(sid, []).extend(new)
        run_updates: dict[str, dict[str, Any]] = {}
        for run_id, summary in result.summaries.items():
            if run_id in fresh_ids:
                continue  # the run span itself was late: tagged above
            if kinds.get(run_id) is not Kind.RUN and not summary.flags:
                continue
            before = verdict.run_flags.get(summary.run_key, ())
            if any(flag not in before for flag in summary.flags):
                attrs = run_summary_attributes(summary, before)
                run_updates[summary.run_key] = attrs
                verdict.run_flags[summary.run_key] = tuple(attrs[sc.RUN_ANOMALY_FLAGS])
        records_by_id = {r.span_id: r for r in old_records}
        for run_key in sorted(set(pending) | set(run_updates)):
            group = groups_by_id.get(run_key) or verdict.anchor_group or trace.groups[0]
            out.append(
                (
                    collector_group(group.resource_key, __version__),
                    self._summary_span(
                        trace.trace_id, run_key, pending.get(run_key, []), run_updates.get(run_key, {})
                    ),
                )
            )
            self.stats.add("summary_spans")
            for finding in pending.get(run_key, []):
                about = records_by_id.get(finding.span_id)
                if about is not None:
                    self._count([finding], about)

        self.verdicts.retain(
            verdict,
            [trace.groups[i] for i in fresh],
            [trace.raws[i] for i in fresh],
            sum(len(trace.raws[i]) for i in fresh),
        )
        return out

    @staticmethod
    def _summary_span(
        trace_id: bytes, parent_hex: str, findings: Sequence[Finding], run_attrs: Mapping[str, Any]
    ) -> bytes:
        now = time.time_ns()
        span = Span(
            trace_id=trace_id,
            span_id=_new_span_id(),
            parent_span_id=bytes.fromhex(parent_hex),
            name=sc.ANOMALY_SUMMARY_SPAN_NAME,
            kind=Span.SpanKind.SPAN_KIND_INTERNAL,
            start_time_unix_nano=now,
            end_time_unix_nano=now,
        )
        attrs: dict[str, Any] = {}
        if findings:
            flags: list[str] = []
            severity: str | None = None
            for finding in findings:
                flag = str(finding.flag)
                if flag not in flags:
                    flags.append(flag)
                sev = str(finding.severity)
                if severity is None or sc.SEVERITY_RANK.get(sev, 0) > sc.SEVERITY_RANK.get(severity, 0):
                    severity = sev
            attrs[sc.ANOMALY_FLAGS] = tuple(flags)
            attrs[sc.ANOMALY_SEVERITY] = severity
            attrs[SUMMARY_SPAN_IDS] = tuple(dict.fromkeys(f.span_id for f in findings))
        attrs.update(run_attrs)
        set_attributes(span.attributes, attrs)
        for finding in findings:
            event_attrs: dict[str, Any] = {
                sc.ANOMALY_FLAG: str(finding.flag),
                sc.ANOMALY_SEVERITY: str(finding.severity),
                sc.ANOMALY_REASON: safe_reason(finding),
                SUMMARY_SPAN_ID: finding.span_id,
            }
            if finding.related_span_id:
                event_attrs[sc.ANOMALY_RELATED_SPAN_ID] = finding.related_span_id
            set_attributes(span.events.add(name=sc.ANOMALY_EVENT, time_unix_nano=now).attributes, event_attrs)
        return span.SerializeToString()


def otlp_records(
    trace_hex: str, raws: Sequence[bytes], extractor: EntityExtractor | None
) -> tuple[list[SpanRecord], list[dict[str, Any]]]:
    """Each OTLP span's record, and its decoded attributes (kept to tag it without re-parsing).

    The same normalisation as the SDK adapters (:func:`build_record` with the
    engine's entity extractor): entity ids are read from captured content only
    when a span has content and no entity attributes, so spans without content
    (capture off, the common case) cost no more than before.
    """
    records = []
    decoded = []
    parse = SpanView.FromString
    for raw in raws:
        view = parse(raw)
        pid = view.parent_span_id
        name = view.name
        # ``[:]``: a list in one call; iterating a upb container ends in a formatted IndexError.
        attrs = decode_attributes(view.attributes[:])
        decoded.append(attrs)
        parent_id = pid.hex() if pid and pid != _ZERO_SPAN else None
        status = view.status
        is_error = bool(status) and StatusView.FromString(status).code == STATUS_CODE_ERROR
        try:
            kind = detect_kind(attrs)
            if kind is None:
                kind = NAME_KIND.get(name.partition(" ")[0], Kind.OTHER)
            # Positional: this runs for every span.
            record = build_record(
                attrs, kind, trace_hex, view.span_id.hex(), parent_id, name,
                view.start_time_unix_nano, view.end_time_unix_nano, is_error, extractor,
            )  # fmt: skip
        except Exception:  # never expected from plain decoded values; keep the span either way
            record = record_from_attributes(
                attrs,
                trace_id=trace_hex,
                span_id=view.span_id.hex(),
                parent_id=parent_id,
                name=name,
                start_ns=view.start_time_unix_nano,
                end_ns=view.end_time_unix_nano,
                is_error=is_error,
                span_kind_hint=NAME_KIND.get(name.partition(" ")[0], Kind.OTHER).value,
                extractor=extractor,
            )
        records.append(record)
    return records, decoded


def _new_span_id() -> bytes:
    while True:
        value = os.urandom(8)
        if value != _ZERO_SPAN:
            return value
