"""Exceptions that end a run with a stop reason, and configuration errors."""

from __future__ import annotations

from .semconv import StopReason


class ConfigError(ValueError):
    """A configuration file, variable or argument is invalid; the message says where."""


class StopRun(Exception):
    """Base exception that ends an :func:`agentwatch.run` with ``stop_reason``."""

    stop_reason: StopReason = StopReason.INTERNAL_ERROR

    def __init__(self, message: str = "", *, stop_reason: StopReason | str | None = None) -> None:
        super().__init__(message)
        if stop_reason is not None:
            self.stop_reason = StopReason(stop_reason)


class BudgetExceeded(StopRun):
    """Raised before an LLM or tool call when an enforced budget is already spent."""

    stop_reason = StopReason.STEP_BUDGET


class LoopDetected(StopRun):
    """Raised before a call that would repeat a detected loop in an enforced run."""

    stop_reason = StopReason.LOOP_DETECTED


class ToolDenied(StopRun):
    """Raised before a call to a tool the configured allow/deny lists forbid (when enforced)."""

    stop_reason = StopReason.TOOL_DENIED


class CircuitOpen(StopRun):
    """Raised instead of calling a tool whose circuit breaker is open (the dependency keeps failing)."""

    stop_reason = StopReason.CIRCUIT_OPEN


class ToolInputInvalid(StopRun):
    """Raised before a tool runs when ``validation.input.strict`` and its arguments fail the tool's schema."""

    stop_reason = StopReason.INVALID_INPUT


class ToolOutputInvalid(StopRun):
    """Raised instead of returning a tool result that fails its output schema (``validation.output.fail_closed``)."""

    stop_reason = StopReason.TOOL_OUTPUT_INVALID


class AnomalyStop(StopRun):
    """Raised before a run's next call once a finding listed in ``agent.anomaly.stop_on`` appeared in it."""

    stop_reason = StopReason.ANOMALY_STOP

    def __init__(
        self, message: str = "", *, finding: str | None = None, stop_reason: StopReason | str | None = None
    ) -> None:
        super().__init__(message, stop_reason=stop_reason)
        self.finding = finding


class ReplayDivergence(Exception):
    """Inside :func:`agentwatch.replay`: the code made a call the recording does not have.

    ``step`` is the 1-based step (LLM and tool calls, as ``agentwatch.step`` counts
    them) where the code left the recording; ``expected`` and ``got`` say how.
    """

    def __init__(self, step: int, expected: str, got: str) -> None:
        super().__init__(f"replay diverged at step {step}: the recording has {expected}, the code made {got}")
        self.step = step
        self.expected = expected
        self.got = got
