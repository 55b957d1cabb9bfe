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
from operator import attrgetter
from typing import Any, TypeVar

from .budgets import Limits
from .record import Entity, Finding

K = TypeVar("K")
V = TypeVar("V")

CallKey = tuple[str, str]
"""(tool name, args hash)."""

MAX_RESULTS_PER_KEY = 32
MAX_SKETCHES_PER_KEY = 8


class Stats:
    """The engine's counters (plain ints behind attribute access, cheap to bump on the hot path)."""

    __slots__ = (
        "calls_evicted",
        "clock_skew",
        "duplicate_spans",
        "entities_evicted",
        "findings",
        "internal_errors",
        "missing_parents",
        "nested_tool_spans",
        "parent_cycles",
        "records_processed",
        "records_rejected",
        "runs_closed",
        "runs_created",
        "runs_evicted",
        "runs_expired",
        "schema_invalid",
        "stops",
        "traces_evaluated",
        "values_rejected",
    )

    def __init__(self) -> None:
        self.calls_evicted = 0
        self.clock_skew = 0
        self.duplicate_spans = 0
        self.entities_evicted = 0
        self.findings = 0
        self.internal_errors = 0
        self.missing_parents = 0
        self.nested_tool_spans = 0
        self.parent_cycles = 0
        self.records_processed = 0
        self.records_rejected = 0
        self.runs_closed = 0
        self.runs_created = 0
        self.runs_evicted = 0
        self.runs_expired = 0
        self.schema_invalid = 0
        self.stops = 0
        self.traces_evaluated = 0
        self.values_rejected = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def add(self, other: Stats) -> None:
        # Called once per evaluated trace; most counters of a trace are zero.
        for name, value in zip(self.__slots__, _all_counters(other), strict=True):
            if value:
                setattr(self, name, getattr(self, name) + value)


_all_counters = attrgetter(*Stats.__slots__)


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

    __slots__ = ("arg_ids", "first_span", "key", "result", "results", "sketches", "stale")

    def __init__(self, key: CallKey, first_span: str, result: str | None = None) -> None:
        self.key = key
        self.first_span = first_span
        self.stale = 0  # calls since the key last brought a new result, counting that call
        self.result = result  # the first result fingerprint (most keys only ever have one)
        self.results: set[str] | None = None  # later distinct fingerprints, created when needed
        self.arg_ids: tuple[Entity, ...] | None = None  # entities in the arguments, once extracted
        self.sketches: list[str] | None = None  # sketches of the long text results it brought


class RunState:
    """Counters and detector memory of one open run."""

    __slots__ = (
        "agent_name",
        "agents",
        "anomaly_count",
        "basis",
        "calls",
        "chain",
        "children",
        "cost",
        "declared",
        "effects",
        "failures",
        "fired",
        "flags",
        "input_tokens",
        "key",
        "known",
        "last_seen",
        "limits",
        "llm_calls",
        "origin_span",
        "origin_start",
        "output_tokens",
        "parent",
        "pending",
        "request_pending",
        "request_repeats",
        "requested",
        "results",
        "run_findings",
        "since_new",
        "start_ns",
        "started_steps",
        "started_tools",
        "started_unique",
        "starts",
        "steps",
        "stop_finding",
        "streak",
        "streak_first",
        "subject",
        "token_calls",
        "token_sum",
        "tool_calls",
        "unique",
        "unknown_requested",
        "window",
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
        self.declared = False  # open_run was called (a lazily created run takes its first declaration)
        self.steps = 0
        self.llm_calls = 0
        self.tool_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost = 0.0
        self.started_steps = 0
        self.started_tools = 0
        self.started_unique: set[CallKey] | None = None
        self.fired: set[str] | None = None  # budgets already flagged (created with the first)
        self.unique: set[CallKey] | None = None
        self.calls: dict[CallKey, CallState] = {}
        self.window: list[CallState | None] = []  # the last tool calls' keys, for cycles
        self.since_new = 0  # tool calls since one last brought a result new for its key
        self.results: dict[str, None] = {}
        self.streak = 0
        self.stop_finding: Finding | None = None  # agent.anomaly.stop_on matched: the next call stops
        self.streak_first = ""
        self.failures: dict[str, list[Any]] | None = None  # tool -> [failures, first failed span]
        self.effects: dict[CallKey, list[Any]] | None = None  # write -> [calls, first span]
        self.subject: dict[str, tuple[str, str]] = {}  # normalised type -> (id, lowered id)
        self.known: dict[str, None] = {}  # lowered ids seen earlier in the run
        self.basis = False  # the run has seen anything that could ground an id
        self.pending: list[tuple[Any, bool]] = []  # (raw result or input, extract strictly too): lazy learning
        self.requested: dict[CallKey, str] = {}  # requested call -> LLM span that asked for it
        self.request_repeats: dict[CallKey, CallState] | None = None  # requested keys' results, see repeats
        self.request_pending: dict[str, tuple[CallKey, str]] | None = None  # call id -> (key, LLM span)
        self.unknown_requested: dict[str, str] | None = None  # requested but not offered -> LLM span
        self.token_calls = 0
        self.token_sum = 0
        self.flags: dict[str, None] = {}
        self.anomaly_count = 0
        self.origin_span: str | None = None
        self.origin_start = 0
        self.run_findings: list[Any] = []
        self.starts: dict[str, int] = {}  # span id -> start (ns) of its LLM and tool calls: fault origins
        self.agents: dict[Any, Any] | None = None  # drift: agent identity -> its last LLM call

    def remember_start(self, span_id: str, start_ns: Any, cap: int) -> None:
        """Keep a call's start time, so a finding's evidence span can be the run's fault origin."""
        starts = self.starts
        if len(starts) >= cap:
            bounded_put(starts, span_id, start_ns if start_ns.__class__ is int else 0, cap)
        else:
            starts[span_id] = start_ns if start_ns.__class__ is int else 0

    def span_start(self, span_id: str) -> int | None:
        return self.starts.get(span_id)

    def release(self) -> None:
        """Break the run's one reference cycle once it has left the table.

        ``chain`` starts with the run itself; keeping only the ancestors lets
        reference counting free the run and its call memory at once instead of
        leaving them to the cyclic collector (a collector decides thousands of
        runs a second). A child still open keeps counting into this run and,
        through these ancestors, into the runs above it.
        """
        self.chain = self.chain[1:]


class RunTable:
    """Open runs by key: LRU-bounded by ``max_runs``, idle runs expire after ``ttl`` seconds."""

    __slots__ = ("_runs", "last", "max_runs", "stats", "ttl")

    def __init__(self, max_runs: int, ttl: float, stats: Stats) -> None:
        self._runs: OrderedDict[str, RunState] = OrderedDict()
        self.last: RunState | None = None  # the most recently touched run (already at the end)
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
            if run is not self.last:
                self._runs.move_to_end(key)
                self.last = run
        return run

    def peek(self, key: str) -> RunState | None:
        return self._runs.get(key)

    def add(self, run: RunState) -> None:
        runs = self._runs
        runs[run.key] = run
        runs.move_to_end(run.key)
        self.last = run
        while len(runs) > self.max_runs:
            runs.popitem(last=False)[1].release()
            self.stats.runs_evicted += 1

    def pop(self, key: str) -> RunState | None:
        run = self._runs.pop(key, None)
        if run is not None and run is self.last:
            self.last = None
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
            run.release()
            if run is self.last:
                self.last = None
            self.stats.runs_expired += 1
            self.stats.runs_evicted += 1
