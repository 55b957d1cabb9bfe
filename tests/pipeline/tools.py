"""Missing tools: skipped with what to install, and a failure under ``CI=true``."""

from __future__ import annotations

import os
import shutil

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    if under_ci():
        pytest.fail(f"CI=true: required tool missing: {reason}", pytrace=False)
    pytest.skip(reason)


def tool(name: str, package: str) -> str:
    """Path of a command-line tool from a Debian package, or skip (fail under CI)."""
    path = shutil.which(name)
    if not path:
        skip_or_fail(f"`{name}` not found: install it with `apt-get install -y {package}`")
    assert path
    return path
