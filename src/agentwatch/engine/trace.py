"""Put a whole trace's spans in processing order and resolve the run each belongs to.

Exporters and the collector see finished spans in whatever order they
arrived, from instrumentations that may not set ``run_key``. A span's run is
its nearest RUN ancestor, else its local root (the topmost span whose parent
is absent from the batch). Spans are processed in start order (parents before
children on ties), which makes the verdict independent of arrival order.

Real traces are messy: parent links can form cycles (a broken exporter), span
ids repeat (retransmission), clocks skew (end before start). None of that may
raise; each is counted. A cycle is broken at its smallest span id, and of
duplicate span ids the one that ended last is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from .record import Kind, SpanRecord
from .state import Stats


@dataclass(slots=True)
class Planned:
    """One record with its resolved run key (and, for a run span, its enclosing run)."""

    record: SpanRecord
    run_key: str
    parent_run_key: str | None
    depth: int
    start_ns: int
    end_ns: int


def _int(value: object) -> int:
    return value if type(value) is int else 0


def _canonical(a: SpanRecord, b: SpanRecord) -> SpanRecord:
    """Of two records with one span id, the one to keep (order-independent)."""
    ka = (_int(a.end_ns), _int(a.start_ns), str(a.kind), a.name if isinstance(a.name, str) else "", repr(a))
    kb = (_int(b.end_ns), _int(b.start_ns), str(b.kind), b.name if isinstance(b.name, str) else "", repr(b))
    return a if ka >= kb else b


def valid(record: object) -> bool:
    return isinstance(record, SpanRecord) and isinstance(record.span_id, str) and bool(record.span_id)


def plan(records: Iterable[object], stats: Stats) -> list[list[Planned]]:
    """Valid records grouped by trace (traces in first-seen-id order), each in processing order."""
    traces: dict[str, dict[str, SpanRecord]] = {}
    for record in records:
        if not valid(record):
            stats.records_rejected += 1
            continue
        assert isinstance(record, SpanRecord)
        if not isinstance(record.kind, Kind):
            try:
                record = replace(record, kind=Kind(record.kind))
            except ValueError:
                stats.records_rejected += 1
                continue
        spans = traces.setdefault(str(record.trace_id), {})
        prior = spans.get(record.span_id)
        if prior is not None:
            stats.duplicate_spans += 1
            record = _canonical(prior, record)
        spans[record.span_id] = record
    return [_order(spans, stats) for _, spans in sorted(traces.items())]


def _order(spans: dict[str, SpanRecord], stats: Stats) -> list[Planned]:
    # up[span] = (nearest RUN ancestor, local root, depth); parents treated as absent where a cycle is cut
    up: dict[str, tuple[str | None, str, int]] = {}
    parents: dict[str, str | None] = {}
    for span_id, record in spans.items():
        parent = record.parent_id
        if isinstance(parent, str) and parent in spans:
            parents[span_id] = parent
        else:
            if parent:
                stats.missing_parents += 1
            parents[span_id] = None

    for start in sorted(spans):
        if start in up:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        node: str | None = start
        while node is not None and node not in up:
            if node in on_path:  # a cycle: cut it at its smallest id and walk again
                loop = path[path.index(node) :]
                parents[min(loop)] = None
                stats.parent_cycles += 1
                path, on_path, node = [], set(), start
                continue
            path.append(node)
            on_path.add(node)
            node = parents[node]
        if node is None:
            base: tuple[str | None, str, int] | None = None
        else:
            base = up[node]
        for span_id in reversed(path):
            parent = parents[span_id] if base is not None else None
            if base is None or parent is None:
                up[span_id] = (None, span_id, 0)
            else:
                parent_rec = spans[parent]
                nearest = parent if parent_rec.kind is Kind.RUN else base[0]
                up[span_id] = (nearest, base[1], base[2] + 1)
            base = up[span_id]

    planned: list[Planned] = []
    for span_id, record in spans.items():
        nearest, root, depth = up[span_id]
        parent_id = parents[span_id]
        if record.kind is Kind.TOOL and parent_id is not None:
            parent_rec = spans[parent_id]
            if parent_rec.kind is Kind.TOOL and parent_rec.tool_name == record.tool_name:
                # The server side of the same call (an MCP server's own ``tools/call``
                # span under the client's): one tool call, not two.
                record = replace(record, kind=Kind.OTHER)
                stats.nested_tool_spans += 1
        start_ns = _int(record.start_ns)
        end_ns = _int(record.end_ns)
        if end_ns and end_ns < start_ns:
            stats.clock_skew += 1
            end_ns = start_ns
        if record.kind is Kind.RUN:
            run_key = record.run_key or span_id
            parent_run = record.parent_run_key or nearest
        else:
            run_key = record.run_key or nearest or root
            parent_run = None
        planned.append(Planned(record, run_key, parent_run, depth, start_ns, end_ns))
    planned.sort(key=lambda p: (p.start_ns, p.depth, p.record.span_id))
    return planned
