"""What the collector remembers about decided traces, for spans that arrive late.

A :class:`Verdict` is small: the findings already reported per span, the run
flags already reported per run, and where to hang a summary span. Optionally
it also retains the trace's spans as received (the same bytes objects that
were forwarded, so no copy), which lets late spans be re-evaluated in the
context of the whole trace. The entries are an LRU bounded by count
(``verdict_cache_size``); retained spans are bounded by bytes
(``retain_bytes``), released oldest first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from ..engine.record import Finding
from .otlp import Group


@dataclass(eq=False)
class Verdict:
    trace_id: bytes
    evaluated: bool = True
    # span id (hex) -> every finding reported about that span (tagged on it or in a summary span)
    findings: dict[str, list[Finding]] = field(default_factory=dict)
    # run key (hex) -> run-level flags reported so far (on the run span or in summary spans)
    run_flags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # run span id (hex) -> run attributes set on it when it was forwarded (for duplicates)
    run_attributes: dict[str, dict[str, object]] = field(default_factory=dict)
    anchor_id: str | None = None  # root span, else the outermost run span, else the first span
    anchor_group: Group | None = None
    # The spans as received, as parallel lists (groups, bytes): the buffer's own lists, handed over.
    retained_groups: list[Group] | None = None
    retained: list[bytes] | None = None
    retained_bytes: int = 0


class VerdictCache:
    """LRU of verdicts by trace id, with a byte budget for retained spans. Thread-safe."""

    def __init__(self, max_entries: int, retain_bytes: int) -> None:
        self.max_entries = max_entries
        self.retain_budget = retain_bytes
        self._entries: OrderedDict[bytes, Verdict] = OrderedDict()
        self._retaining: OrderedDict[bytes, Verdict] = OrderedDict()  # oldest first
        self.retained_total = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, trace_id: bytes) -> Verdict | None:
        with self._lock:
            verdict = self._entries.get(trace_id)
            if verdict is not None:
                self._entries.move_to_end(trace_id)
            return verdict

    def put(self, verdict: Verdict) -> None:
        if self.max_entries <= 0:
            return
        with self._lock:
            self._entries[verdict.trace_id] = verdict
            self._entries.move_to_end(verdict.trace_id)
            while len(self._entries) > self.max_entries:
                _, old = self._entries.popitem(last=False)
                self._release(old)

    def retain(self, verdict: Verdict, groups: list[Group], raws: list[bytes], size: int) -> None:
        """Keep spans (as received) with the verdict, within the byte budget. Takes the lists over."""
        with self._lock:
            if verdict.trace_id not in self._entries or self.retain_budget <= 0:
                return
            if verdict.retained is None or verdict.retained_groups is None:
                if size > self.retain_budget:
                    return
                verdict.retained_groups, verdict.retained = groups, raws
            else:
                verdict.retained_groups.extend(groups)
                verdict.retained.extend(raws)
            verdict.retained_bytes += size
            self.retained_total += size
            self._retaining[verdict.trace_id] = verdict
            self._retaining.move_to_end(verdict.trace_id)
            while self.retained_total > self.retain_budget and self._retaining:
                _, old = self._retaining.popitem(last=False)
                self._release(old)

    def _release(self, verdict: Verdict) -> None:
        if verdict.retained is not None:
            self.retained_total -= verdict.retained_bytes
            verdict.retained = None
            verdict.retained_groups = None
            verdict.retained_bytes = 0
            self._retaining.pop(verdict.trace_id, None)
