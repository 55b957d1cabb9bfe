"""Configuration precedence (argument > environment > file > defaults) and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.config import load_config
from agentwatch.errors import ConfigError

SEED_004 = """
agent:
  budgets:
    max_steps: 25
    max_seconds: 60
    max_tool_calls: 40
    max_usd: 1.0
  loop_detection:
    repeated_calls_threshold: 3
    no_progress_threshold: 6
  tools:
    allow: ["search.read", "kb.read", "ticket.create"]
    deny: ["db.write", "payment.*"]
    idempotency_required: ["ticket.create"]
    timeouts_s: {default: 10}
  logging:
    level: info
    redact: ["authorization", "cookie", "token", "api_key"]
"""


def test_defaults_impose_no_budget() -> None:
    cfg = load_config(env={})
    assert cfg.budget.is_empty()
    assert cfg.loop.repeated_calls_threshold == 3
    assert cfg.tools.denial("anything") is None


def test_seed_004_file_shape(tmp_path: Path) -> None:
    path = tmp_path / "agentwatch.yaml"
    path.write_text(SEED_004)
    cfg = load_config(env={"AGENTWATCH_CONFIG": str(path)})
    assert cfg.budget.max_steps == 25 and cfg.budget.max_usd == 1.0
    assert cfg.tools.denial("payment.refund") is not None
    assert cfg.tools.denial("search.read") is None
    assert "not in the allow list" in (cfg.tools.denial("email.send") or "")
    assert cfg.tools.is_side_effect("ticket.create")
    # the file's keys add to the built-in ones (password stays redacted)
    assert {"authorization", "cookie", "token", "api_key", "password", "secret"} <= set(cfg.redact_keys)


def test_precedence(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(SEED_004)
    env = {"AGENTWATCH_CONFIG": str(path), "AGENTWATCH_MAX_STEPS": "10", "AGENTWATCH_TOOLS_DENY": "x.*, y"}
    cfg = load_config({"agent": {"budgets": {"max_steps": 5}}}, env=env)
    assert cfg.budget.max_steps == 5  # argument wins
    assert cfg.budget.max_seconds == 60  # file value kept
    assert cfg.tools.deny == ("x.*", "y")  # environment over file
    assert load_config(env=env).budget.max_steps == 10


def test_local_file_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agentwatch.yaml").write_text("agent: {budgets: {max_tool_calls: 7}}")
    assert load_config(env={}).budget.max_tool_calls == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("agent: [unclosed", "not valid YAML at line 1"),
        ("- a list", "must hold a mapping"),
        ("agent: {budgets: {max_stepz: 3}}", "unknown budget keys"),
        ("agent: {loop_detection: {repeated_calls_threshold: 0}}", "must be a positive number"),
        ("agent: {anomaly: {disabled: [NOT_A_FLAG]}}", "unknown flags"),
        ("agent: {entities: {patterns: [{type: x, regex: '('}]}}", "regex is invalid"),
        ("agent: {tools: {allow: search.read}}", "must be a list of strings"),
    ],
)
def test_broken_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(env={"AGENTWATCH_CONFIG": str(path)})
    assert message in str(caught.value)


def test_bad_environment_value() -> None:
    with pytest.raises(ConfigError, match="AGENTWATCH_MAX_STEPS"):
        load_config(env={"AGENTWATCH_MAX_STEPS": "lots"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(env={"AGENTWATCH_CONFIG": "/nonexistent/agentwatch.yaml"})
