"""Fixtures for the real-pipeline tests: built binaries and the skip-or-fail rule.

Missing tools skip the test with what to install; under ``CI=true`` a skip is a
failure, so CI always runs these tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from . import gobuild
from .procs import Proc
from .tools import skip_or_fail


def _binary(build: Callable[[], Path]) -> Path:
    try:
        return build()
    except gobuild.BuildUnavailable as exc:
        skip_or_fail(str(exc))
        raise  # unreachable: skip_or_fail raises


@pytest.fixture(scope="session")
def otelcol_bin() -> Path:
    return _binary(gobuild.build_otelcol)


@pytest.fixture(scope="session")
def jaeger_bin() -> Path:
    return _binary(gobuild.build_jaeger)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start processes (logs in tmp_path); every one still running is stopped by PID afterwards."""
    started: list[Proc] = []

    def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, argv, tmp_path, env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop(grace=10)
