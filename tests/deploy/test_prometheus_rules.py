"""The Prometheus alert rules, checked and unit-tested with the real promtool.

``promtool`` comes from Debian's ``prometheus`` package (``scripts/dev.py test``
installs it under CI). Missing locally: skipped with what to install; under
``CI=true``: a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RULES = REPO / "collector" / "prometheus-rules.yaml"
RULE_TESTS = HERE / "prometheus-rules.test.yaml"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    reason = "promtool not found: install Debian's prometheus package (`apt-get install -y prometheus`)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def _run(*argv: str, cwd: Path = HERE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, cwd=cwd)


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_fire_and_stay_quiet_as_tested(promtool: str) -> None:
    result = _run(promtool, "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (">= 3", ">= 1"),  # a single critical finding would page
        ("> 0.10", "> 0.01"),  # 1 blowup in 20 runs would page
        (">= 10", ">= 1"),  # a quiet agent's one bad run would page
    ],
)
def test_the_rule_tests_catch_a_loosened_threshold(promtool: str, tmp_path: Path, old: str, new: str) -> None:
    """The 'must not fire' series are real checks: loosen a threshold and the unit tests fail."""
    text = RULES.read_text()
    assert old in text
    (tmp_path / "rules.yaml").write_text(text.replace(old, new))
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = ["rules.yaml"]
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = _run(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode != 0, f"loosening {old!r} to {new!r} went unnoticed"


def test_prometheus_config_loads_the_rules(promtool: str, tmp_path: Path) -> None:
    """collector/prometheus.yaml names the rules where docker-compose.yml mounts them."""
    config = yaml.safe_load((REPO / "collector" / "prometheus.yaml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./collector/prometheus-rules.yaml:/etc/prometheus/rules/agentwatch.yaml:ro" in mounts
    local = dict(config, rule_files=[str(RULES)])
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local))
    result = _run(promtool, "check", "config", "--syntax-only", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
