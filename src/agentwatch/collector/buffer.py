"""Trace assembly: hold spans by trace id until the trace is ready to be decided.

A trace is *ready* when its root span (no parent) has arrived, or when a run
span has arrived and every parent still missing is the parent of a run span
that arrived (the last open run has ended, only ancestors outside the agent
runs are absent). It is then decided ``straggler_delay_ms`` later. Failing
that, ``idle_timeout_seconds`` without a new span or ``hard_timeout_seconds``
since its first span decide it. Spans of an already decided trace form a
*late* trace, decided ``straggler_delay_ms`` after its first span.

Memory is bounded by ``limits``: spans are held as their serialized bytes
only, and when a limit is passed the oldest trace is evicted (forwarded
unevaluated by the caller). Deadlines live in a heap with lazy invalidation:
an entry is re-checked when it comes due, so arrivals never search the heap.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .config import DecisionConfig, LimitsConfig
from .otlp import Group, SplitSpan
from .telemetry import Stats
from .verdicts import Verdict, VerdictCache

INF = float("inf")
COALESCE_SECONDS = 0.002  # decide traces due within this window together


class PendingTrace:
    """Spans of one trace waiting for a decision (bytes + just enough for readiness)."""

    __slots__ = (
        "first",
        "groups",
        "has_root",
        "ids",
        "last",
        "missing",
        "nbytes",
        "raws",
        "ready_at",
        "ready_reason",
        "records",
        "run_parents",
        "trace_id",
        "verdict",
    )

    def __init__(self, trace_id: bytes, now: float, verdict: Verdict | None) -> None:
        self.trace_id = trace_id
        self.groups: list[Group] = []
        self.raws: list[bytes] = []
        self.ids: set[bytes] = set()
        self.missing: set[bytes] = set()
        self.run_parents: set[bytes] = set()
        self.has_root = False
        self.first = now
        self.last = now
        self.ready_at: float | None = None
        self.ready_reason = ""
        self.nbytes = 0
        self.verdict = verdict  # set for a late trace: the verdict of the decided trace
        self.records: list[int] = []  # journal sequence numbers of the requests its spans came in

    def pieces(self) -> list[tuple[int, bytes]]:
        """(journal record, trace id) of each request that brought spans of this trace."""
        return [(seq, self.trace_id) for seq in self.records]

    def __len__(self) -> int:
        return len(self.raws)


Decided = tuple[PendingTrace, str, Verdict]
"""A trace taken out of the buffer, why (root, run, hard_timeout, idle, late, shutdown), and the
verdict its outcome is recorded in (for a late trace: the verdict of the decided trace)."""


class TraceBuffer:
    def __init__(
        self,
        decision: DecisionConfig,
        limits: LimitsConfig,
        verdicts: VerdictCache,
        stats: Stats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.straggler = decision.straggler_delay_ms / 1000.0
        self.hard = decision.hard_timeout_seconds
        self.idle = decision.idle_timeout_seconds
        self.limits = limits
        self.verdicts = verdicts
        self.clock = clock
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self._traces: OrderedDict[bytes, PendingTrace] = OrderedDict()
        self._heap: list[tuple[float, int, bytes]] = []
        self._seq = itertools.count()
        self._wake_at = INF
        self.spans = 0
        self.bytes = 0
        stats.gauge("buffer_traces", lambda: len(self._traces))
        stats.gauge("buffer_spans", lambda: self.spans)
        stats.gauge("buffer_bytes", lambda: self.bytes)

    # ------------------------------------------------------------------ intake

    def add(
        self, spans: Sequence[SplitSpan], run_flags: Sequence[bool], record: int | None = None
    ) -> list[PendingTrace]:
        """Add spans (``run_flags[i]``: span i opens an agent run) of the journal's ``record``, if any.

        Returns traces evicted by limits."""
        by_trace: dict[bytes, list[int]] = {}
        for i, span in enumerate(spans):
            tid = span[2]
            members = by_trace.get(tid)
            if members is None:
                by_trace[tid] = [i]
            else:
                members.append(i)
        with self.lock:
            now = self.clock()
            for tid, members in by_trace.items():
                trace = self._traces.get(tid)
                if trace is None:
                    trace = self._new_trace(tid, now)
                if record is not None:
                    trace.records.append(record)
                groups = trace.groups
                raws = trace.raws
                added = 0
                if trace.verdict is not None:
                    for i in members:
                        span = spans[i]
                        groups.append(span[0])
                        raws.append(span[1])
                        added += len(span[1])
                else:
                    ids = trace.ids
                    missing = trace.missing
                    for i in members:
                        group, raw, _, sid, pid = spans[i]
                        groups.append(group)
                        raws.append(raw)
                        added += len(raw)
                        ids.add(sid)
                        missing.discard(sid)
                        if pid:
                            if pid not in ids:
                                missing.add(pid)
                        else:
                            trace.has_root = True
                        if run_flags[i]:
                            trace.run_parents.add(pid)
                    self._update_readiness(trace, now)
                trace.last = now
                trace.nbytes += added
                self.spans += len(members)
                self.bytes += added
            return self._enforce_limits()

    def _new_trace(self, tid: bytes, now: float) -> PendingTrace:
        verdict = self.verdicts.get(tid)
        trace = PendingTrace(tid, now, verdict)
        self._traces[tid] = trace
        if verdict is not None:
            trace.ready_at = now + self.straggler
            trace.ready_reason = "late"
            self._push(trace.ready_at, tid)
        else:
            self._push(now + min(self.hard, self.idle), tid)
        return trace

    def _update_readiness(self, trace: PendingTrace, now: float) -> None:
        ready = trace.has_root or bool(trace.run_parents and trace.missing <= trace.run_parents)
        if ready and trace.ready_at is None:
            trace.ready_at = now + self.straggler
            trace.ready_reason = "root" if trace.has_root else "run"
            self._push(trace.ready_at, trace.trace_id)
        elif not ready and trace.ready_at is not None:
            trace.ready_at = None  # another run opened: wait for it (bounded by the timeouts)

    def _push(self, deadline: float, tid: bytes) -> None:
        heapq.heappush(self._heap, (deadline, next(self._seq), tid))
        if deadline < self._wake_at:
            self.cond.notify()

    def _remove(self, trace: PendingTrace) -> None:
        self.spans -= len(trace.raws)
        self.bytes -= trace.nbytes

    def _enforce_limits(self) -> list[PendingTrace]:
        evicted: list[PendingTrace] = []
        lim = self.limits
        while self._traces and (
            len(self._traces) > lim.max_traces or self.spans > lim.max_spans or self.bytes > lim.max_bytes
        ):
            _, trace = self._traces.popitem(last=False)
            self._remove(trace)
            if trace.verdict is None:
                # Late spans of an evicted trace are unevaluated as well.
                self.verdicts.put(Verdict(trace.trace_id, evaluated=False))
            evicted.append(trace)
        return evicted

    # ------------------------------------------------------------------ decisions

    def _deadline(self, trace: PendingTrace) -> tuple[float, str]:
        if trace.verdict is not None:
            return trace.ready_at or trace.first, "late"
        best = (trace.first + self.hard, "hard_timeout")
        idle = trace.last + self.idle
        if idle < best[0]:
            best = (idle, "idle")
        if trace.ready_at is not None and trace.ready_at <= best[0]:
            best = (trace.ready_at, trace.ready_reason)
        return best

    def pop_due(self) -> list[Decided]:
        """Take every trace whose deadline has come. Registers a verdict for each.

        The verdict is registered before evaluation, so spans arriving while
        the trace is being evaluated already count as late.
        """
        out: list[Decided] = []
        with self.lock:
            horizon = self.clock() + COALESCE_SECONDS
            heap = self._heap
            while heap and heap[0][0] <= horizon:
                _, _, tid = heapq.heappop(heap)
                trace = self._traces.get(tid)
                if trace is None:
                    continue  # decided or evicted already: a stale entry
                deadline, reason = self._deadline(trace)
                if deadline > horizon:
                    self._push(deadline, tid)
                    continue
                del self._traces[tid]
                self._remove(trace)
                out.append((trace, reason, self._register(trace)))
        return out

    def _register(self, trace: PendingTrace) -> Verdict:
        if trace.verdict is not None:
            return trace.verdict
        verdict = Verdict(trace.trace_id)
        self.verdicts.put(verdict)
        return verdict

    def pop_all(self) -> list[Decided]:
        """Take every trace (shutdown)."""
        with self.lock:
            out: list[Decided] = []
            for trace in self._traces.values():
                out.append((trace, "shutdown", self._register(trace)))
            self._traces.clear()
            self._heap.clear()
            self.spans = 0
            self.bytes = 0
            return out

    def wait(self, max_wait: float) -> None:
        """Block until the next deadline, a new earlier deadline, or ``max_wait`` seconds."""
        with self.cond:
            now = self.clock()
            nxt = self._heap[0][0] if self._heap else INF
            if nxt <= now + COALESCE_SECONDS:
                return
            timeout = min(max_wait, nxt - now)
            self._wake_at = now + timeout
            self.cond.wait(timeout)
            self._wake_at = INF

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def __len__(self) -> int:
        return len(self._traces)
