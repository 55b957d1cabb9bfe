"""Seed 003's backward trace over a recorded trace: per run, the timeline, fault origin, cascade and blast radius.

Records and detection go through the collector's record path
(:func:`agentwatch.collector.decision.otlp_records`) and
:meth:`Engine.evaluate_trace`, exactly as ``agentwatch analyze`` and the
collector do; runs are grouped by the engine's own planner
(:func:`agentwatch.engine.trace.plan`), so a span belongs to the run the
detectors put it in.

Rules (also in the README, section "Forensics, postmortem and replay"):

* **Run.** A run span (``invoke_agent``) with the spans under it. LLM and tool
  spans no run span holds that carry ``gen_ai.conversation.id`` form one implicit
  run per conversation, across traces, evaluated as the collector evaluates them
  (:class:`agentwatch.otel.conversations.ConversationRuns`). Other spans with no
  run span above them form an implicit run rooted at their local root (the
  topmost span whose parent is absent from the trace). The report says which.
* **Fault origin.** The engine's run summary's ``fault_origin_span_id``; for
  an implicit run (no summary) the earliest span, by start time, among the
  flagged spans and the spans their findings name as evidence.
* **Cascade.** Starting at the fault origin, the spans that built on it, in
  timeline order. The origin *introduces* the entity ids it carries (requested,
  argument or result entities) that no earlier span or the run's declared
  entities had, and the tool calls it requested (tool name and args hash). A
  later tool call joins when it is one of the introduced calls or its
  arguments or result carry an introduced entity; a later LLM call joins when
  its input carries an introduced entity, or when it records no input
  entities at all and a cascade span ended before it started (its
  conversation holds that span's output). Each joining span adds its own
  requested calls and entities to the introduced set.
* **Blast radius.** The ``side_effect`` tool calls at or after the fault origin,
  irreversible ones first (``reversible`` false, then unknown, then true), then
  by step.
* **Failure class** (:data:`FAILURE_CLASS_OF_FLAG`): the class of the fault
  origin's flag; when that flag has none, the class of the run's first flag
  that has one; without any, the run's stop reason (a loop or budget stop is
  ``cost_runaway``, a refused tool ``tool_misfire``); else ``none``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import semconv as sc
from ..engine.record import Finding, Kind, RunSummary, SpanRecord
from ..implicit import KEY_PREFIX
from ..otel.conversations import ConversationRuns, conversation_key, unheld
from ..otlp_files import FileSpan

__all__ = [
    "FAILURE_CLASS_OF_FLAG",
    "FAILURE_CLASSES",
    "RunReport",
    "Step",
    "TraceTooLarge",
    "analyze_spans",
]


FAILURE_CLASSES = tuple(str(c) for c in sc.FailureClass)
"""Seed 003's four failure modes, plus ``none`` for a run with no classified flag."""

_HALLUCINATION, _MISFIRE = sc.FailureClass.HALLUCINATION_PROPAGATION, sc.FailureClass.TOOL_MISFIRE
_POISONING, _RUNAWAY = sc.FailureClass.CONTEXT_POISONING, sc.FailureClass.COST_RUNAWAY
_CLASS_TABLE: dict[sc.FailureClass, tuple[sc.Flag, ...]] = {
    _HALLUCINATION: (sc.Flag.ENTITY_HALLUCINATION, sc.Flag.ENTITY_MISMATCH),
    _MISFIRE: (
        sc.Flag.TOOL_ARG_MISMATCH, sc.Flag.UNKNOWN_TOOL, sc.Flag.TOOL_DENIED, sc.Flag.DUPLICATE_SIDE_EFFECT,
        sc.Flag.TOOL_OUTPUT_INVALID, sc.Flag.CIRCUIT_OPEN,
    ),
    _POISONING: (sc.Flag.CONTEXT_DRIFT,),
    _RUNAWAY: (
        sc.Flag.LOOP_DETECTED, sc.Flag.NO_PROGRESS, sc.Flag.RETRY_STORM, sc.Flag.TOKEN_SPIKE,
        sc.Flag.STEP_BUDGET_EXCEEDED, sc.Flag.TOOL_BUDGET_EXCEEDED, sc.Flag.TIME_BUDGET_EXCEEDED,
        sc.Flag.COST_BUDGET_EXCEEDED, sc.Flag.TOKEN_BUDGET_EXCEEDED,
    ),
}  # fmt: skip
FAILURE_CLASS_OF_FLAG: dict[str, str] = {str(f): str(c) for c, flags in _CLASS_TABLE.items() for f in flags}
"""Which of seed 003's failure modes a flag signals (the README's table)."""

