"""Budgets: flag the span where a run's cumulative figure passes its limit, and stop calls when enforced.

A figure *passes* its limit when it becomes strictly greater than it (seed
004's ``max_steps=25`` allows 25 steps; the 26th is the overrun). Observe mode
flags the span of the call that passed, once per limit per run; enforce mode
refuses the call that would pass (steps, tool calls, distinct calls) or the
first call after the figure passed (seconds, dollars, tokens, which are only
known after a call), so observe and enforce point at the same call for every
limit that can be known in advance. Every ancestor run's budget is checked:
run totals include every descendant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..budget import Budget
from ..semconv import Flag, StopReason
from .record import Finding

if TYPE_CHECKING:
    from .context import Context
    from .state import CallKey, RunState


@dataclass(frozen=True, slots=True)
class Limits:
    """A :class:`Budget` checked once for sane values, with seconds in nanoseconds."""

    max_steps: int | None = None
    max_tool_calls: int | None = None
    max_seconds: float | None = None
    max_ns: int | None = None
    max_usd: float | None = None
    max_tokens: int | None = None
    max_unique: int | None = None
    enforce: bool = False


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value >= 0 else None


def compile_limits(budget: Budget | None) -> Limits | None:
    """``None`` for no budget (or one whose every limit is absent or nonsensical and not enforced)."""
    if budget is None:
        return None
    steps = _num(getattr(budget, "max_steps", None))
    tools = _num(getattr(budget, "max_tool_calls", None))
    seconds = _num(getattr(budget, "max_seconds", None))
    usd = _num(getattr(budget, "max_usd", None))
    tokens = _num(getattr(budget, "max_tokens", None))
    unique = _num(getattr(budget, "max_unique_calls", None))
    enforce = bool(getattr(budget, "enforce", False))
    if all(v is None for v in (steps, tools, seconds, usd, tokens, unique)) and not enforce:
        return None
    return Limits(
        max_steps=int(steps) if steps is not None else None,
        max_tool_calls=int(tools) if tools is not None else None,
        max_seconds=float(seconds) if seconds is not None else None,
        max_ns=int(seconds * 1e9) if seconds is not None else None,
        max_usd=float(usd) if usd is not None else None,
        max_tokens=int(tokens) if tokens is not None else None,
        max_unique=int(unique) if unique is not None else None,
        enforce=enforce,
    )


def _whose(run: RunState, owner: RunState) -> str:
    if owner is run:
        return "run"
    return f"enclosing run {owner.agent_name or owner.key}"


def observe(
    ctx: Context,
    run: RunState,
    span_id: str,
    end_ns: int,
    is_tool: bool,
    key: CallKey | None,
    out: list[Finding],
) -> None:
    """Flag every budget of ``run`` or an ancestor that this finished call made pass."""
    make = ctx.flagger.make
    for owner in run.chain:
        lim = owner.limits
        if lim is None:
            continue
        fired = owner.fired
        if fired is None:
            fired = owner.fired = set()
        who = _whose(run, owner)
        if lim.max_steps is not None and owner.steps > lim.max_steps and "steps" not in fired:
            fired.add("steps")
            _add(
                out,
                make(
                    Flag.STEP_BUDGET_EXCEEDED,
                    f"{who} reached {owner.steps} steps, over its budget of max_steps={lim.max_steps}",
                    span_id,
                ),
            )
        if is_tool:
            if (
                lim.max_tool_calls is not None
                and owner.tool_calls > lim.max_tool_calls
                and "tools" not in fired
            ):
                fired.add("tools")
                _add(
                    out,
                    make(
                        Flag.TOOL_BUDGET_EXCEEDED,
                        f"{who} reached {owner.tool_calls} tool calls, over its budget of "
                        f"max_tool_calls={lim.max_tool_calls}",
                        span_id,
                    ),
                )
            if lim.max_unique is not None and key is not None and "unique" not in fired:
                seen = owner.unique
                if seen is None:
                    seen = owner.unique = set()
                if key not in seen:
                    seen.add(key)
                    if len(seen) > lim.max_unique:
                        fired.add("unique")
                        owner.unique = None  # nothing more to count once passed
                        _add(
                            out,
                            make(
                                Flag.TOOL_BUDGET_EXCEEDED,
                                f"{who} made {len(seen)} distinct tool calls (tool + args hash), over "
                                f"its budget of max_unique_calls={lim.max_unique}",
                                span_id,
                            ),
                        )
        if (
            lim.max_ns is not None
            and owner.start_ns is not None
            and end_ns > 0
            and end_ns - owner.start_ns > lim.max_ns
            and "time" not in fired
        ):
            fired.add("time")
            _add(
                out,
                make(
                    Flag.TIME_BUDGET_EXCEEDED,
                    f"{who} had been running {(end_ns - owner.start_ns) / 1e9:.1f}s when this call "
                    f"ended, over its budget of max_seconds={lim.max_seconds:g}",
                    span_id,
                ),
            )
        if lim.max_usd is not None and owner.cost > lim.max_usd and "cost" not in fired:
            fired.add("cost")
            _add(
                out,
                make(
                    Flag.COST_BUDGET_EXCEEDED,
                    f"{who} cost reached ${owner.cost:.4f}, over its budget of max_usd={lim.max_usd:g}",
                    span_id,
                ),
            )
        if lim.max_tokens is not None and "tokens" not in fired:
            total = owner.input_tokens + owner.output_tokens
            if total > lim.max_tokens:
                fired.add("tokens")
                _add(
                    out,
                    make(
                        Flag.TOKEN_BUDGET_EXCEEDED,
                        f"{who} used {total} tokens, over its budget of max_tokens={lim.max_tokens}",
                        span_id,
                    ),
                )


def at_close(ctx: Context, run: RunState, end_ns: int) -> Finding | None:
    """The time budget passed only at the run's end (no call ended after it): flag the run span."""
    lim = run.limits
    if (
        lim is None
        or lim.max_ns is None
        or run.start_ns is None
        or end_ns <= 0
        or (run.fired is not None and "time" in run.fired)
        or end_ns - run.start_ns <= lim.max_ns
    ):
        return None
    if run.fired is None:
        run.fired = set()
    run.fired.add("time")
    return ctx.flagger.make(
        Flag.TIME_BUDGET_EXCEEDED,
        f"run lasted {(end_ns - run.start_ns) / 1e9:.1f}s, over its budget of "
        f"max_seconds={lim.max_seconds:g}",
        run.key,
    )


