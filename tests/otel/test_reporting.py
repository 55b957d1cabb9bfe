"""FindingReporter: one metric point, one callback and one log line per finding; never raises."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from agentwatch import semconv as sc
from agentwatch.engine.record import Finding
from agentwatch.otel.reporting import AnomalyContext, FindingReporter
from tests.otel.helpers import metric_points

LOOP = Finding(
    sc.Flag.LOOP_DETECTED,
    sc.Severity.HIGH,
    "get_order called 3 times",
    "00000000000000aa",
    "00000000000000bb",
)
SIDE = Finding(sc.Flag.DUPLICATE_SIDE_EFFECT, sc.Severity.CRITICAL, "refund twice", "00000000000000cc")
SPIKE = Finding(sc.Flag.TOKEN_SPIKE, sc.Severity.LOW, "9x the average", "00000000000000dd")
CTX = AnomalyContext(
    trace_id="0" * 31 + "1",
    span_id="00000000000000aa",
    span_name="execute_tool get_order",
    run_key="r" * 16,
    agent_name="support",
)


def test_counter_callback_and_log_line(
    metric_reader: InMemoryMetricReader, meter_provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentwatch.anomaly")
    calls: list[tuple[Finding, AnomalyContext]] = []
    reporter = FindingReporter(meter_provider, on_anomaly=lambda f, c: calls.append((f, c)))
    reporter.report([LOOP, SIDE], CTX)
    reporter.report([LOOP], AnomalyContext(trace_id="t", span_id="s"))  # no agent known

    assert calls == [(LOOP, CTX), (SIDE, CTX), (LOOP, AnomalyContext(trace_id="t", span_id="s"))]
    points = {frozenset(dict(p.attributes).items()): p.value for p in metric_points(metric_reader, sc.METRIC_ANOMALIES)}
    agent = (sc.GEN_AI_AGENT_NAME, "support")
    assert points == {
        frozenset({agent, (sc.ANOMALY_FLAG, "LOOP_DETECTED"), (sc.ANOMALY_SEVERITY, "high")}): 1,
        frozenset({agent, (sc.ANOMALY_FLAG, "DUPLICATE_SIDE_EFFECT"), (sc.ANOMALY_SEVERITY, "critical")}): 1,
        frozenset({(sc.ANOMALY_FLAG, "LOOP_DETECTED"), (sc.ANOMALY_SEVERITY, "high")}): 1,
    }
    records = [r for r in caplog.records if r.name == "agentwatch.anomaly"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.ERROR, logging.WARNING]
    first: Any = records[0]
    assert getattr(first, "agentwatch.anomaly.flag") == "LOOP_DETECTED"
    assert getattr(first, "agentwatch.anomaly.severity") == "high"
    assert getattr(first, "agentwatch.anomaly.reason") == "get_order called 3 times"
    assert getattr(first, "agentwatch.anomaly.related_span_id") == "00000000000000bb"
    assert first.trace_id == CTX.trace_id and first.span_id == "00000000000000aa"
    assert first.run_key == "r" * 16
    assert getattr(first, "gen_ai.agent.name") == "support"
    assert "LOOP_DETECTED" in first.getMessage() and "get_order called 3 times" in first.getMessage()


def test_low_severity_logs_at_info_and_logging_can_be_off(
    meter_provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agentwatch.anomaly")
    FindingReporter(meter_provider).report([SPIKE], CTX)
    FindingReporter(meter_provider, log=False).report([SPIKE], CTX)
    records = [r for r in caplog.records if r.name == "agentwatch.anomaly"]
    assert [r.levelno for r in records] == [logging.INFO]


def test_a_failing_callback_is_logged_once_counted_and_swallowed(
    meter_provider: MeterProvider, metric_reader: InMemoryMetricReader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    def bad(finding: Finding, context: AnomalyContext) -> None:
        raise RuntimeError("user bug")

    reporter = FindingReporter(meter_provider, on_anomaly=bad)
    reporter.report([LOOP, SIDE, SPIKE], CTX)
    assert reporter.callback_errors == 3
    errors = [r for r in caplog.records if r.name == "agentwatch.otel.reporting" and r.exc_info]
    assert len(errors) == 1
    assert sum(p.value for p in metric_points(metric_reader, sc.METRIC_ANOMALIES)) == 3  # still counted


class BrokenMeterProvider:
    def get_meter(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def create_counter(self, *args: Any, **kwargs: Any) -> Any:
        return self

    def add(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("exporter gone")


def test_a_broken_meter_does_not_break_reporting(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentwatch.anomaly")
    calls: list[Finding] = []
    reporter = FindingReporter(BrokenMeterProvider(), on_anomaly=lambda f, c: calls.append(f))  # type: ignore[arg-type]
    reporter.report([LOOP], CTX)
    assert calls == [LOOP]
    assert len([r for r in caplog.records if r.name == "agentwatch.anomaly"]) == 1


def test_global_meter_provider_is_used_by_default() -> None:
    reporter = FindingReporter()  # the global (no-op unless configured) provider: must not fail
    reporter.report([LOOP], CTX)
    assert reporter.reported == 1


def test_reasons_are_redacted_in_log_lines_and_events(
    meter_provider: MeterProvider, caplog: pytest.LogCaptureFixture
) -> None:
    from agentwatch.otel.findings import anomaly_update

    secret = "sk-proj-" + "Z" * 30
    finding = Finding(sc.Flag.ENTITY_HALLUCINATION, sc.Severity.HIGH,
                      f"tool arguments reference customer {secret}; password=hunter2", "00000000000000aa")
    caplog.set_level(logging.DEBUG, logger="agentwatch.anomaly")
    seen: list[Finding] = []
    FindingReporter(meter_provider, on_anomaly=lambda f, c: seen.append(f)).report([finding], CTX)
    (record,) = [r for r in caplog.records if r.name == "agentwatch.anomaly"]
    for text in (record.getMessage(), getattr(record, "agentwatch.anomaly.reason")):
        assert "Z" * 8 not in text and "hunter2" not in text and "[REDACTED]" in text
    assert seen == [finding]  # the in-process callback gets the finding as found
    _, events, _ = anomaly_update(None, None, [finding])
    reason = events[0][1][sc.ANOMALY_REASON]
    assert "Z" * 8 not in reason and "hunter2" not in reason
