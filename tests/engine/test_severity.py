"""Default severities, overrides and disabled flags."""

from __future__ import annotations

from agentwatch.engine import DEFAULT_SEVERITY, Engine
from agentwatch.engine.severity import Flagger
from agentwatch.semconv import Flag, Severity

from .conftest import RunBuilder, flags, make_config


def test_every_flag_has_a_default() -> None:
    assert set(DEFAULT_SEVERITY) == set(Flag)
    assert DEFAULT_SEVERITY[Flag.TOOL_DENIED] is Severity.CRITICAL
    assert DEFAULT_SEVERITY[Flag.COST_BUDGET_EXCEEDED] is Severity.CRITICAL
    assert DEFAULT_SEVERITY[Flag.LOOP_DETECTED] is Severity.HIGH
    assert DEFAULT_SEVERITY[Flag.TOKEN_SPIKE] is Severity.MEDIUM


def test_override_and_disable() -> None:
    config = make_config({"anomaly": {"severity": {"LOOP_DETECTED": "low"}, "disabled": ["RETRY_STORM"]}})
    flagger = Flagger(config.anomaly)
    finding = flagger.make(Flag.LOOP_DETECTED, "r", "s")
    assert finding is not None and finding.severity is Severity.LOW
    assert flagger.make(Flag.RETRY_STORM, "r", "s") is None
    assert not flagger.enabled(Flag.RETRY_STORM)

    engine = Engine(config)
    b = RunBuilder(engine)
    out = [b.feed(b.tool("t", {"a": 1}, error=True)) for _ in range(3)]
    assert flags(out[2]) == {"LOOP_DETECTED"}
    assert out[2][0].severity is Severity.LOW
