"""Seed 003's agent postmortem, drafted from a trace: six sections and the checklist, as Markdown or one HTML page.

The draft is built once as a small document model (sections of blocks) and
rendered by two printers, so the Markdown and the HTML say the same thing.
Every string that comes from the trace goes through :mod:`.text` (secrets
redacted, control characters replaced, escaped for the format). The HTML page
is self-contained and offline: inline CSS and SVG, no script, and a Content
Security Policy that forbids loading anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Union

from .. import semconv as sc
from .analysis import RunReport, Step
from .text import clean, html_text, md_text

__all__ = ["first_user_message", "render_html", "render_markdown"]

NOT_CAPTURED = "not captured (content capture was off)"
_SEVERITY_RANK = {"critical": 4, "high": 3, "medium": 2, "low": 1}

# Root-cause candidates by flag: (category from seed 003, what the evidence suggests).
_ROOT_CAUSES: dict[str, tuple[str, str]] = {
    "ENTITY_HALLUCINATION": (
        "prompt design flaw or model limitation",
        "the model introduced an id that was nowhere in its context; nothing constrained "
        "entity references or validated them before the tool call",
    ),
    "ENTITY_MISMATCH": (
        "tool interface issue",
        "a tool returned another subject's data and nothing checked ownership against the run's subject",
    ),
    "TOOL_ARG_MISMATCH": ("tool interface issue", "arguments did not match the tool's schema"),
    "UNKNOWN_TOOL": ("prompt design flaw", "the model called a tool it was not offered"),
    "TOOL_DENIED": ("prompt design flaw", "the model reached for a tool outside the allow list"),
    "CONTEXT_DRIFT": (
        "data contamination",
        "the system instructions or goal changed without a user turn (injected or retrieved content)",
    ),
    "DUPLICATE_SIDE_EFFECT": ("tool interface issue", "a write was repeated without an idempotency key"),
    "RETRY_STORM": ("tool interface issue", "a failing tool was retried again and again"),
    "LOOP_DETECTED": ("prompt design flaw or missing guard rail", "the same call repeated with the same arguments"),
    "NO_PROGRESS": ("prompt design flaw or missing guard rail", "calls kept coming without new results"),
    "TOKEN_SPIKE": ("model limitation or over-retrieval", "one call used far more tokens than the run's average"),
}
_BUDGET_FLAGS = {
    "STEP_BUDGET_EXCEEDED": "max_steps", "TOOL_BUDGET_EXCEEDED": "max_tool_calls",
    "TIME_BUDGET_EXCEEDED": "max_seconds", "COST_BUDGET_EXCEEDED": "max_usd",
    "TOKEN_BUDGET_EXCEEDED": "max_tokens",
}  # fmt: skip


# --------------------------------------------------------------------------- document model


@dataclass
class Para:
    text: str


@dataclass
class Fields:
    rows: list[tuple[str, str]]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Code:
    text: str
    language: str = ""


@dataclass
class Checklist:
    items: list[tuple[bool, str]]


@dataclass
class Timeline:
    report: RunReport


Block = Union[Para, Fields, Table, Code, Checklist, Timeline]  # noqa: UP007 (a runtime alias on Python 3.10)


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


# --------------------------------------------------------------------------- content


def first_user_message(report: RunReport) -> str | None:
    """The run's first user message, from the first LLM call's captured input (None without content)."""
    for step in report.timeline:
        if step.kind != "llm" or step.span is None:
            continue
        raw = step.span.attributes.get(sc.GEN_AI_INPUT_MESSAGES)
        if not isinstance(raw, str):
            continue
        try:
            messages = json.loads(raw)
        except ValueError:
            return None
        for message in messages if isinstance(messages, list) else ():
            if isinstance(message, dict) and message.get("role") == "user":
                parts = message.get("parts")
                if isinstance(parts, list):
                    texts = [p.get("content") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
                    return " ".join(t for t in texts if isinstance(t, str)) or None
                content = message.get("content")
                return content if isinstance(content, str) else None
        return None
    return None


def _time(ns: int) -> str:
    if not ns:
        return "unknown"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _label(step: Step | None) -> str:
    if step is None:
        return "(not in the run)"
    number = f"step {step.step}" if step.step is not None else "no step"
    return f"{number}, {clean(step.name, 80)}"


def _findings_rows(report: RunReport) -> list[list[str]]:
    rows = []
    for step in report.timeline:
        for f in step.findings:
            rows.append([_num(step.step), clean(step.name, 60), str(f.flag), str(f.severity), clean(f.reason)])
    return rows


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def _first_finding(report: RunReport, minimum: int) -> Step | None:
    for step in report.timeline:
        if any(_SEVERITY_RANK.get(str(f.severity), 0) >= minimum for f in step.findings):
            return step
    return None


def _prevented(report: RunReport, stop_at: Step) -> list[dict[str, Any]]:
    """Blast-radius actions that come after STOP_AT (the next call would have raised AnomalyStop)."""
    index = report.timeline.index(stop_at)
    later = {s.span_id for s in report.timeline[index + 1 :]}
    return [row for row in report.blast_radius if row["span_id"] in later]


def _sections(report: RunReport, source: str) -> list[Section]:
    run = report.run
    origin = report.fault_origin
    origin_step = report.step_of(origin["span_id"]) if origin else None
    run_id = report.root_span.attributes.get(sc.RUN_ID) if report.root_span is not None else None
    question = first_user_message(report)
    implicit = " (implicit run: no run span)" if report.implicit else ""
    subject = ", ".join(f"{clean(k, 40)} {clean(v, 80)}" for k, v in sorted(report.entities.items()))

    context = Section("1. Session context", [Fields([
        ("Run", f"{clean(run['name'], 120)} (run id {clean(run_id or 'not recorded', 80)})"),
        ("Trace", (f"{report.trace_id}, run span {run['span_id']}" if run["span_id"] else
                   f"{', '.join(run.get('trace_ids') or [report.trace_id])} (conversation "
                   f"{clean(run.get('conversation_id'), 100)})") + implicit),
        ("Time range", f"{_time(report.start_ns)} to {_time(report.end_ns)} ({run['duration_s']:.3f} s)"),
        ("Calls", f"{run['steps']} steps: {run['llm_calls']} LLM calls, {run['tool_calls']} tool calls"),
        ("Tokens", f"{run['input_tokens']} input + {run['output_tokens']} output"),
        ("Cost", f"${run['cost_usd']:.6f}"),
        ("Subject", subject or "none declared"),
        ("First user message", clean(question, 300) if question is not None else NOT_CAPTURED),
        ("Intended behaviour", "(describe what the run was meant to do)"),
    ])])  # fmt: skip
    for note in report.notes:
        context.blocks.append(Para(f"Note: {clean(note)}"))

    classification = Section("2. Failure classification", [Fields([
        ("Failure class", report.failure_class),
        ("Chosen by", clean(report.failure_class_rule)),
        ("Outcome", f"{run['failure_mode']}, stop reason {clean(run['stop_reason'] or 'unknown', 60)}"),
    ])])  # fmt: skip
    rows = _findings_rows(report)
    if rows:
        classification.blocks.append(Table(["step", "span", "flag", "severity", "evidence"], rows))
    else:
        classification.blocks.append(Para("No detector flagged this run."))

    cascade = Section("3. Fault origin and cascade path", [Timeline(report)])
    if origin is not None:
        cascade.blocks.append(Fields([
            ("Fault origin", _label(origin_step) + f" (span {origin['span_id']})"),
            ("Flag", origin["flag"] or "none on the span itself"),
            ("Why", clean(origin["reason"])),
            ("Context at that step", _context_at(report, origin_step)),
        ]))  # fmt: skip
        path = [report.step_of(sid) for sid in report.cascade]
        cascade.blocks.append(Table(
            ["step", "kind", "span", "status", "flags"],
            [[_num(s.step), s.kind, clean(s.name, 80), s.status, ", ".join(s.flags) or "-"] for s in path if s],
        ))  # fmt: skip
        last = report.timeline[-1] if report.timeline else None
        cascade.blocks.append(Para(f"Final output: {_label(last)}. Cascade rule: spans from the fault origin on that "
                                   "used an entity, call or result it introduced (see the README)."))  # fmt: skip
    else:
        cascade.blocks.append(Para("No fault origin: nothing was flagged. Walk the trace backward from the wrong "
                                   "output by hand."))  # fmt: skip

    impact = Section("4. Impact assessment")
    if report.blast_radius:
        impact.blocks.append(Table(
            ["step", "external action", "status", "reversible", "idempotency key", "reversal plan"],
            [[_num(r["step"]), clean(r["tool"], 80), r["status"],
              {True: "yes", False: "NO", None: "unknown"}[r["reversible"]],
              "present" if r["idempotency_key_present"] else "absent", "(to fill in)"] for r in report.blast_radius],
        ))  # fmt: skip
    else:
        impact.blocks.append(Para("No side-effect tool call at or after the fault origin."))
    if origin_step is not None:
        index = report.timeline.index(origin_step)
        after = sum(s.cost_usd or 0.0 for s in report.timeline[index:])
        impact.blocks.append(Para(f"Cost from the fault origin on: ${after:.6f} of ${run['cost_usd']:.6f}."))
    impact.blocks.append(Para("User-facing impact: (to fill in)."))

    root = Section("5. Root cause")
    candidates = []
    for flag in run.get("flags", []):
        if flag in _ROOT_CAUSES:
            category, why = _ROOT_CAUSES[flag]
            candidates.append([flag, category, why])
        elif flag in _BUDGET_FLAGS:
            candidates.append([flag, "missing guard rail", f"the run passed its {_BUDGET_FLAGS[flag]} budget"])
    if candidates:
        root.blocks.append(Para("Candidates from the evidence (name one):"))
        root.blocks.append(Table(["evidence", "category", "what it suggests"], candidates))
    else:
        root.blocks.append(Para("No candidate from the detectors; name the root cause from the trace."))
    root.blocks.append(Fields([("Root cause", "(one category: model limitation, prompt design flaw, tool interface "
                                              "issue or data contamination)")]))  # fmt: skip

    gap = Section("6. Detection gap", _gap(report))

    proposals = Section("Proposed alert rule and regression test", _proposals(report, source))

    checklist = Section("Checklist", [Checklist([
        (True, f"Session trace exported and stored before log rotation ({clean(source, 120)})"),
        (origin_step is not None, "Fault origin identified by step number"
         + (f" (step {origin_step.step})" if origin_step is not None and origin_step.step is not None else "")),
        (report.failure_class != "none", f"Failure mode classified ({report.failure_class})"),
        (bool(report.cascade), "Full cascade path documented from fault origin to final output"),
        (origin_step is not None, "All external actions after fault origin enumerated"
         + f" ({len(report.blast_radius)})"),
        (False, "Reversible vs. irreversible actions identified and remediated"),
        (False, "Root cause documented with one clear category"),
        (True, "Detection gap described: what monitoring would have caught this earlier?"),
        (False, "New eval test added to regression suite for this failure case"),
        (False, "Alert configured for the failure signature (anomaly flag, token spike, or loop pattern)"),
        (False, "Postmortem distributed to platform, product, and on-call teams within 48 hours"),
    ])])  # fmt: skip
    return [context, classification, cascade, impact, root, gap, proposals, checklist]


def _context_at(report: RunReport, step: Step | None) -> str:
    """What the detectors knew the model's context held at the origin (entity ids), from hashes and entities."""
    if step is None:
        return "unknown"
    index = report.timeline.index(step)
    known: list[str] = [f"{t}:{i}" for t, i in sorted(report.entities.items())]
    for s in report.timeline[:index]:
        r = s.record
        for group in (r.input_entities, r.result_entities):
            for t, i in group or ():
                if f"{t}:{i}" not in known:
                    known.append(f"{t}:{i}")
    r = step.record
    new = [f"{t}:{i}" for t, i in (r.requested_entities or ()) if f"{t}:{i}" not in known]
    text = "entities in context: " + (", ".join(known) or "none recorded")
    if new:
        text += "; introduced here: " + ", ".join(new)
    return clean(text)