def enforce(
    run: RunState, is_tool: bool, key: CallKey | None, now_ns: int
) -> tuple[RunState, Flag, StopReason, str] | None:
    """The first enforced budget (of ``run`` or an ancestor) this call must not pass, or ``None``."""
    for owner in run.chain:
        lim = owner.limits
        if lim is None or not lim.enforce:
            continue
        who = _whose(run, owner)
        if lim.max_steps is not None and owner.started_steps + 1 > lim.max_steps:
            return (
                owner,
                Flag.STEP_BUDGET_EXCEEDED,
                StopReason.STEP_BUDGET,
                f"{who} already made {owner.started_steps} steps; step {owner.started_steps + 1} would pass "
                f"max_steps={lim.max_steps}",
            )
        if is_tool:
            if lim.max_tool_calls is not None and owner.started_tools + 1 > lim.max_tool_calls:
                return (
                    owner,
                    Flag.TOOL_BUDGET_EXCEEDED,
                    StopReason.TOOL_BUDGET,
                    f"{who} already made {owner.started_tools} tool calls; another would pass "
                    f"max_tool_calls={lim.max_tool_calls}",
                )
            if lim.max_unique is not None and key is not None:
                seen = owner.started_unique
                count = len(seen) if seen is not None else 0
                if (seen is None or key not in seen) and count + 1 > lim.max_unique:
                    return (
                        owner,
                        Flag.TOOL_BUDGET_EXCEEDED,
                        StopReason.TOOL_BUDGET,
                        f"{who} already made {count} distinct tool calls; a new one would pass "
                        f"max_unique_calls={lim.max_unique}",
                    )
        if lim.max_ns is not None and owner.start_ns is not None and now_ns - owner.start_ns > lim.max_ns:
            return (
                owner,
                Flag.TIME_BUDGET_EXCEEDED,
                StopReason.TIME_BUDGET,
                f"{who} has been running {(now_ns - owner.start_ns) / 1e9:.1f}s, over "
                f"max_seconds={lim.max_seconds:g}",
            )
        if lim.max_usd is not None and owner.cost > lim.max_usd:
            return (
                owner,
                Flag.COST_BUDGET_EXCEEDED,
                StopReason.COST_BUDGET,
                f"{who} already cost ${owner.cost:.4f}, over max_usd={lim.max_usd:g}",
            )
        if lim.max_tokens is not None and owner.input_tokens + owner.output_tokens > lim.max_tokens:
            return (
                owner,
                Flag.TOKEN_BUDGET_EXCEEDED,
                StopReason.TOKEN_BUDGET,
                f"{who} already used {owner.input_tokens + owner.output_tokens} tokens, over "
                f"max_tokens={lim.max_tokens}",
            )
    return None


def admit(run: RunState, is_tool: bool, key: CallKey | None) -> None:
    """Count a call the guard let through, in ``run`` and every ancestor."""
    for owner in run.chain:
        owner.started_steps += 1
        if is_tool:
            owner.started_tools += 1
            lim = owner.limits
            if key is not None and lim is not None and lim.enforce and lim.max_unique is not None:
                seen = owner.started_unique
                if seen is None:
                    seen = owner.started_unique = set()
                if len(seen) <= lim.max_unique:
                    seen.add(key)


def _add(out: list[Finding], finding: Finding | None) -> None:
    if finding is not None:
        out.append(finding)
