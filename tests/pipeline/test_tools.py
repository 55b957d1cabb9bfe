"""A missing tool skips locally and fails under CI=true (so CI can never skip the pipeline)."""

from __future__ import annotations

import pytest

from . import gobuild
from .tools import tool


def test_missing_tool_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y no-such-package"):
        tool("agentwatch-no-such-tool", "no-such-package")


def test_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        tool("agentwatch-no-such-tool", "no-such-package")


def test_no_go_toolchain_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setattr(gobuild.shutil, "which", lambda name: None)
    monkeypatch.setattr(gobuild.Path, "is_file", lambda self: False)
    with pytest.raises(gobuild.BuildUnavailable, match="install Go"):
        gobuild.go_executable()


def test_cache_is_outside_the_repository() -> None:
    assert gobuild.REPO not in gobuild.cache_dir().parents
