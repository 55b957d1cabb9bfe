"""The failure-mode table of engine/outcome.py."""

from __future__ import annotations

import pytest

from agentwatch.engine import failure_mode
from agentwatch.semconv import FailureMode, Flag, StopReason

BY_REASON = {
    StopReason.SUCCESS: FailureMode.COMPLETED,
    StopReason.STEP_BUDGET: FailureMode.COST_BLOWUP,
    StopReason.TOOL_BUDGET: FailureMode.COST_BLOWUP,
    StopReason.COST_BUDGET: FailureMode.COST_BLOWUP,
    StopReason.TOKEN_BUDGET: FailureMode.COST_BLOWUP,
    StopReason.LOOP_DETECTED: FailureMode.COST_BLOWUP,
    StopReason.NO_PROGRESS: FailureMode.COST_BLOWUP,
    StopReason.TIME_BUDGET: FailureMode.TIMEOUT,
    StopReason.CANCELLED: FailureMode.TIMEOUT,
    StopReason.TOOL_DENIED: FailureMode.BAD_DECISION,
    StopReason.TOOL_TIMEOUT: FailureMode.TOOL_ERROR,
    StopReason.TOOL_RATE_LIMIT: FailureMode.TOOL_ERROR,
    StopReason.TOOL_AUTH_FAILED: FailureMode.TOOL_ERROR,
    StopReason.TOOL_ERROR: FailureMode.TOOL_ERROR,
    StopReason.TOOL_OUTPUT_INVALID: FailureMode.TOOL_ERROR,
    StopReason.LLM_ERROR: FailureMode.TOOL_ERROR,
    StopReason.INTERNAL_ERROR: FailureMode.BAD_OUTPUT,
    StopReason.INVALID_INPUT: FailureMode.BAD_OUTPUT,
    StopReason.CIRCUIT_OPEN: FailureMode.TOOL_ERROR,
    StopReason.ANOMALY_STOP: FailureMode.BAD_DECISION,
}


def test_anomaly_stop_takes_the_bucket_of_its_flags() -> None:
    assert failure_mode("anomaly_stop", ["LOOP_DETECTED"]) is FailureMode.COST_BLOWUP
    assert failure_mode("anomaly_stop", ["ENTITY_MISMATCH"]) is FailureMode.BAD_DECISION
    assert failure_mode("anomaly_stop", ["TOKEN_SPIKE"]) is FailureMode.BAD_DECISION


def test_gateway_flags_on_a_successful_run() -> None:
    assert failure_mode("success", ["TOOL_OUTPUT_INVALID"]) is FailureMode.BAD_OUTPUT
    assert failure_mode("success", ["CIRCUIT_OPEN"]) is FailureMode.TOOL_ERROR


def test_every_stop_reason_is_in_the_table() -> None:
    assert set(BY_REASON) == set(StopReason)


@pytest.mark.parametrize(("reason", "mode"), BY_REASON.items())
def test_stop_reason_without_flags(reason: StopReason, mode: FailureMode) -> None:
    assert failure_mode(reason.value, ()) is mode
    assert failure_mode(reason, []) is mode  # the enum itself works too


@pytest.mark.parametrize("reason", [StopReason.SUCCESS.value, None, "something_new"])
def test_flags_decide_for_success_and_unknown(reason: str | None) -> None:
    assert failure_mode(reason, ()) is FailureMode.COMPLETED
    assert failure_mode(reason, ["RETRY_STORM", "TOKEN_SPIKE"]) is FailureMode.COMPLETED
    assert failure_mode(reason, ["ENTITY_MISMATCH"]) is FailureMode.BAD_DECISION
    assert failure_mode(reason, ["ENTITY_MISMATCH", "TIME_BUDGET_EXCEEDED"]) is FailureMode.TIMEOUT
    assert failure_mode(reason, ["TIME_BUDGET_EXCEEDED", "LOOP_DETECTED"]) is FailureMode.COST_BLOWUP
    for flag in (
        "STEP_BUDGET_EXCEEDED",
        "TOOL_BUDGET_EXCEEDED",
        "COST_BUDGET_EXCEEDED",
        "TOKEN_BUDGET_EXCEEDED",
        "LOOP_DETECTED",
        "NO_PROGRESS",
    ):
        assert failure_mode(reason, [flag]) is FailureMode.COST_BLOWUP
    for flag in (
        "ENTITY_HALLUCINATION",
        "DUPLICATE_SIDE_EFFECT",
        "TOOL_DENIED",
        "UNKNOWN_TOOL",
        "TOOL_ARG_MISMATCH",
        "CONTEXT_DRIFT",
    ):
        assert failure_mode(reason, [Flag(flag)]) is FailureMode.BAD_DECISION


def test_failed_run_keeps_its_stop_reason_bucket() -> None:
    assert failure_mode("tool_auth_failed", ["LOOP_DETECTED", "RETRY_STORM"]) is FailureMode.TOOL_ERROR
    assert failure_mode("time_budget", ["ENTITY_MISMATCH"]) is FailureMode.TIMEOUT
