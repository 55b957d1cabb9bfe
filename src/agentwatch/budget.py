"""Per-run limits (seed 004's ``Budget``): observed by default, enforced on request."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from . import semconv as sc
from .errors import ConfigError

_COUNTS = ("max_steps", "max_tool_calls", "max_tokens", "max_unique_calls")
_AMOUNTS = ("max_seconds", "max_usd")


def _problem(name: str, value: Any) -> str | None:
    """Why ``value`` is not a valid limit ``name`` (``None`` when it is). Same rules as the config schema."""
    if value is None:
        return None
    if name in _COUNTS:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer or None, got {type(value).__name__} {value!r}"
        return None if value >= 1 else f"must be >= 1, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be a number or None, got {type(value).__name__} {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    return None if value > 0 else f"must be > 0, got {value!r}"


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

    def __post_init__(self) -> None:
        # Budget(max_steps="2") or Budget(enforce="false") would silently disable a limit.
        for name in (*_COUNTS, *_AMOUNTS):
            problem = _problem(name, getattr(self, name))
            if problem:
                raise ConfigError(f"Budget.{name} {problem}")
        if not isinstance(self.enforce, bool):
            raise ConfigError(f"Budget.enforce must be True or False, got {type(self.enforce).__name__} "
                              f"{self.enforce!r}")

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
        """Inverse of :meth:`to_attributes`; ``None`` when the span carries no budget.

        Span attributes are input, not configuration: an invalid value (a negative
        or non-finite limit, a float step count) is skipped, never raised.
        """
        kwargs: dict[str, Any] = {}
        for name, key in _ATTR.items():
            value = attrs.get(key)
            if name in _COUNTS and isinstance(value, float) and value.is_integer():
                value = int(value)  # another SDK may record counts as doubles
            if value is not None and _problem(name, value) is None:
                kwargs[name] = value
        if not kwargs:
            return None
        return cls(enforce=attrs.get(sc.BUDGET_ENFORCE) is True, **kwargs)

    @classmethod
    def from_mapping(cls, data: Any) -> Budget:
        """Build from the seed-004 ``agent.budgets`` mapping, checked against the config schema."""
        from .config import validate  # late: config imports this module

        if data is None:
            return cls()
        validate({"agent": {"budgets": data}}, "budgets")
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