def _gap(report: RunReport) -> list[Block]:
    if not report.findings or not report.timeline:
        return [Para("Nothing was flagged: the detectors have no signature for this failure. Add an entity or "
                     "schema check that would have flagged it (see the regression test below).")]  # fmt: skip
    first = next((s for s in report.timeline if s.findings), None)
    last = report.timeline[-1]
    blocks: list[Block] = []
    if first is not None:
        later = len(report.timeline) - report.timeline.index(first) - 1
        run_end_ms = (report.end_ns - report.start_ns) / 1e6
        blocks.append(Para(
            f"The first flag ({', '.join(first.flags)}) fired at {_label(first)}, {first.offset_ms:.0f} ms into the "
            f"run; the run went on for {later} more span(s) and ended at {run_end_ms:.0f} ms ({_label(last)})."
        ))  # fmt: skip
    rows = []
    for name, minimum in (("[critical]", 4), ("[high]", 3)):
        stop = _first_finding(report, minimum)
        if stop is None:
            rows.append([f"anomaly.stop_on: {name}", "would not have fired", "-"])
            continue
        prevented = _prevented(report, stop)
        actions = ", ".join(f"step {_num(r['step'])} {clean(r['tool'], 40)}" for r in prevented) or "none"
        rows.append([f"anomaly.stop_on: {name}", f"stops the call after {_label(stop)}", actions])
    for step in report.timeline:
        for f in step.findings:
            if str(f.flag) in _BUDGET_FLAGS:
                rows.append([f"budget {_BUDGET_FLAGS[str(f.flag)]} with enforce: true",
                             f"stops the call after {_label(step)}",
                             ", ".join(f"step {_num(r['step'])} {clean(r['tool'], 40)}"
                                       for r in _prevented(report, step)) or "none"])  # fmt: skip
                break
    blocks.append(Table(["guard", "effect", "external actions it would have prevented"], rows))
    blocks.append(Para("Why was it not caught before the user saw it? (to fill in: missing eval, alert, guard rail)"))
    return blocks


