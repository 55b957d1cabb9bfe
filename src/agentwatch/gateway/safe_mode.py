"""Safe mode: an operator's switch that lets only read-only tools run.

It is on while any of these says so: the configuration, ``AGENTWATCH_SAFE_MODE``,
``agentwatch.safe_mode(True)`` at run time, or the existence of the configured
flag file. ``agentwatch.safe_mode(False)`` turns the first three off; the flag
file wins over everything, so an operator can switch a running fleet with
``touch`` and back with ``rm``. The file is checked at most once a second, so
the cost on the tool path is one clock read.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

CHECK_INTERVAL_S = 1.0
class SafeModeSwitch:
    """Process-wide safe-mode state; cheap to ask on every tool call."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._override: bool | None = None  # agentwatch.safe_mode(...)
        self._configured = False  # config or environment
        self._flag_file: str | None = None
        self._flag_seen = False
        self._checked_at = float("-inf")

    def configure(self, enabled: bool, flag_file: str | None) -> None:
        with self._lock:
            self._configured = enabled
            self._flag_file = flag_file
            self._checked_at = float("-inf")

    def set(self, enabled: bool | None) -> None:
        """``agentwatch.safe_mode(bool)``; ``None`` returns to what the configuration says."""
        with self._lock:
            self._override = enabled

    def is_on(self) -> bool:
        if self._flag_file is not None:
            now = self._clock()
            if now - self._checked_at >= CHECK_INTERVAL_S:
                seen = os.path.exists(self._flag_file)
                with self._lock:
                    self._flag_seen = seen
                    self._checked_at = now
            if self._flag_seen:
                return True
        override = self._override
        return self._configured if override is None else override


SWITCH = SafeModeSwitch()


def safe_mode(enabled: bool) -> None:
    """Switch safe mode on or off at run time, process-wide (the flag file, when present, still wins)."""
    if not isinstance(enabled, bool):
        from ..errors import ConfigError

        raise ConfigError(f"safe_mode(enabled): expected True or False, got {enabled!r}")
    SWITCH.set(enabled)
