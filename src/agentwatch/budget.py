"""Per-run limits (seed 004's ``Budget``): observed by default, enforced on request."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from . import semconv as sc


@dataclass(frozen=True)
class Budget:
    """Limits for one run. ``None`` means unlimited.

    With ``enforce=False`` an overrun is only flagged on the span where the
    cumulative figure passed the limit; with ``enforce=True`` the next LLM or
    tool call inside the run raises :class:`agentwatch.BudgetExceeded` before
    it is sent (and a detected loop raises :class:`agentwatch.LoopDetected`).
    A figure *passes* its limit when it becomes strictly greater than it.
    """

    max_steps: int | None = None
    max_tool_calls: int | None = None
    max_seconds: float | None = None
    max_usd: float | None = None
    max_tokens: int | None = None
    max_unique_calls: int | None = None
    enforce: bool = False

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self) if f.name != "enforce")

    def to_attributes(self) -> dict[str, Any]:
        """Span attributes recording the budget, so other processes apply the same limits."""
        out: dict[str, Any] = {}
        for name, key in _ATTR.items():
            value = getattr(self, name)
            if value is not None:
                out[key] = value
        if not self.is_empty():
            out[sc.BUDGET_ENFORCE] = self.enforce
        return out

    @classmethod
    def from_attributes(cls, attrs: Any) -> Budget | None:
        """Inverse of :meth:`to_attributes`; ``None`` when the span carries no budget."""
        kwargs: dict[str, Any] = {}
        for name, key in _ATTR.items():
            value = attrs.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                kwargs[name] = value
        if not kwargs:
            return None
        return cls(enforce=bool(attrs.get(sc.BUDGET_ENFORCE, False)), **kwargs)

    @classmethod
    def from_mapping(cls, data: Any) -> Budget:
        """Build from the seed-004 ``agent.budgets`` mapping (unknown keys are rejected)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ValueError(f"budgets must be a mapping, got {type(data).__name__}")
        allowed = {f.name for f in fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown budget keys: {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**data)


_ATTR = {
    "max_steps": sc.BUDGET_MAX_STEPS,
    "max_tool_calls": sc.BUDGET_MAX_TOOL_CALLS,
    "max_seconds": sc.BUDGET_MAX_SECONDS,
    "max_usd": sc.BUDGET_MAX_USD,
    "max_tokens": sc.BUDGET_MAX_TOKENS,
    "max_unique_calls": sc.BUDGET_MAX_UNIQUE_CALLS,
}

# Seed 004's safe defaults: documented and available, never imposed.
SEED_DEFAULTS = Budget(max_steps=25, max_tool_calls=40, max_seconds=60, max_usd=1.0, max_unique_calls=15)
