"""Idempotency keys and run-level dedupe for writes.

A tool matching ``agent.tools.idempotency_required`` gets the key
``{run_id}:{tool}:{args_hash}`` when the call carries none. Within a run, a
call whose key already succeeded is answered with the first call's result and
does not run again. Results are kept per run, bounded, and released when the
run ends.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

KEY_ARGUMENT = "idempotency_key"
MAX_RUNS = 4096  # runs with remembered results; the oldest is forgotten beyond it
MAX_KEYS_PER_RUN = 256


def make_key(run_id: str, tool: str, args_hash: str) -> str:
    return f"{run_id}:{tool}:{args_hash}"


def supplied_key(arguments: Any) -> str | None:
    """The key the caller passed itself, if any."""
    if isinstance(arguments, dict):
        value = arguments.get(KEY_ARGUMENT)
        if isinstance(value, str) and value:
            return value
    return None


class ResultStore:
    """``(run, key) -> first successful result``, bounded in runs and keys per run."""

    def __init__(self, max_runs: int = MAX_RUNS, max_keys: int = MAX_KEYS_PER_RUN) -> None:
        self._lock = threading.Lock()
        self._runs: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._max_runs = max_runs
        self._max_keys = max_keys

    def get(self, run: str, key: str) -> tuple[bool, Any]:
        with self._lock:
            results = self._runs.get(run)
            if results is None or key not in results:
                return False, None
            return True, results[key]

    def put(self, run: str, key: str, result: Any) -> None:
        with self._lock:
            results = self._runs.get(run)
            if results is None:
                if len(self._runs) >= self._max_runs:
                    self._runs.popitem(last=False)
                results = self._runs[run] = {}
            if key in results or len(results) < self._max_keys:
                results.setdefault(key, result)

    def forget(self, run: str) -> None:
        with self._lock:
            self._runs.pop(run, None)


STORE = ResultStore()
