"""``RETRY_STORM`` and ``DUPLICATE_SIDE_EFFECT``: the same action attempted again and again.

Seed 004's ticket incident is both at once: a degraded API answered 502, the
agent retried ``ticket.create`` and produced 34 duplicate tickets. A failed
attempt of a write still counts as an attempt, because the backend may have
done the write before the response was lost. Failures count per tool name
(a storm of retries need not use identical arguments); duplicates count per
(tool, args hash), and a call carrying an idempotency key is never a duplicate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..semconv import Flag
from .record import Finding
from .state import CallKey, RunState, bounded_put

if TYPE_CHECKING:
    from .context import Context


def observe_failure(ctx: Context, run: RunState, span_id: str, tool: str, out: list[Finding]) -> None:
    """Count one failed call of ``tool``; flag the ``retry_storm_threshold``-th and every later one."""
    failures = run.failures
    if failures is None:
        failures = run.failures = {}
    entry = failures.get(tool)
    if entry is None:
        entry = [0, span_id]
        dropped = bounded_put(failures, tool, entry, ctx.max_calls)
        if dropped:
            ctx.stats.calls_evicted += dropped
    entry[0] += 1
    if entry[0] >= ctx.retry_threshold:
        finding = ctx.flagger.make(
            Flag.RETRY_STORM,
            f"{tool} has failed {entry[0]} times in this run (first failure at span {entry[1]})",
            span_id,
            entry[1],
        )
        if finding is not None:
            out.append(finding)


def has_idempotency_key(ctx: Context, arguments: Any) -> bool:
    """Do the arguments carry one of the configured idempotency keys (``agent.tools.idempotency_keys``)?"""
    if not isinstance(arguments, Mapping):
        return False
    keys = ctx.idempotency_keys
    return any(isinstance(k, str) and k in keys and arguments[k] not in (None, "") for k in arguments)


def observe_side_effect(
    ctx: Context, run: RunState, span_id: str, key: CallKey, idempotent: bool, out: list[Finding]
) -> None:
    """Flag a write repeated with the same args hash and no idempotency key; related = the first call."""
    effects = run.effects
    if effects is None:
        effects = run.effects = {}
    entry = effects.get(key)
    if entry is None:
        dropped = bounded_put(effects, key, [1, span_id], ctx.max_calls)
        if dropped:
            ctx.stats.calls_evicted += dropped
        return
    entry[0] += 1
    if idempotent:
        return
    finding = ctx.flagger.make(
        Flag.DUPLICATE_SIDE_EFFECT,
        f"side-effect tool {key[0]} called again with args {key[1]} and no idempotency key "
        f"(call {entry[0]} of this write; first at span {entry[1]})",
        span_id,
        entry[1],
    )
    if finding is not None:
        out.append(finding)
