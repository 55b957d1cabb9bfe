"""Severity of each flag, and the one place findings are made (so overrides and switches apply everywhere).

Default levels, after seed 002's incident taxonomy ("critical: harmful output,
budget limits, security policy; high: loops and runaway resource use; medium:
degradation worth batching"):

| severity | flags | why |
|---|---|---|
| critical | `TOOL_DENIED`, `DUPLICATE_SIDE_EFFECT`, `ENTITY_MISMATCH`, `COST_BUDGET_EXCEEDED` | a policy was broken, a write happened twice, another customer's data was used, or money was spent past its cap: page someone |
| high | `LOOP_DETECTED`, `NO_PROGRESS`, `RETRY_STORM`, `ENTITY_HALLUCINATION`, `TOOL_OUTPUT_INVALID`, `CIRCUIT_OPEN`, `STEP_BUDGET_EXCEEDED`, `TOOL_BUDGET_EXCEEDED`, `TIME_BUDGET_EXCEEDED`, `TOKEN_BUDGET_EXCEEDED` | the run is stuck, burning resources or reasoning from an invented premise: review within minutes |
| medium | `TOKEN_SPIKE`, `CONTEXT_DRIFT`, `TOOL_ARG_MISMATCH`, `UNKNOWN_TOOL` | a symptom that often precedes a failure but is frequently benign: batch for review |

``agent.anomaly.severity`` overrides a level per flag; ``agent.anomaly.disabled``
switches a flag off (its detector then finds nothing).
"""  # noqa: E501

from __future__ import annotations

from ..config import AnomalyConfig
from ..semconv import Flag, Severity
from .record import Finding

DEFAULT_SEVERITY: dict[Flag, Severity] = {
    Flag.TOOL_DENIED: Severity.CRITICAL,
    Flag.DUPLICATE_SIDE_EFFECT: Severity.CRITICAL,
    Flag.ENTITY_MISMATCH: Severity.CRITICAL,
    Flag.COST_BUDGET_EXCEEDED: Severity.CRITICAL,
    Flag.LOOP_DETECTED: Severity.HIGH,
    Flag.NO_PROGRESS: Severity.HIGH,
    Flag.RETRY_STORM: Severity.HIGH,
    Flag.ENTITY_HALLUCINATION: Severity.HIGH,
    Flag.STEP_BUDGET_EXCEEDED: Severity.HIGH,
    Flag.TOOL_BUDGET_EXCEEDED: Severity.HIGH,
    Flag.TIME_BUDGET_EXCEEDED: Severity.HIGH,
    Flag.TOKEN_BUDGET_EXCEEDED: Severity.HIGH,
    Flag.TOOL_OUTPUT_INVALID: Severity.HIGH,
    Flag.CIRCUIT_OPEN: Severity.HIGH,
    Flag.TOKEN_SPIKE: Severity.MEDIUM,
    Flag.CONTEXT_DRIFT: Severity.MEDIUM,
    Flag.TOOL_ARG_MISMATCH: Severity.MEDIUM,
    Flag.UNKNOWN_TOOL: Severity.MEDIUM,
}


class Flagger:
    """Makes :class:`Finding` objects with the configured severity; knows which flags are switched off."""

    __slots__ = ("_levels",)

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        config = config if config is not None else AnomalyConfig()
        levels: dict[Flag, Severity] = {}
        for flag, default in DEFAULT_SEVERITY.items():
            if flag.value in config.disabled:
                continue
            override = config.severity.get(flag.value)
            levels[flag] = Severity(override) if override is not None else default
        self._levels = levels

    def enabled(self, flag: Flag) -> bool:
        return flag in self._levels

    def severity(self, flag: Flag) -> Severity:
        """The configured level (the default one for a disabled flag, used only by enforced stops)."""
        return self._levels.get(flag, DEFAULT_SEVERITY[flag])

    def make(self, flag: Flag, reason: str, span_id: str, related: str | None = None) -> Finding | None:
        """A finding, or ``None`` when ``flag`` is switched off."""
        level = self._levels.get(flag)
        if level is None:
            return None
        return Finding(flag, level, reason, span_id, related or None)