_CLASS_OF_STOP_REASON: dict[str, str] = {
    **{str(r): str(_RUNAWAY) for r in (
        sc.StopReason.LOOP_DETECTED, sc.StopReason.NO_PROGRESS, sc.StopReason.STEP_BUDGET, sc.StopReason.TOOL_BUDGET,
        sc.StopReason.TIME_BUDGET, sc.StopReason.COST_BUDGET, sc.StopReason.TOKEN_BUDGET,
    )},
    **{str(r): str(_MISFIRE) for r in (
        sc.StopReason.TOOL_DENIED, sc.StopReason.CIRCUIT_OPEN, sc.StopReason.INVALID_INPUT,
        sc.StopReason.TOOL_OUTPUT_INVALID,
    )},
}  # fmt: skip
"""A run stopped in process before its flag could show out of process (an enforced budget refused the call)."""

DEFAULT_MAX_SPANS = 100_000
"""Spans held for one report; more is refused (bounded memory) unless the caller raises it."""

_KIND_NAMES = {Kind.LLM: "llm", Kind.TOOL: "tool", Kind.PHASE: "phase", Kind.RUN: "run"}
_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}


class TraceTooLarge(ValueError):
    """More spans than the limit; the message says how to raise it."""


@dataclass
class Step:
    """One timeline entry."""

    step: int | None
    span_id: str
    kind: str
    name: str
    offset_ms: float
    duration_ms: float
    status: str
    flags: list[str]
    args_hash: str | None
    tokens: int | None
    cost_usd: float | None
    record: SpanRecord = field(repr=False)
    span: FileSpan | None = field(repr=False)
    findings: list[Finding] = field(default_factory=list, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step, "span_id": self.span_id, "kind": self.kind, "name": self.name,
            "offset_ms": round(self.offset_ms, 3), "duration_ms": round(self.duration_ms, 3), "status": self.status,
            "flags": list(self.flags), "args_hash": self.args_hash, "tokens": self.tokens, "cost_usd": self.cost_usd,
        }  # fmt: skip


