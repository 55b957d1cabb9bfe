"""run_summary_attributes: a re-evaluated run span keeps a count consistent with its flags."""

from __future__ import annotations

from agentwatch import semconv as sc
from agentwatch.engine.record import RunSummary
from agentwatch.otel.findings import run_summary_attributes
from agentwatch.semconv import FailureMode


def _summary(flags: tuple[str, ...], count: int) -> RunSummary:
    return RunSummary(
        run_key="r", flags=flags, anomaly_count=count, fault_origin_span_id=None,
        failure_mode=FailureMode.COST_BLOWUP, steps=2, llm_calls=1, tool_calls=1,
        input_tokens=0, output_tokens=0, cost_usd=0.0,
    )


def test_flags_only_the_span_had_are_counted() -> None:
    """Found end to end (demo → agentwatch-collector → Jaeger): an enforced loop stop the app
    recorded kept its flag on the run span, but the collector wrote count 0."""
    attrs = run_summary_attributes(_summary((), 0), ("LOOP_DETECTED",))
    assert attrs[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED",)
    assert attrs[sc.RUN_ANOMALY_COUNT] == 1


def test_flags_found_again_are_not_counted_twice() -> None:
    attrs = run_summary_attributes(_summary(("LOOP_DETECTED", "RETRY_STORM"), 3), ("LOOP_DETECTED",))
    assert attrs[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED", "RETRY_STORM")
    assert attrs[sc.RUN_ANOMALY_COUNT] == 3
