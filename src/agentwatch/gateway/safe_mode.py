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
from collections.abc import Callable, Mapping

from ..errors import ConfigError

CHECK_INTERVAL_S = 1.0
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_safe_mode(env: Mapping[str, str] | None = None) -> bool | None:
    """``AGENTWATCH_SAFE_MODE`` as a boolean, ``None`` when unset; anything else is a ConfigError."""
    raw = (os.environ if env is None else env).get("AGENTWATCH_SAFE_MODE")
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"AGENTWATCH_SAFE_MODE: expected true or false (1/0, yes/no), got {raw!r}")


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
