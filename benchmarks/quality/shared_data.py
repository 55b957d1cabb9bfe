"""Where the shared real-agent datasets are: ``shared/`` beside the repository (as CI lays it
out), else ``/work/shared`` (a developer machine), else ``$AGENTWATCH_DATASETS``."""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[2]


def datasets_dir() -> Path:
    candidates = [os.environ.get("AGENTWATCH_DATASETS"), _REPO.parent / "shared" / "datasets", "/work/shared/datasets"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return _REPO.parent / "shared" / "datasets"  # absent: the callers skip or say so


TAU_BENCH_AIRLINE = datasets_dir() / "tau-bench-airline" / "gpt-4o-airline.json"
WHO_AND_WHEN_LOGS = datasets_dir() / "who-and-when-captainagent" / "logs"