def _proposals(report: RunReport, source: str) -> list[Block]:
    origin = report.fault_origin
    flag = origin["flag"] if origin and origin.get("flag") else None
    blocks: list[Block] = []
    if flag is not None:
        blocks.append(Para(f"Stop runs on this signature (agentwatch.yaml), and alert on the metric "
                           f"{sc.METRIC_ANOMALIES} with {sc.ANOMALY_FLAG}={flag}:"))  # fmt: skip
        blocks.append(Code(f"agent:\n  anomaly:\n    stop_on: [{flag}, critical]\n", "yaml"))
        blocks.append(Code(f'sum(rate(agentwatch_anomalies_total{{agentwatch_anomaly_flag="{flag}"}}[5m])) > 0',
                           "promql"))  # fmt: skip
    else:
        blocks.append(Para("No flag to alert on: add a detector or an eval for this failure first."))
    trace = report.trace_id
    run = report.run["span_id"]
    blocks.append(Para("Regression test: replay this run through the agent's entry point and fail while the "
                       "incident's critical or high flags still fire on what the code does (needs the run "
                       "recorded with content capture on):"))  # fmt: skip
    blocks.append(Code(f"agentwatch replay test {clean(source, 200)} --trace {trace} --run {run} "
                       "--entry yourpackage.agent:handle -o tests/test_incident.py\n", "sh"))  # fmt: skip
    return blocks


