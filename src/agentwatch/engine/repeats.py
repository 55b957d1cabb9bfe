"""``LOOP_DETECTED`` from the model's requests, for tools that leave no span of their own.

A zero-code agent often runs its tools as plain functions: the only trace of a
tool call is the request on the LLM span (``agentwatch.llm.tool_calls``). When
the model asks for the same (tool, args hash) again and again and no tool span
of the run ever executed it, the request that reaches the loop threshold
(default: the third) is flagged on its LLM span, and every one after it.
Requests for calls a tool span did run are left to the tool-span detector
(:mod:`.loops`), so one loop is never counted twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..semconv import Flag
from .record import Finding, SpanRecord
from .state import CallKey, RunState, bounded_put

if TYPE_CHECKING:
    from .context import Context


def observe_requested(ctx: Context, run: RunState, rec: SpanRecord, out: list[Finding]) -> None:
    """Count the run's requests per key; flag the LLM span whose request repeats past the threshold."""
    counts = run.request_repeats
    calls = run.calls
    seen: set[CallKey] = set()
    for call in rec.requested_calls:
        key = call if call.__class__ is tuple else (call[0], call[1])
        if key in seen or key in calls:  # once per span; executed calls are the tool detector's
            continue
        seen.add(key)
        if counts is None:
            counts = run.request_repeats = {}
        entry = counts.get(key)
        if entry is None:
            entry = [0, rec.span_id]
            if len(counts) < ctx.max_calls:
                counts[key] = entry
            else:
                ctx.stats.calls_evicted += bounded_put(counts, key, entry, ctx.max_calls)
        entry[0] += 1
        if entry[0] >= ctx.loop_threshold:
            finding = ctx.flagger.make(
                Flag.LOOP_DETECTED,
                f"the model requested {key[0]} with args {key[1]} {entry[0]} times and no tool span "
                f"ran it (first request at span {entry[1]})",
                rec.span_id,
                entry[1],
            )
            if finding is not None:
                out.append(finding)
                return
