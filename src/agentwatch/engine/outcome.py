"""Which outcome bucket (seed 001) a run ends in, from its stop reason and its flags.

Every run ends in exactly one failure mode. The stop reason says how the run
ended; the flags say what went wrong on the way, which matters when the run
"succeeded" anyway (seed 003's confident wrong confirmation returns normally).

| stop reason | failure mode |
|---|---|
| `success`, none or unrecognised | `completed` when no flag below is present; otherwise the first that applies of: a budget flag except time (`STEP_`, `TOOL_`, `COST_`, `TOKEN_BUDGET_EXCEEDED`), `LOOP_DETECTED` or `NO_PROGRESS` -> `cost_blowup`; `TIME_BUDGET_EXCEEDED` -> `timeout`; `ENTITY_MISMATCH`, `ENTITY_HALLUCINATION`, `DUPLICATE_SIDE_EFFECT`, `TOOL_DENIED`, `UNKNOWN_TOOL`, `TOOL_ARG_MISMATCH` or `CONTEXT_DRIFT` -> `bad_decision`; `TOOL_OUTPUT_INVALID` -> `bad_output`; `CIRCUIT_OPEN` -> `tool_error` |
| `anomaly_stop` | as `success` with the run's flags, `bad_decision` when none applies |
| `step_budget`, `tool_budget`, `cost_budget`, `token_budget`, `loop_detected`, `no_progress` | `cost_blowup` |
| `time_budget`, `cancelled` | `timeout` |
| `tool_denied` | `bad_decision` |
| `tool_timeout`, `tool_rate_limit`, `tool_auth_failed`, `tool_error`, `tool_output_invalid`, `llm_error`, `circuit_open` | `tool_error` |
| `internal_error`, `invalid_input` | `bad_output` |

`RETRY_STORM` and `TOKEN_SPIKE` never change the bucket on their own: a run that
retried or had one expensive call and still succeeded completed. A failed run
keeps the bucket of its stop reason whatever its flags (a run that died on a
401 after looping is a `tool_error` first: fixing the token is the fix).
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Iterable

from ..semconv import FailureMode, Flag, StopReason

_BY_STOP_REASON: dict[str, FailureMode] = {
    StopReason.SUCCESS.value: FailureMode.COMPLETED,
    StopReason.STEP_BUDGET.value: FailureMode.COST_BLOWUP,
    StopReason.TOOL_BUDGET.value: FailureMode.COST_BLOWUP,
    StopReason.COST_BUDGET.value: FailureMode.COST_BLOWUP,
    StopReason.TOKEN_BUDGET.value: FailureMode.COST_BLOWUP,
    StopReason.LOOP_DETECTED.value: FailureMode.COST_BLOWUP,
    StopReason.NO_PROGRESS.value: FailureMode.COST_BLOWUP,
    StopReason.TIME_BUDGET.value: FailureMode.TIMEOUT,
    StopReason.CANCELLED.value: FailureMode.TIMEOUT,
    StopReason.TOOL_DENIED.value: FailureMode.BAD_DECISION,
    StopReason.TOOL_TIMEOUT.value: FailureMode.TOOL_ERROR,
    StopReason.TOOL_RATE_LIMIT.value: FailureMode.TOOL_ERROR,
    StopReason.TOOL_AUTH_FAILED.value: FailureMode.TOOL_ERROR,
    StopReason.TOOL_ERROR.value: FailureMode.TOOL_ERROR,
    StopReason.TOOL_OUTPUT_INVALID.value: FailureMode.TOOL_ERROR,
    StopReason.LLM_ERROR.value: FailureMode.TOOL_ERROR,
    StopReason.CIRCUIT_OPEN.value: FailureMode.TOOL_ERROR,
    StopReason.INTERNAL_ERROR.value: FailureMode.BAD_OUTPUT,
    StopReason.INVALID_INPUT.value: FailureMode.BAD_OUTPUT,
}

COST_FLAGS = frozenset(
    {
        Flag.STEP_BUDGET_EXCEEDED.value,
        Flag.TOOL_BUDGET_EXCEEDED.value,
        Flag.COST_BUDGET_EXCEEDED.value,
        Flag.TOKEN_BUDGET_EXCEEDED.value,
        Flag.LOOP_DETECTED.value,
        Flag.NO_PROGRESS.value,
    }
)
TIME_FLAGS = frozenset({Flag.TIME_BUDGET_EXCEEDED.value})
DECISION_FLAGS = frozenset(
    {
        Flag.ENTITY_MISMATCH.value,
        Flag.ENTITY_HALLUCINATION.value,
        Flag.DUPLICATE_SIDE_EFFECT.value,
        Flag.TOOL_DENIED.value,
        Flag.UNKNOWN_TOOL.value,
        Flag.TOOL_ARG_MISMATCH.value,
        Flag.CONTEXT_DRIFT.value,
    }
)


def failure_mode(stop_reason: str | None, flags: Iterable[str]) -> FailureMode:
    """The run's outcome bucket by the table in this module's docstring."""
    reason = str(stop_reason) if stop_reason is not None else None
    mode = _BY_STOP_REASON.get(reason) if reason is not None else None
    if mode is not None and mode is not FailureMode.COMPLETED:
        return mode
    present = {str(f) for f in flags}
    if present & COST_FLAGS:
        return FailureMode.COST_BLOWUP
    if present & TIME_FLAGS:
        return FailureMode.TIMEOUT
    if present & DECISION_FLAGS:
        return FailureMode.BAD_DECISION
    if Flag.TOOL_OUTPUT_INVALID.value in present:
        return FailureMode.BAD_OUTPUT
    if Flag.CIRCUIT_OPEN.value in present:
        return FailureMode.TOOL_ERROR
    if reason == StopReason.ANOMALY_STOP.value:
        return FailureMode.BAD_DECISION
    return FailureMode.COMPLETED