# --------------------------------------------------------------------------- markdown


def render_markdown(reports: Sequence[RunReport], *, source: str) -> str:
    """The postmortem draft of every run, as GitHub-flavoured Markdown."""
    out: list[str] = []
    for report in reports:
        out.append(f"# Agent postmortem (draft): {md_text(report.run['name'], 120)}\n")
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        out.append(f"Drafted by agentwatch from {md_text(source, 200)} on {today}. "
                   "Lines in parentheses are for you to fill in.\n")  # fmt: skip
        for section in _sections(report, source):
            out.append(f"## {section.title}\n")
            for block in section.blocks:
                out.append(_md_block(block))
    return "\n".join(out)


def _md_block(block: Block) -> str:
    if isinstance(block, Para):
        return md_text(block.text, 4000) + "\n"
    if isinstance(block, Fields):
        return "".join(f"- **{md_text(k)}:** {md_text(v, 2000)}\n" for k, v in block.rows)
    if isinstance(block, Table):
        head = "| " + " | ".join(md_text(h) for h in block.headers) + " |\n"
        rule = "|" + "---|" * len(block.headers) + "\n"
        body = "".join("| " + " | ".join(md_text(c) for c in row) + " |\n" for row in block.rows)
        return head + rule + body
    if isinstance(block, Code):
        fence = "````"
        return f"{fence}{block.language}\n{clean_code(block.text)}{fence}\n"
    if isinstance(block, Checklist):
        return "".join(f"- [{'x' if done else ' '}] {md_text(text)}\n" for done, text in block.items)
    if isinstance(block, Timeline):
        return _md_timeline(block.report)
    raise TypeError(type(block).__name__)  # pragma: no cover - every block type is handled above


