"""``LOOP_DETECTED`` from the model's requests, for tools that leave no span of their own.

A zero-code agent often runs its tools as plain functions: the only trace of a
tool call is the request on the LLM span (``agentwatch.llm.tool_calls``) and
its result in the next LLM call's input (an OpenAI ``role: tool`` message or
Responses ``function_call_output``, an Anthropic ``tool_result`` block), matched
to the request by tool call id. A repeat is only a loop when it brings nothing
new, so the rule is the tool-span detector's (:mod:`.loops`), applied to those
results: per (tool, args hash) key, count the results since the key last
brought a new one, counting that result. New means new in substance
(:mod:`.noise`: the masked fingerprint, and near-identity of long texts); a
failed or empty result is nothing new. The LLM call whose input carries the
result that makes the count reach the loop threshold (default: the third
result in a row with nothing new) is flagged, and every one after it; the
evidence span is the key's first request.

Only what is seen is counted. A request whose result never shows up (no call
id, the run ended, the result went to another conversation) counts neither
way, so the flag comes one LLM call after the third request, once its result
is known, and a polling loop whose answer changes is never flagged. Out of
process the results come from ``agentwatch.llm.tool_results`` (fingerprints
computed in process before redaction, so capture mode does not matter) or a
foreign span's captured GenAI messages; an LLM span with neither shows no
results and its requests are not counted. Requests for calls a tool span did
run are left to the tool-span detector, so one loop is never counted twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..semconv import Flag
from . import noise
from .loops import brings_new
from .record import Finding, SpanRecord
from .state import CallKey, CallState, RunState, bounded_put

if TYPE_CHECKING:
    from .context import Context


def observe_requested(ctx: Context, run: RunState, rec: SpanRecord, out: list[Finding]) -> None:
    """Judge the results this LLM call was sent; remember the calls it requests for the next one."""
    results = rec.tool_results
    pending = run.request_pending
    if results and pending:
        _judge(ctx, run, pending, rec.span_id, results, out)
    if rec.requested_calls and rec.requested_ids:
        _remember(ctx, run, rec)


def _remember(ctx: Context, run: RunState, rec: SpanRecord) -> None:
    """Wait for the results of this span's requests, by call id (a key once per span)."""
    calls = run.calls
    pending = run.request_pending
    if pending is None:
        pending = run.request_pending = {}
    seen: set[CallKey] = set()
    for call, call_id in zip(rec.requested_calls, rec.requested_ids, strict=False):
        key = call if call.__class__ is tuple else (call[0], call[1])
        if not call_id or key in seen or key in calls:  # executed calls are the tool detector's
            continue
        seen.add(key)
        if len(pending) < ctx.max_calls:
            pending[call_id] = (key, rec.span_id)
        else:
            ctx.stats.calls_evicted += bounded_put(pending, call_id, (key, rec.span_id), ctx.max_calls)


def _judge(
    ctx: Context,
    run: RunState,
    pending: dict[str, tuple[CallKey, str]],
    span_id: str,
    results: tuple[tuple[str, str | None, str | None], ...],
    out: list[Finding],
) -> None:
    """Count each awaited result as new or not for its key; flag this span once if a key loops."""
    keys = run.request_repeats
    if keys is None:
        keys = run.request_repeats = {}
    flagged = False
    for item in results:
        waiting = pending.pop(item[0], None)
        if waiting is None:
            continue
        key, asked_in = waiting
        if key in run.calls:  # a tool span ran it after all
            continue
        result_hash, sketch = item[1], item[2]
        empty = noise.is_empty(result_hash)
        cs = keys.get(key)
        if cs is None:
            cs = CallState(key, asked_in)
            if len(keys) < ctx.max_calls:
                keys[key] = cs
            else:
                ctx.stats.calls_evicted += bounded_put(keys, key, cs, ctx.max_calls)
        if not empty and brings_new(cs, result_hash, sketch):  # type: ignore[arg-type]
            cs.stale = 1
            continue
        cs.stale += 1
        if cs.stale >= ctx.loop_threshold and not flagged:
            finding = ctx.flagger.make(
                Flag.LOOP_DETECTED,
                f"the model requested {key[0]} with args {key[1]} {cs.stale} times in a row and its "
                f"results brought nothing new; no tool span ran it (first request at span {cs.first_span})",
                span_id,
                cs.first_span,
            )
            if finding is not None:
                out.append(finding)
                flagged = True


# ----------------------------------------------------------------------------- results, in and out of process

MAX_RESULTS_PER_CALL = 128  # tool results read from one LLM call's input (bounded work per call)
MAX_CALL_ID_CHARS = 256
_EMPTY_JSON = frozenset({"[]", "{}", "null", '""'})

ToolResult = tuple[str, str | None, str | None]
"""(call id, masked result fingerprint or ``None`` for a failed result, similarity sketch)."""


def fingerprint(call_id: str, content: object, failed: bool = False) -> ToolResult:
    """A tool result as the detector keeps it: fingerprints only, computed before any redaction."""
    if failed:
        return (call_id, None, None)
    if content.__class__ is str and len(content) < 16 and content.strip() in _EMPTY_JSON:
        content = None  # a message carries text: "[]" or "null" is the tool's empty answer
    return (call_id, noise.result_key(content), noise.sketch(content))


def encode(results: tuple[ToolResult, ...]) -> tuple[str, ...]:
    """``agentwatch.llm.tool_results``: ``"masked_hash sketch call_id"``, ``-`` for a missing part."""
    return tuple(f"{h or '-'} {s or '-'} {cid}" for cid, h, s in results)


def decode(values: object) -> tuple[ToolResult, ...] | None:
    """The inverse of :func:`encode` (malformed entries are skipped); ``None`` for no list."""
    if not isinstance(values, (list, tuple)):
        return None
    out: list[ToolResult] = []
    for value in values[:MAX_RESULTS_PER_CALL]:
        if value.__class__ is not str:
            continue
        parts = value.split(" ", 2)
        if len(parts) != 3 or not parts[2]:
            continue
        h, s, cid = parts
        out.append((cid[:MAX_CALL_ID_CHARS], None if h == "-" else h, None if s == "-" else s))
    return tuple(out)
