"""Print finished spans as run → phase → call trees, for development and the demo."""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from . import semconv as sc

# What to show per span, in order (name shown as "label=value").
_SHOWN = (
    (sc.RUN_STOP_REASON, "stop_reason"),
    (sc.RUN_FAILURE_MODE, "failure_mode"),
    (sc.RUN_STEPS, "steps"),
    (sc.RUN_INPUT_TOKENS, "in_tokens"),
    (sc.RUN_OUTPUT_TOKENS, "out_tokens"),
    (sc.RUN_COST_USD, "cost_usd"),
    (sc.STEP, "step"),
    (sc.GEN_AI_USAGE_INPUT_TOKENS, "in_tokens"),
    (sc.GEN_AI_USAGE_OUTPUT_TOKENS, "out_tokens"),
    (sc.COST_USD, "cost_usd"),
    (sc.GEN_AI_RESPONSE_FINISH_REASONS, "finish"),
    (sc.LLM_TOOL_CALLS, "asks"),
    (sc.TOOL_ARGS_HASH, "args_hash"),
    (sc.TOOL_ERROR_CLASS, "error_class"),
    (sc.RUN_FAULT_ORIGIN_SPAN_ID, "fault_origin"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".")
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value)


def render_tree(spans: Sequence[ReadableSpan], *, color: bool = False) -> str:
    """A text tree per trace: duration, key attributes, anomaly flags and their reasons."""
    red, dim, reset = ("\033[31m", "\033[2m", "\033[0m") if color else ("", "", "")
    by_parent: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    ids = {s.context.span_id for s in spans if s.context is not None}
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        by_parent[parent if parent in ids else None].append(span)
    lines: list[str] = []

    def walk(span: ReadableSpan, depth: int) -> None:
        attrs = span.attributes or {}
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        shown = " ".join(f"{label}={_fmt(attrs[key])}" for key, label in _SHOWN if key in attrs)
        sid = format(span.context.span_id, "016x") if span.context else "?"
        lines.append(f"{'  ' * depth}{span.name}  {dim}[{ms:.1f} ms span={sid}]{reset} {shown}".rstrip())
        flags = attrs.get(sc.ANOMALY_FLAGS)
        if flags:
            lines.append(f"{'  ' * depth}  {red}⚑ {_fmt(flags)[1:-1]} ({attrs.get(sc.ANOMALY_SEVERITY)}){reset}")
            for event in span.events:
                if event.name == sc.ANOMALY_EVENT and event.attributes:
                    lines.append(f"{'  ' * depth}    {dim}- {event.attributes.get(sc.ANOMALY_REASON)}{reset}")
        run_flags = attrs.get(sc.RUN_ANOMALY_FLAGS)
        if run_flags:
            lines.append(f"{'  ' * depth}  {red}run anomalies: {_fmt(run_flags)[1:-1]}{reset}")
        for child in sorted(by_parent.get(_span_id(span), []), key=lambda s: s.start_time or 0):
            walk(child, depth + 1)

    for root in sorted(by_parent.get(None, []), key=lambda s: s.start_time or 0):
        walk(root, 0)
    return "\n".join(lines)


def _span_id(span: ReadableSpan) -> int | None:
    return span.context.span_id if span.context is not None else None


class TreeExporter(SpanExporter):
    """Collects spans in memory; :meth:`take` returns and forgets them."""

    def __init__(self) -> None:
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    def take(self) -> list[ReadableSpan]:
        with self._lock:
            spans, self._spans = self._spans, []
        return spans

    def print_trees(self, file: Any = None) -> None:
        out = file or sys.stdout
        print(render_tree(self.take(), color=out.isatty()), file=out)
