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
from dataclasses import replace

from .record import Kind, SpanRecord
from .state import Stats

Planned = tuple[int, int, str, SpanRecord, str, str | None, int]
"""One record in processing order: ``(start_ns, depth, span_id, record, run_key, parent_run_key,
end_ns)``. ``run_key`` is the run it belongs to; ``parent_run_key`` the enclosing run of a run
span (else ``None``). A plain tuple: one is built per span, and tuples sort by their leading
(start, depth, span id) fields natively; span ids are unique in a trace, so records are never
compared."""


def _int(value: object) -> int:
    return value if type(value) is int else 0


def _canonical(a: SpanRecord, b: SpanRecord) -> SpanRecord:
    """Of two records with one span id, the one to keep (order-independent)."""
    ka = (_int(a.end_ns), _int(a.start_ns), str(a.kind), a.name if isinstance(a.name, str) else "", repr(a))
    kb = (_int(b.end_ns), _int(b.start_ns), str(b.kind), b.name if isinstance(b.name, str) else "", repr(b))
    return a if ka >= kb else b


def plan(records: Iterable[object], stats: Stats) -> list[list[Planned]]:
    """Valid records grouped by trace (traces in first-seen-id order), each in processing order."""
    traces: dict[str, dict[str, SpanRecord]] = {}
    for record in records:
        if not isinstance(record, SpanRecord):
            stats.records_rejected += 1
            continue
        span_id = record.span_id
        if not isinstance(span_id, str) or not span_id:
            stats.records_rejected += 1
            continue
        if record.kind.__class__ is not Kind:
            try:
                record = replace(record, kind=Kind(record.kind))
            except ValueError:
                stats.records_rejected += 1
                continue
        trace_id = record.trace_id
        if trace_id.__class__ is not str:
            trace_id = str(trace_id)
        spans = traces.get(trace_id)
        if spans is None:
            spans = traces[trace_id] = {}
        prior = spans.get(span_id)
        if prior is not None:
            stats.duplicate_spans += 1
            record = _canonical(prior, record)
        spans[span_id] = record
    if len(traces) == 1:
        return [_order(spans, stats) for spans in traces.values()]
    return [_order(spans, stats) for _, spans in sorted(traces.items())]


def _order(spans: dict[str, SpanRecord], stats: Stats) -> list[Planned]:
    # parents[span]: its parent when that is in the trace, else None (also where a cycle is cut)
    parents: dict[str, str | None] = {}
    for span_id, record in spans.items():
        parent = record.parent_id
        if isinstance(parent, str) and parent in spans:
            parents[span_id] = parent
        else:
            if parent:
                stats.missing_parents += 1
            parents[span_id] = None

    # up[span] = (nearest RUN ancestor, local root, depth). Each span is walked once: a walk climbs
    # until a resolved span or a root, then resolves its path top-down. A span met twice in one
    # walk closes a cycle (each span has one parent, so a component holds at most one cycle and
    # cutting it at its smallest id does not depend on where the walk started).
    up: dict[str, tuple[str | None, str, int]] = {}
    walked: set[str] = set()
    run = Kind.RUN
    for start in spans:
        if start in up:
            continue
        parent = parents[start]
        if parent is None:
            up[start] = (None, start, 0)
            continue
        base = up.get(parent)
        if base is not None:  # the common case: the parent is resolved already
            up[start] = (parent if spans[parent].kind is run else base[0], base[1], base[2] + 1)
            continue
        path: list[str] = []
        node: str | None = start
        while node is not None and node not in up:
            if node in walked:
                loop = path[path.index(node) :]
                parents[min(loop)] = None
                stats.parent_cycles += 1
                walked.difference_update(path)
                path, node = [], start
                continue
            walked.add(node)
            path.append(node)
            node = parents[node]
        base = None if node is None else up[node]
        for span_id in reversed(path):
            if base is None:
                base = up[span_id] = (None, span_id, 0)
            else:
                parent = parents[span_id]
                assert parent is not None
                nearest = parent if spans[parent].kind is run else base[0]
                base = up[span_id] = (nearest, base[1], base[2] + 1)

    planned: list[Planned] = []
    append = planned.append
    tool = Kind.TOOL
    for span_id, record in spans.items():
        nearest, root, depth = up[span_id]
        kind = record.kind
        if kind is tool:
            parent_id = parents[span_id]
            if parent_id is not None:
                parent_rec = spans[parent_id]
                if parent_rec.kind is tool and parent_rec.tool_name == record.tool_name:
                    # The server side of the same call (an MCP server's own ``tools/call``
                    # span under the client's): one tool call, not two.
                    record = replace(record, kind=Kind.OTHER)
                    kind = Kind.OTHER
                    stats.nested_tool_spans += 1
        start_ns = record.start_ns
        if start_ns.__class__ is not int:  # as _int(), without a call per span
            start_ns = 0
        end_ns = record.end_ns
        if end_ns.__class__ is not int:
            end_ns = 0
        if end_ns and end_ns < start_ns:
            stats.clock_skew += 1
            end_ns = start_ns
        if kind is run:
            run_key = record.run_key or span_id
            append((start_ns, depth, span_id, record, run_key, record.parent_run_key or nearest, end_ns))
        else:
            append((start_ns, depth, span_id, record, record.run_key or nearest or root, None, end_ns))
    planned.sort()  # start time, then parents before children, then span id
    return planned
