"""Per-tool circuit breakers: closed → open → half-open → closed.

``failure_threshold`` failures of one tool within ``window_seconds`` open its
breaker. While open, calls are refused without running. After
``window_seconds`` the breaker lets exactly one trial call through
(half-open): its success closes the breaker, its failure opens it again for
another window. State is per process and per tool name; it is shared by every
run, which is the point: a dependency that is down is down for everyone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .settings import BreakerPolicy

MAX_TOOLS = 10_000  # distinct tool names tracked; the least recently used is forgotten beyond it


class BreakerState(str, Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Transition:
    tool: str
    old: BreakerState
    new: BreakerState
    failures: int


class _Breaker:
    __slots__ = ("failures", "opened_at", "state", "trial_running")

    def __init__(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures: deque[float] = deque()
        self.opened_at = 0.0
        self.trial_running = False


class Admission:
    """The answer to "may this call run?": ``allowed``, and whether it is the half-open trial."""

    __slots__ = ("allowed", "retry_in", "trial")

    def __init__(self, allowed: bool, trial: bool = False, retry_in: float = 0.0) -> None:
        self.allowed = allowed
        self.trial = trial
        self.retry_in = retry_in


ALLOWED = Admission(True)


class Breakers:
    """Every tool's breaker, thread-safe; ``on_transition`` is told of each state change."""

    def __init__(
        self,
        policy: BreakerPolicy,
        on_transition: Callable[[Transition], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._on_transition = on_transition
        self._clock = clock
        self._lock = threading.Lock()
        self._tools: dict[str, _Breaker] = {}

    def state(self, tool: str) -> BreakerState:
        with self._lock:
            breaker = self._tools.get(tool)
            if breaker is None:
                return BreakerState.CLOSED
            self._expire(tool, breaker, self._clock(), [])
            return breaker.state

    def admit(self, tool: str) -> Admission:
        """Whether a call of ``tool`` may run now."""
        changes: list[Transition] = []
        with self._lock:
            breaker = self._tools.get(tool)
            if breaker is None:
                return ALLOWED
            now = self._clock()
            self._expire(tool, breaker, now, changes)
            if breaker.state is BreakerState.CLOSED:
                answer = ALLOWED
            elif breaker.state is BreakerState.HALF_OPEN and not breaker.trial_running:
                breaker.trial_running = True
                answer = Admission(True, trial=True)
            else:
                wait = max(0.0, breaker.opened_at + self.policy.window_seconds - now)
                answer = Admission(False, retry_in=wait)
        self._tell(changes)
        return answer

    def success(self, tool: str, trial: bool = False) -> None:
        changes: list[Transition] = []
        with self._lock:
            breaker = self._tools.get(tool)
            if breaker is None:
                return
            if breaker.state is BreakerState.HALF_OPEN and trial:
                breaker.trial_running = False
                breaker.failures.clear()
                self._move(tool, breaker, BreakerState.CLOSED, changes)
            elif breaker.state is BreakerState.CLOSED and not breaker.failures:
                # A healthy tool needs no state: forget it, so the table holds only tools that failed.
                del self._tools[tool]
        self._tell(changes)

    def failure(self, tool: str, trial: bool = False) -> None:
        changes: list[Transition] = []
        with self._lock:
            breaker = self._tools.get(tool)
            if breaker is None:
                if len(self._tools) >= MAX_TOOLS:
                    self._tools.pop(next(iter(self._tools)))
                breaker = self._tools[tool] = _Breaker()
            now = self._clock()
            if breaker.state is BreakerState.HALF_OPEN:
                if trial:
                    breaker.trial_running = False
                    breaker.opened_at = now
                    self._move(tool, breaker, BreakerState.OPEN, changes)
            elif breaker.state is BreakerState.CLOSED:
                window = self.policy.window_seconds
                breaker.failures.append(now)
                while breaker.failures and breaker.failures[0] <= now - window:
                    breaker.failures.popleft()
                if len(breaker.failures) >= self.policy.failure_threshold:
                    breaker.opened_at = now
                    self._move(tool, breaker, BreakerState.OPEN, changes)
        self._tell(changes)

    def release_trial(self, tool: str) -> None:
        """A trial call that ended neither in success nor in a tool failure (cancelled, refused)."""
        with self._lock:
            breaker = self._tools.get(tool)
            if breaker is not None:
                breaker.trial_running = False

    # ------------------------------------------------------------------ internals

    def _expire(self, tool: str, breaker: _Breaker, now: float, changes: list[Transition]) -> None:
        if breaker.state is BreakerState.OPEN and now >= breaker.opened_at + self.policy.window_seconds:
            breaker.trial_running = False
            self._move(tool, breaker, BreakerState.HALF_OPEN, changes)

    @staticmethod
    def _move(tool: str, breaker: _Breaker, new: BreakerState, changes: list[Transition]) -> None:
        changes.append(Transition(tool, breaker.state, new, len(breaker.failures)))
        breaker.state = new

    def _tell(self, changes: list[Transition]) -> None:
        if self._on_transition is not None:
            for change in changes:
                self._on_transition(change)