def clean_code(text: str) -> str:
    """Code blocks hold our own text around cleaned trace values; keep their lines, drop backtick fences."""
    return "\n".join(clean(line, 2000).replace("`", "'") for line in text.splitlines()) + "\n"


def _md_timeline(report: RunReport) -> str:
    origin = report.fault_origin["span_id"] if report.fault_origin else None
    cascade = set(report.cascade)
    blast = {r["span_id"] for r in report.blast_radius}
    rows = []
    for s in report.timeline:
        role = "fault origin" if s.span_id == origin else ("cascade" if s.span_id in cascade else "")
        if s.span_id in blast:
            role = (role + ", " if role else "") + "blast radius"
        rows.append([_num(s.step), f"{s.offset_ms:.0f} ms", s.kind, clean(s.name, 60), s.status,
                     _num(s.tokens), "-" if s.cost_usd is None else f"{s.cost_usd:.6f}",
                     ", ".join(s.flags) or "-", role or "-"])  # fmt: skip
    return _md_block(Table(["step", "offset", "kind", "name", "status", "tokens", "cost $", "flags", "role"], rows))


# --------------------------------------------------------------------------- html

_CSS = """
body{font:15px/1.5 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d2330}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;width:100%}td,th{border:1px solid #ccd;padding:.25em .5em;
text-align:left;vertical-align:top;font-size:.92em}th{background:#f2f4f8}dl{display:grid;
grid-template-columns:max-content 1fr;gap:.2em 1em}dt{font-weight:600}dd{margin:0}pre{background:#f6f8fa;
padding:.7em;overflow:auto}ul.check{list-style:none;padding-left:0}.mark{fill:#7a8aa6}.mark.llm{fill:#5477c4}
.mark.tool{fill:#4c9a6a}.mark.cascade{fill:#e0a030}.mark.origin{fill:#d23c3c}.mark.blast{stroke:#000;
stroke-width:2}.legend text,.axis text{font-size:11px;fill:#333}.label{font-size:11px;fill:#333}
tr.origin td{background:#fde2e2}tr.blast td{background:#fff1d6}
"""


