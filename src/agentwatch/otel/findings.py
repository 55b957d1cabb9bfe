"""Turn engine findings into the contract's span attributes and events.

One function serves every edge (live spans in the instrumentation, enriched
copies in the processor/exporter, protobuf spans in the collector), so flags
look the same wherever they were found. Flags are a set: a flag already on the
span is never added twice, and its event is not repeated. Reasons are redacted
(:func:`safe_reason`): they quote values the detectors saw.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .. import semconv as sc
from ..engine.record import Finding, Kind, RunSummary
from ..redaction import redact_text

AttrMap = dict[str, Any]
EventSpec = tuple[str, AttrMap]


def safe_reason(finding: Finding) -> str:
    """A finding's reason as it may leave the process: detectors quote ids and values, so redact it."""
    return redact_text(finding.reason)


def anomaly_update(
    existing_flags: Sequence[str] | None, existing_severity: str | None, findings: Iterable[Finding]
) -> tuple[AttrMap, list[EventSpec], list[Finding]]:
    """Attributes to set, events to add, and the findings that were new on this span.

    Returns empty results when every finding's flag was already present.
    """
    flags = list(existing_flags or ())
    seen = set(flags)
    severity = existing_severity
    events: list[EventSpec] = []
    new: list[Finding] = []
    for finding in findings:
        flag = str(finding.flag)
        if flag in seen:
            continue
        seen.add(flag)
        flags.append(flag)
        new.append(finding)
        sev = str(finding.severity)
        if severity is None or sc.SEVERITY_RANK.get(sev, 0) > sc.SEVERITY_RANK.get(severity, 0):
            severity = sev
        event: AttrMap = {
            sc.ANOMALY_FLAG: flag,
            sc.ANOMALY_SEVERITY: sev,
            sc.ANOMALY_REASON: safe_reason(finding),
        }
        if finding.related_span_id:
            event[sc.ANOMALY_RELATED_SPAN_ID] = finding.related_span_id
        events.append((sc.ANOMALY_EVENT, event))
    if not new:
        return {}, [], []
    attrs: AttrMap = {sc.ANOMALY_FLAGS: tuple(flags), sc.ANOMALY_SEVERITY: severity}
    return attrs, events, new


def span_outcome(
    kind: Kind, findings: Iterable[Finding] | None, summary: RunSummary | None
) -> tuple[list[Finding], RunSummary | None]:
    """What a whole-trace verdict puts on one span: its own findings, plus those of the run it closes.

    A local root that only stands in for a run (no run span in the trace) carries
    the run summary only when the run was flagged.
    """
    found = list(findings or ())
    if summary is not None:
        if kind is not Kind.RUN and not summary.flags and not summary.findings:
            summary = None
        else:
            found.extend(f for f in summary.findings if f not in found)
    return found, summary


def run_summary_attributes(summary: RunSummary, existing_flags: Any = None) -> AttrMap:
    """The run span's anomaly summary (contract §3) and failure mode (§4).

    ``existing_flags`` is whatever the span already holds; anything but a list of
    flags is ignored.
    """
    flags = list(existing_flags) if isinstance(existing_flags, (tuple, list)) else []
    for flag in summary.flags:
        if flag not in flags:
            flags.append(flag)
    attrs: AttrMap = {
        sc.RUN_ANOMALY_FLAGS: tuple(flags),
        sc.RUN_ANOMALY_COUNT: summary.anomaly_count,
        sc.RUN_FAILURE_MODE: str(summary.failure_mode),
    }
    if summary.fault_origin_span_id:
        attrs[sc.RUN_FAULT_ORIGIN_SPAN_ID] = summary.fault_origin_span_id
    return attrs
