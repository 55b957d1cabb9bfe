"""Per-run detector state, and the bounded table that holds it.

Everything here is bounded by ``agent.limits``: at most ``max_runs`` runs
(least recently active evicted first, and any run idle for ``run_ttl_seconds``),
at most ``max_calls_per_run`` distinct (tool, args hash) keys and result
fingerprints per run, at most ``max_entities_per_run`` known entity ids per run.
Bounded maps drop their oldest quarter at once when full, so an insert stays
O(1) amortised; every eviction is counted in the engine's stats.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, TypeVar

from .budgets import Limits

K = TypeVar("K")
V = TypeVar("V")

CallKey = tuple[str, str]
"""(tool name, args hash)."""

MAX_RESULTS_PER_KEY = 32


class Stats:
    """The engine's counters (plain ints behind attribute access, cheap to bump on the hot path)."""

    __slots__ = (
        "records_processed",
        "records_rejected",
        "values_rejected",
        "findings",
        "runs_created",
        "runs_closed",
        "runs_evicted",
        "runs_expired",
        "calls_evicted",
        "entities_evicted",
        "stops",
        "schema_invalid",
        "internal_errors",
        "traces_evaluated",
        "duplicate_spans",
        "parent_cycles",
        "missing_parents",
        "clock_skew",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def add(self, other: Stats) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def bounded_put(store: dict[K, V], key: K, value: V, cap: int) -> int:
    """Insert into an insertion-ordered map, dropping its oldest quarter when full; returns how many went."""
    dropped = 0
    if len(store) >= cap:
        dropped = len(store) - (cap * 3) // 4
        for old in list(_first(store, dropped)):
            del store[old]
    store[key] = value
    return dropped


def _first(store: dict[K, V], n: int) -> Iterator[K]:
    it = iter(store)
    for _ in range(n):
        yield next(it)


class CallState:
    """One (tool, args hash) key of a run: how often, since when, and which results it brought."""

    __slots__ = ("arg_ids", "calls", "first_span", "key", "results", "stale")

    def __init__(self, key: CallKey, first_span: str) -> None:
        self.key = key
        self.first_span = first_span
        self.calls = 0
        self.stale = 0  # calls since the key last brought a new result, counting that call
        self.results: set[str] = set()
        self.arg_ids: tuple[str, ...] | None = None  # lowered ids in the arguments, once extracted


class RunState:
    """Counters and detector memory of one open run."""

    __slots__ = (
        "key",
        "parent",
        "chain",
        "children",
        "agent_name",
        "start_ns",
        "last_seen",
        "limits",
        "enforced",
        # totals (this run and every descendant)
        "steps",
        "llm_calls",
        "tool_calls",
        "input_tokens",
        "output_tokens",
        "cost",
        # calls let through by begin_call (the live guard's numbering)
        "started_steps",
        "started_tools",
        "started_unique",
        # budgets
        "fired",
        "unique",
        # loops and progress (nearest run only)
        "calls",
        "window",
        "results",
        "streak",
        "streak_first",
        "failures",
        "effects",
        # grounding
        "subject",
        "known",
        "basis",
        "pending",
        "requested",
        "unknown_requested",
        # llm history
        "llm_seen",
        "last_llm_span",
        "last_system",
        "last_user",
        "token_calls",
        "token_sum",
        # outcome
        "flags",
        "anomaly_count",
        "origin_span",
        "origin_start",
        "run_findings",
    )

    def __init__(self, key: str, parent: RunState | None, start_ns: int | None, now: float) -> None:
        self.key = key
        self.parent = parent
        self.chain: tuple[RunState, ...] = (self, *parent.chain) if parent is not None else (self,)
        self.children = 0
        self.agent_name: str | None = None
        self.start_ns = start_ns
        self.last_seen = now
        self.limits: Limits | None = None
        self.enforced = False  # this run or an ancestor enforces its budget
        self.steps = 0
        self.llm_calls = 0
        self.tool_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.started_steps = 0
        self.started_tools = 0
        self.started_unique: set[CallKey] | None = None
        self.fired: set[str] = set()
        self.unique: set[CallKey] | None = None
        self.calls: dict[CallKey, CallState] = {}
        self.window: list[tuple[CallState | None, bool]] = []
        self.results: dict[str, None] = {}
        self.streak = 0
        self.streak_first = ""
        self.failures: dict[str, list[Any]] = {}
        self.effects: dict[CallKey, list[Any]] = {}
        self.subject: dict[str, tuple[str, str]] = {}  # normalised type -> (id, lowered id)
        self.known: dict[str, None] = {}  # lowered ids seen earlier in the run
        self.basis = False  # the run has seen anything that could ground an id
        self.pending: list[Any] = []  # raw results/inputs not yet scanned for ids (lazy extraction)
        self.requested: dict[CallKey, str] = {}  # requested call -> LLM span that asked for it
        self.unknown_requested: dict[str, str] = {}  # tool requested but not offered -> LLM span
        self.llm_seen = False
        self.last_llm_span = ""
        self.last_system: str | None = None
        self.last_user: str | None = None
        self.token_calls = 0
        self.token_sum = 0
        self.flags: dict[str, None] = {}
        self.anomaly_count = 0
        self.origin_span: str | None = None
        self.origin_start = 0
        self.run_findings: list[Any] = []


class RunTable:
    """Open runs by key: LRU-bounded by ``max_runs``, idle runs expire after ``ttl`` seconds."""

    __slots__ = ("_last", "_runs", "max_runs", "stats", "ttl")

    def __init__(self, max_runs: int, ttl: float, stats: Stats) -> None:
        self._runs: OrderedDict[str, RunState] = OrderedDict()
        self._last: RunState | None = None  # the most recently touched run (already at the end)
        self.max_runs = max(1, int(max_runs))
        self.ttl = float(ttl)
        self.stats = stats

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, key: str) -> bool:
        return key in self._runs

    def get(self, key: str, now: float) -> RunState | None:
        run = self._runs.get(key)
        if run is not None:
            run.last_seen = now
            if run is not self._last:
                self._runs.move_to_end(key)
                self._last = run
        return run

    def peek(self, key: str) -> RunState | None:
        return self._runs.get(key)

    def add(self, run: RunState) -> None:
        runs = self._runs
        runs[run.key] = run
        runs.move_to_end(run.key)
        self._last = run
        while len(runs) > self.max_runs:
            runs.popitem(last=False)
            self.stats.runs_evicted += 1

    def pop(self, key: str) -> RunState | None:
        run = self._runs.pop(key, None)
        if run is not None and run is self._last:
            self._last = None
        return run

    def values(self) -> list[RunState]:
        return list(self._runs.values())

    def expire(self, now: float) -> None:
        """Drop runs idle for longer than the TTL (the least recently active sit first)."""
        runs = self._runs
        limit = now - self.ttl
        while runs:
            key, run = next(iter(runs.items()))
            if run.last_seen >= limit:
                return
            del runs[key]
            if run is self._last:
                self._last = None
            self.stats.runs_expired += 1
            self.stats.runs_evicted += 1