def render_html(reports: Sequence[RunReport], *, source: str) -> str:
    """The postmortem draft as one self-contained HTML page (inline CSS and SVG, nothing fetched)."""
    body: list[str] = []
    for report in reports:
        body.append(f"<article><h1>Agent postmortem (draft): {html_text(report.run['name'], 120)}</h1>")
        body.append(f"<p>Drafted by agentwatch from {html_text(source, 200)}. Lines in parentheses are for you "
                    "to fill in.</p>")  # fmt: skip
        for section in _sections(report, source):
            body.append(f"<section><h2>{html_text(section.title)}</h2>")
            body.extend(_html_block(block) for block in section.blocks)
            body.append("</section>")
        body.append("</article>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        'img-src data:">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>Agent postmortem (draft)</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _html_block(block: Block) -> str:
    if isinstance(block, Para):
        return f"<p>{html_text(block.text, 4000)}</p>"
    if isinstance(block, Fields):
        return (
            "<dl>" + "".join(f"<dt>{html_text(k)}</dt><dd>{html_text(v, 2000)}</dd>" for k, v in block.rows) + "</dl>"
        )
    if isinstance(block, Table):
        head = "".join(f"<th>{html_text(h)}</th>" for h in block.headers)
        rows = "".join("<tr>" + "".join(f"<td>{html_text(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(block, Code):
        return f"<pre><code>{html_text_lines(block.text)}</code></pre>"
    if isinstance(block, Checklist):
        items = "".join(f"<li>{'&#9745;' if done else '&#9744;'} {html_text(text)}</li>" for done, text in block.items)
        return f'<ul class="check">{items}</ul>'
    if isinstance(block, Timeline):
        return _svg_timeline(block.report) + _html_timeline_table(block.report)
    raise TypeError(type(block).__name__)  # pragma: no cover


def html_text_lines(text: str) -> str:
    return "\n".join(html_text(line, 2000) for line in text.splitlines())


def _roles(report: RunReport) -> tuple[str | None, set[str], set[str]]:
    origin = report.fault_origin["span_id"] if report.fault_origin else None
    return origin, set(report.cascade), {r["span_id"] for r in report.blast_radius}


def _svg_timeline(report: RunReport) -> str:
    """One mark per step (LLM or tool call) on a time axis; fault origin red, cascade amber, blast radius outlined."""
    origin, cascade, blast = _roles(report)
    steps = [s for s in report.timeline if s.step is not None]
    width, left, row_h = 1000, 230, 22
    total_ms = max([s.offset_ms + s.duration_ms for s in steps] + [1.0])
    scale = (width - left - 20) / total_ms
    height = 40 + row_h * len(steps)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="run timeline" class="timeline" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">']  # fmt: skip
    for i, s in enumerate(steps):
        y = 10 + i * row_h
        x = left + max(0.0, s.offset_ms) * scale
        w = max(3.0, s.duration_ms * scale)
        classes = ["mark", s.kind]
        if s.span_id == origin:
            classes.append("origin")
        elif s.span_id in cascade:
            classes.append("cascade")
        if s.span_id in blast:
            classes.append("blast")
        label = f"{s.step} {clean(s.name, 30)}"
        tip = f"step {s.step}: {clean(s.name, 80)} ({s.status}) {', '.join(s.flags)}"
        parts.append(
            f'<text class="label" x="4" y="{y + 14}">{html_text(label)}</text>'
            f'<rect class="{" ".join(classes)}" data-step="{s.step}" data-span-id="{html_text(s.span_id)}" '
            f'x="{x:.1f}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}"><title>{html_text(tip)}</title></rect>'
        )
    y = height - 18
    parts.append(f'<g class="axis"><line x1="{left}" y1="{y}" x2="{width - 20}" y2="{y}" stroke="#999"/>'
                 f'<text x="{left}" y="{y + 14}">0 ms</text>'
                 f'<text x="{width - 90}" y="{y + 14}">{total_ms:.0f} ms</text></g>')  # fmt: skip
    parts.append("</svg>")
    parts.append('<p class="legend">Red: fault origin. Amber: cascade. Black outline: blast radius '
                 "(external action after the fault origin). Blue: LLM call, green: tool call.</p>")  # fmt: skip
    return "".join(parts)


def _html_timeline_table(report: RunReport) -> str:
    origin, _, blast = _roles(report)
    rows = []
    for s in report.timeline:
        cls = "origin" if s.span_id == origin else ("blast" if s.span_id in blast else "")
        cells = [_num(s.step), f"{s.offset_ms:.0f} ms", s.kind, s.name, s.status, _num(s.tokens),
                 "-" if s.cost_usd is None else f"{s.cost_usd:.6f}", ", ".join(s.flags) or "-"]  # fmt: skip
        rows.append(f'<tr class="{cls}">' + "".join(f"<td>{html_text(c, 80)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("step", "offset", "kind", "name", "status", "tokens", "cost $", "flags"))
    return f'<table class="steps"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
