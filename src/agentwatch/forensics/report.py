"""The ``agentwatch forensics`` terminal report of one run (the --json form is :meth:`RunReport.as_json`)."""

from __future__ import annotations

from typing import Any

from .analysis import RunReport
from .text import clean

__all__ = ["json_report", "terminal_report"]


def json_report(report: RunReport) -> dict[str, Any]:
    """The contract's object with every trace-derived string redacted (ids and hashes are hex already)."""
    data = report.as_json()
    data["run"]["name"] = clean(data["run"]["name"])
    for entry in data["timeline"]:
        entry["name"] = clean(entry["name"])
    if data["fault_origin"]:
        data["fault_origin"]["reason"] = clean(data["fault_origin"]["reason"])
    for row in data["blast_radius"]:
        row["tool"] = clean(row["tool"])
    data["notes"] = [clean(n) for n in data["notes"]]
    return data


def _num(value: float | int | None, fmt: str = "{:g}") -> str:
    return "-" if value is None else fmt.format(value)


def terminal_report(report: RunReport) -> str:
    """Plain text for a terminal: timeline, fault origin and why, cascade, blast radius, totals, class."""
    run = report.run
    origin = report.fault_origin
    cascade = set(report.cascade)
    if run["span_id"] is None:  # an implicit run of one conversation, across traces
        where = f"{len(run.get('trace_ids') or ())} trace(s), first {report.trace_id}"
    else:
        where = f"trace {report.trace_id}, span {run['span_id']}"
    lines = [
        f"run {clean(run['name'], 120)}  ({where})" + ("  [implicit run: no run span]" if report.implicit else ""),
        f"  outcome: {run['failure_mode']}, stop reason {clean(run['stop_reason'] or 'unknown', 60)}; "
        f"failure class: {report.failure_class} ({clean(report.failure_class_rule)})",
        "",
        "  timeline:",
        f"  {'':2}{'step':>4}  {'offset':>9}  {'kind':<5}  {'name':<32}  {'status':<6}  {'tokens':>7}  "
        f"{'cost $':>9}  flags",
    ]
    for s in report.timeline:
        mark = "!>" if origin and s.span_id == origin["span_id"] else ("> " if s.span_id in cascade else "  ")
        lines.append(
            f"  {mark}{_num(s.step, '{:d}'):>4}  {s.offset_ms:>7.0f}ms  {s.kind:<5}  {clean(s.name, 32):<32}  "
            f"{s.status:<6}  {_num(s.tokens, '{:d}'):>7}  {_num(s.cost_usd, '{:.6f}'):>9}  "
            f"{', '.join(s.flags) or '-'}"
        )
    lines.append("  (!> fault origin, > cascade)")
    lines.append("")
    if origin:
        step = f"step {origin['step']}" if origin["step"] is not None else "no step"
        lines.append(f"  fault origin: {step}, span {origin['span_id']}, {origin['flag'] or 'no flag'}")
        lines.append(f"    why: {clean(origin['reason'])}")
        path = [report.step_of(sid) for sid in report.cascade]
        lines.append("  cascade: " + " -> ".join(
            f"{s.step if s.step is not None else '-'} {clean(s.name, 40)}" for s in path if s is not None
        ))  # fmt: skip
    else:
        lines.append("  fault origin: none (nothing was flagged in this run)")
    if report.blast_radius:
        lines.append("  blast radius (external actions at or after the fault origin, irreversible first):")
        for row in report.blast_radius:
            rev = {True: "reversible", False: "IRREVERSIBLE", None: "reversibility unknown"}[row["reversible"]]
            key = "idempotency key" if row["idempotency_key_present"] else "no idempotency key"
            lines.append(
                f"    step {_num(row['step'], '{:d}')}: {clean(row['tool'], 60)} ({row['status']}, {rev}, {key})"
            )
    elif origin:
        lines.append("  blast radius: no side-effect tool call at or after the fault origin")
    lines.append(
        f"  totals: {run['steps']} steps ({run['llm_calls']} LLM, {run['tool_calls']} tool), "
        f"{run['input_tokens']} input + {run['output_tokens']} output tokens, ${run['cost_usd']:.6f}, "
        f"{run['duration_s']:.3f} s"
    )
    for note in report.notes:
        lines.append(f"  note: {clean(note)}")
    return "\n".join(lines)
