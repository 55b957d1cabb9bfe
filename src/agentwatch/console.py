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
    (sc.TOOL_ATTEMPT, "attempt"),
    (sc.TOOL_IDEMPOTENCY_KEY_VALUE, "idempotency_key"),
    (sc.TOOL_DEDUPLICATED, "deduplicated"),
    (sc.SAFE_MODE, "safe_mode"),
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
    """Prints (or collects) finished spans as run → phase → call trees.

    With ``live=True`` each trace's tree is printed to ``file`` (default stdout)
    as soon as its root span ends, and its spans are forgotten: the exporter to
    add while developing. Without it spans are collected until :meth:`take` or
    :meth:`print_trees`, which is what a script that prints at the end wants.
    Use it behind a ``SimpleSpanProcessor`` so a tree prints when the run ends.
    """

    def __init__(self, *, live: bool = False, file: Any = None, max_spans: int = 100_000) -> None:
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()
        self._live = live
        self._file = file
        # Bounded: spans whose root never ends (or a runaway agent) cannot grow memory without limit.
        self._max_spans = max_spans

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ready: list[ReadableSpan] = []
        with self._lock:
            self._spans.extend(spans)
            if len(self._spans) > self._max_spans:
                del self._spans[: len(self._spans) - self._max_spans]
            if self._live:
                roots = {s.context.trace_id for s in spans if s.parent is None and s.context is not None}
                if roots:
                    keep: list[ReadableSpan] = []
                    for span in self._spans:
                        trace = span.context.trace_id if span.context is not None else None
                        (ready if trace in roots else keep).append(span)
                    self._spans = keep
        if ready:
            out = self._file or sys.stdout
            print(render_tree(ready, color=_isatty(out)), file=out, flush=True)
        return SpanExportResult.SUCCESS

    def take(self) -> list[ReadableSpan]:
        with self._lock:
            spans, self._spans = self._spans, []
        return spans

    def print_trees(self, file: Any = None) -> None:
        out = file or self._file or sys.stdout
        print(render_tree(self.take(), color=_isatty(out)), file=out)


def _isatty(out: Any) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False