@dataclass
class RunReport:
    """Everything the forensics report, the postmortem and the replay export need about one run."""

    trace_id: str
    run: dict[str, Any]
    timeline: list[Step]
    fault_origin: dict[str, Any] | None
    cascade: list[str]
    blast_radius: list[dict[str, Any]]
    failure_class: str
    failure_class_rule: str
    implicit: bool
    notes: list[str]
    findings: list[Finding]
    start_ns: int
    end_ns: int
    entities: dict[str, str]
    root: SpanRecord = field(repr=False)
    root_span: FileSpan | None = field(repr=False)

    def step_of(self, span_id: str | None) -> Step | None:
        for entry in self.timeline:
            if entry.span_id == span_id:
                return entry
        return None

    def as_json(self) -> dict[str, Any]:
        """The contract's ``forensics --json`` object (§7)."""
        return {
            "trace_id": self.trace_id,
            "run": dict(self.run),
            "timeline": [s.as_json() for s in self.timeline],
            "fault_origin": dict(self.fault_origin) if self.fault_origin else None,
            "cascade": list(self.cascade),
            "blast_radius": [dict(b) for b in self.blast_radius],
            "failure_class": self.failure_class,
            "failure_class_rule": self.failure_class_rule,
            "implicit_run": self.implicit,
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- building


def analyze_spans(
    spans: Iterable[FileSpan],
    engine: Any,
    *,
    max_spans: int = DEFAULT_MAX_SPANS,
    progress: bool | None = None,
    progress_every: int = 10_000,
) -> list[RunReport]:
    """Group SPANS by trace, evaluate each trace with ENGINE, and report every run (trace order, run start order)."""
    from ..collector.decision import otlp_records
    from ..engine.state import Stats
    from ..engine.trace import plan
    from ..otel.normalize import records_extractor

    show = sys.stderr.isatty() if progress is None else progress
    by_trace: dict[str, list[FileSpan]] = {}
    count = 0
    for span in spans:
        count += 1
        if count > max_spans:
            raise TraceTooLarge(f"more than {max_spans} spans; raise the limit with --max-spans")
        by_trace.setdefault(span.trace_hex, []).append(span)
        if show and count % progress_every == 0:
            print(f"\rread {count} spans ...", end="", file=sys.stderr, flush=True)
    if show and count >= progress_every:
        print(f"\rread {count} spans.      ", file=sys.stderr, flush=True)

    extractor = records_extractor(engine)
    reports: list[RunReport] = []
    conversations: list[tuple[SpanRecord, str]] = []
    all_spans: dict[str, FileSpan] = {}
    for trace_hex, file_spans in by_trace.items():
        records, decoded = otlp_records(trace_hex, [s.raw for s in file_spans], extractor)
        by_id = {s.span_hex: s for s in file_spans}
        # As the collector does: LLM and tool spans of a conversation that no run span holds are
        # evaluated in one run per conversation, across traces; the rest of the trace on its own.
        keys = {i: key for i, attrs in enumerate(decoded) if (key := conversation_key(attrs)) is not None}
        members = [(records[i], key) for i, key in unheld(records, keys).items()]
        if members:
            chosen = {id(record) for record, _ in members}
            records = [r for r in records if id(r) not in chosen]
            conversations.extend(members)
            all_spans.update(by_id)
        verdict = engine.evaluate_trace(records)
        stats = Stats()
        planned = plan(records, stats)
        notes: list[str] = []
        if stats.missing_parents:
            notes.append(f"{stats.missing_parents} span(s) name a parent that is not in the trace; "
                         "they are treated as local roots")  # fmt: skip
        if stats.duplicate_spans:
            notes.append(f"{stats.duplicate_spans} span(s) appear more than once; the last-ended copy is used")
        for entries in planned:
            reports.extend(_trace_runs(trace_hex, entries, verdict.findings, verdict.summaries, by_id, notes))
    if conversations:
        reports.extend(_conversation_runs(conversations, ConversationRuns(engine.config), all_spans))
    return reports


def _conversation_runs(
    members: list[tuple[SpanRecord, str]], runs: ConversationRuns, by_id: Mapping[str, FileSpan]
) -> list[RunReport]:
    """One implicit run per ``gen_ai.conversation.id``, evaluated as the collector evaluates it."""
    findings = runs.evaluate(members)
    grouped: dict[str, list[SpanRecord]] = {}
    for record, key in members:
        grouped.setdefault(key, []).append(record)
    out = []
    for key, records in grouped.items():
        records.sort(key=lambda r: (r.start_ns or 0, r.span_id))
        conversation = key[len(KEY_PREFIX) :]
        traces = list(dict.fromkeys(r.trace_id for r in records))
        root = SpanRecord(
            trace_id=traces[0], span_id="", parent_id=None, kind=Kind.OTHER, name=f"conversation {conversation}",
            start_ns=records[0].start_ns or 0,
        )  # fmt: skip
        notes = [f"no run span: the {len(records)} LLM and tool call(s) of conversation {conversation} "
                 f"({len(traces)} trace(s)) are treated as one implicit run"]  # fmt: skip
        report = _run_report(traces[0], root, records, True, findings, None, by_id, notes)
        report.run["span_id"] = None
        report.run["conversation_id"] = conversation
        report.run["trace_ids"] = traces
        out.append(report)
    return out


def _trace_runs(
    trace_hex: str,
    entries: list[tuple[int, int, str, SpanRecord, str, str | None, int]],
    findings: Mapping[str, list[Finding]],
    summaries: Mapping[str, RunSummary],
    by_id: Mapping[str, FileSpan],
    trace_notes: list[str],
) -> list[RunReport]:
    members: dict[str, list[tuple[int, int, SpanRecord]]] = {}
    records: dict[str, SpanRecord] = {}
    for start_ns, depth, span_id, rec, run_key, parent_run_key, _ in entries:
        records[span_id] = rec
        if rec.kind is Kind.RUN:
            members.setdefault(span_id, [])
            if parent_run_key is not None:
                members.setdefault(parent_run_key, []).append((start_ns, depth, rec))
            continue
        members.setdefault(run_key, []).append((start_ns, depth, rec))
    out = []
    for run_key, spans in members.items():
        root = records.get(run_key)
        if root is None:
            continue
        implicit = root.kind is not Kind.RUN
        if implicit and not any(r is root for _, _, r in spans):
            pass  # the root is among the spans of its implicit run already (it is its own run key)
        notes = list(trace_notes)
        if implicit:
            notes.append(
                f"no run span: the spans under local root {root.span_id} ({root.name[:80]}) are treated as one run"
            )
        spans.sort(key=lambda t: (t[0], t[1], t[2].span_id))
        out.append(_run_report(trace_hex, root, [r for _, _, r in spans], implicit, findings,
                               summaries.get(run_key), by_id, notes))  # fmt: skip
    out.sort(key=lambda r: r.start_ns)
    return out


def _attr(span: FileSpan | None, key: str) -> Any:
    return span.attributes.get(key) if span is not None else None


def _run_report(
    trace_hex: str,
    root: SpanRecord,
    spans: list[SpanRecord],
    implicit: bool,
    findings: Mapping[str, list[Finding]],
    summary: RunSummary | None,
    by_id: Mapping[str, FileSpan],
    notes: list[str],
) -> RunReport:
    from ..engine.outcome import failure_mode

    starts = [r.start_ns for r in spans if r.start_ns] + ([root.start_ns] if root.start_ns else [])
    ends = [r.end_ns for r in spans if r.end_ns] + ([root.end_ns] if root.end_ns else [])
    start_ns = root.start_ns if root.start_ns else min(starts, default=0)
    end_ns = max(ends, default=start_ns)
    raw = [by_id[r.span_id] for r in spans if r.span_id in by_id]  # the record path clamps skewed ends
    skewed = [f for f in raw if f.end_ns and f.start_ns and f.end_ns < f.start_ns]
    if skewed:
        notes.append(f"{len(skewed)} span(s) end before they start (clock skew); their durations show as 0")
    early = [r for r in spans if r.start_ns and start_ns and r.start_ns < start_ns]
    if early:
        notes.append(f"{len(early)} span(s) start before their run (clock skew); offsets can be negative")

    timeline: list[Step] = []
    counter = 0
    all_findings: list[Finding] = list(findings.get(root.span_id, ()))
    for rec in spans:
        span = by_id.get(rec.span_id)
        kind = _KIND_NAMES.get(rec.kind, "other")
        step: int | None = None
        if rec.kind in (Kind.LLM, Kind.TOOL):
            counter += 1
            declared = _attr(span, sc.STEP)
            step = declared if isinstance(declared, int) and not isinstance(declared, bool) else counter
        found = list(findings.get(rec.span_id, ()))
        all_findings.extend(found)
        flags = list(dict.fromkeys(str(f.flag) for f in found))
        tokens = None
        if rec.input_tokens is not None or rec.output_tokens is not None:
            tokens = (rec.input_tokens or 0) + (rec.output_tokens or 0)
        duration = max(0, (rec.end_ns or 0) - (rec.start_ns or 0))
        timeline.append(Step(
            step=step, span_id=rec.span_id, kind=kind, name=rec.name,
            offset_ms=((rec.start_ns or start_ns) - start_ns) / 1e6, duration_ms=duration / 1e6,
            status="error" if rec.is_error else "ok", flags=flags, args_hash=rec.args_hash, tokens=tokens,
            cost_usd=rec.cost_usd, record=rec, span=span, findings=found,
        ))  # fmt: skip

    calls = [s for s in timeline if s.kind in ("llm", "tool")]
    llm = [s for s in calls if s.kind == "llm"]
    run: dict[str, Any]
    if summary is not None:
        run = {
            "steps": summary.steps, "llm_calls": summary.llm_calls, "tool_calls": summary.tool_calls,
            "input_tokens": summary.input_tokens, "output_tokens": summary.output_tokens,
            "cost_usd": summary.cost_usd,
        }  # fmt: skip
        flags_seen = [str(f) for f in summary.flags]
        mode = str(summary.failure_mode)
        origin_id = summary.fault_origin_span_id
    else:
        run = {
            "steps": len(calls), "llm_calls": len(llm), "tool_calls": len(calls) - len(llm),
            "input_tokens": sum(s.record.input_tokens or 0 for s in llm),
            "output_tokens": sum(s.record.output_tokens or 0 for s in llm),
            "cost_usd": sum(s.record.cost_usd or 0.0 for s in calls),
        }  # fmt: skip
        flags_seen = list(dict.fromkeys(str(f.flag) for f in all_findings))
        mode = str(failure_mode(root.stop_reason, flags_seen))
        origin_id = _earliest_origin(timeline)
    run = {
        "span_id": root.span_id, "name": root.name, "stop_reason": root.stop_reason, "failure_mode": mode,
        **run, "duration_s": round(max(0, end_ns - start_ns) / 1e9, 6), "flags": flags_seen,
    }  # fmt: skip

    origin_step = next((s for s in timeline if s.span_id == origin_id), None)
    fault_origin = _origin_object(origin_id, origin_step, timeline, all_findings)
    cascade = _cascade(timeline, origin_step, root) if origin_step is not None else []
    blast = _blast_radius(timeline, origin_step) if origin_step is not None else []
    failure_class, rule = _classify(fault_origin, flags_seen, root.stop_reason)
    entities = {k[len(sc.RUN_ENTITY_PREFIX) :]: str(v) for k, v in _root_attrs(by_id, root).items()
                if k.startswith(sc.RUN_ENTITY_PREFIX)}  # fmt: skip
    return RunReport(
        trace_id=trace_hex, run=run, timeline=timeline, fault_origin=fault_origin, cascade=cascade,
        blast_radius=blast, failure_class=failure_class, failure_class_rule=rule, implicit=implicit, notes=notes,
        findings=all_findings, start_ns=start_ns, end_ns=end_ns, entities=entities, root=root,
        root_span=by_id.get(root.span_id),
    )  # fmt: skip


def _root_attrs(by_id: Mapping[str, FileSpan], root: SpanRecord) -> Mapping[str, Any]:
    span = by_id.get(root.span_id)
    return span.attributes if span is not None else {}


def _earliest_origin(timeline: list[Step]) -> str | None:
    """Earliest span among the flagged spans and their evidence spans (implicit runs: no engine summary)."""
    position = {s.span_id: (s.record.start_ns, i) for i, s in enumerate(timeline)}
    candidates = set()
    for s in timeline:
        for f in s.findings:
            candidates.add(s.span_id)
            if f.related_span_id in position:
                candidates.add(f.related_span_id)
    return min(candidates, key=lambda c: position[c], default=None)


def _origin_object(
    origin_id: str | None, origin: Step | None, timeline: list[Step], findings: list[Finding]
) -> dict[str, Any] | None:
    if origin_id is None:
        return None
    own = sorted(origin.findings, key=lambda f: _SEVERITY_ORDER.get(str(f.severity), 9)) if origin else []
    if own:
        flag, reason = str(own[0].flag), own[0].reason
    else:
        evidence = next((f for f in findings if f.related_span_id == origin_id), None)
        if evidence is not None:
            flagged = next((s for s in timeline if s.span_id == evidence.span_id), None)
            where = f"step {flagged.step}" if flagged is not None and flagged.step is not None else evidence.span_id
            flag = str(evidence.flag)
            reason = f"evidence of {flag} on {where}: {evidence.reason}"
        else:
            flag, reason = None, "the engine named this span as the run's fault origin"
    return {"span_id": origin_id, "step": origin.step if origin else None, "flag": flag, "reason": reason}


def _entities(*groups: Iterable[tuple[str, str]] | None) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for group in groups:
        if group:
            out.update((str(t), str(i)) for t, i in group)
    return out


def _cascade(timeline: list[Step], origin: Step, root: SpanRecord) -> list[str]:
    """Span ids from the fault origin on that built on what it introduced (rule in the module docstring)."""
    index = timeline.index(origin)
    known = _entities(tuple((root.entities or {}).items()), root.input_entities)
    for s in timeline[:index]:
        r = s.record
        known |= _entities(r.input_entities, r.requested_entities, r.arg_entities, r.result_entities)
    o = origin.record
    tainted = _entities(o.requested_entities, o.arg_entities, o.result_entities, o.input_entities) - known
    calls = {(str(n), str(h)) for n, h in o.requested_calls or ()}
    cascade = [origin.span_id]
    last_end = o.end_ns or o.start_ns
    for s in timeline[index + 1 :]:
        r = s.record
        joins = False
        if s.kind == "tool":
            joins = (str(r.tool_name), str(r.args_hash)) in calls or bool(
                _entities(r.arg_entities, r.result_entities) & tainted
            )
        elif s.kind == "llm":
            seen = _entities(r.input_entities)
            joins = bool(seen & tainted) or (not seen and last_end is not None and (r.start_ns or 0) >= last_end)
        if not joins:
            continue
        cascade.append(s.span_id)
        tainted |= _entities(r.requested_entities, r.arg_entities, r.result_entities)
        calls |= {(str(n), str(h)) for n, h in r.requested_calls or ()}
        last_end = min(last_end, r.end_ns or r.start_ns) if last_end else (r.end_ns or r.start_ns)
    return cascade


def _blast_radius(timeline: list[Step], origin: Step) -> list[dict[str, Any]]:
    index = timeline.index(origin)
    rows = []
    for s in timeline[index:]:
        r = s.record
        if s.kind != "tool" or not r.side_effect:
            continue
        reversible = _attr(s.span, sc.TOOL_REVERSIBLE)
        key_present = bool(r.idempotency_key) or bool(_attr(s.span, sc.TOOL_IDEMPOTENCY_KEY_VALUE))
        rows.append({
            "span_id": s.span_id, "step": s.step, "tool": r.tool_name or s.name, "status": s.status,
            "reversible": reversible if isinstance(reversible, bool) else None,
            "idempotency_key_present": key_present,
        })  # fmt: skip
    order: dict[Any, int] = {False: 0, None: 1, True: 2}
    rows.sort(key=lambda row: (order[row["reversible"]], row["step"] if row["step"] is not None else 0))
    return rows


def _classify(fault_origin: dict[str, Any] | None, flags: list[str], stop_reason: str | None) -> tuple[str, str]:
    if fault_origin and fault_origin.get("flag") in FAILURE_CLASS_OF_FLAG:
        flag = fault_origin["flag"]
        step = fault_origin.get("step")
        where = f" (step {step})" if step is not None else ""
        return FAILURE_CLASS_OF_FLAG[flag], f"{flag} at the fault origin{where} -> {FAILURE_CLASS_OF_FLAG[flag]}"
    for flag in flags:
        if flag in FAILURE_CLASS_OF_FLAG:
            return FAILURE_CLASS_OF_FLAG[
                flag
            ], f"first classified flag of the run, {flag} -> {FAILURE_CLASS_OF_FLAG[flag]}"
    if stop_reason in _CLASS_OF_STOP_REASON:
        found = _CLASS_OF_STOP_REASON[stop_reason]
        return found, f"no classified flag; the run's stop reason {stop_reason} -> {found}"
    return "none", "no flag of the run maps to a failure class"
