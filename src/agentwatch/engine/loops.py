"""``LOOP_DETECTED`` and ``NO_PROGRESS``: calls that keep coming back with nothing new.

A repeat is only a loop when it brings nothing new, so polling whose answer
changes and pagination (new arguments each page) are not loops. Per (tool,
masked args hash) key the detector counts the calls since the key last brought
a new result, counting that call. "New" means new in substance
(:mod:`.noise`): the result's fingerprint with volatile parts masked was not
seen for the key, and a long text result is not near-identical to one the key
brought before. A call whose result is unknown (no result hash, or it failed)
or empty (blank text, ``[]``, ``{}``) brings nothing new. The call that makes the count reach
``repeated_calls_threshold`` (default 3) is flagged, and every one after it.

A cycle is a sequence of 2..4 distinct keys repeated ``cycle_repeats`` times in
a row (A->B->A->B, A->B->C->A->B->C) where the repetitions brought nothing new;
it is flagged on the call that completes it, and on every call that continues it.

``NO_PROGRESS`` counts consecutive tool calls that bring no new result to the
run: failed calls, empty results, and results whose masked fingerprint the run
has already seen. A successful call whose result is unknown counts as progress
unless it repeats a key (no evidence either way), and a write (side-effect
tool) with new arguments counts as progress even if its acknowledgement looks
like the last one or is empty. The
streak is flagged once, on the call that makes it reach the threshold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..semconv import Flag
from . import noise
from .record import Finding
from .state import MAX_RESULTS_PER_KEY, MAX_SKETCHES_PER_KEY, CallKey, CallState, RunState, bounded_put

if TYPE_CHECKING:
    from .context import Context

MAX_CYCLE = 4


def observe_tool(
    ctx: Context,
    run: RunState,
    span_id: str,
    key: CallKey | None,
    failed: bool,
    result_hash: str | None,
    side_effect: bool,
    out: list[Finding],
    sketch: str | None = None,
) -> CallState | None:
    """Update repeat, cycle and progress state with one finished tool call; returns its key state.

    ``result_hash`` is the masked result fingerprint (``noise.result_key``);
    ``sketch`` the long result's similarity sketch, if any.
    """
    cs: CallState | None = None
    first = True
    new_for_key = False
    empty = result_hash is None or result_hash in noise.EMPTY_RESULT_HASHES
    if key is not None:
        calls = run.calls
        cs = calls.get(key)
        if cs is None:  # the common case: a call never made before in this run
            new_for_key = not failed and not empty
            cs = CallState(key, span_id, result_hash if new_for_key else None)
            if new_for_key and sketch is not None:
                cs.sketches = [sketch]
            if len(calls) < ctx.max_calls:
                calls[key] = cs
            else:
                ctx.stats.calls_evicted += bounded_put(calls, key, cs, ctx.max_calls)
        else:
            first = False
            new_for_key = not failed and not empty and brings_new(cs, result_hash, sketch)  # type: ignore[arg-type]
        if new_for_key:
            cs.stale = 1
        else:
            cs.stale += 1
            if cs.stale >= ctx.loop_threshold:
                finding = ctx.flagger.make(
                    Flag.LOOP_DETECTED,
                    f"{key[0]} called {cs.stale} times with args {key[1]} and no new result "
                    f"(first at span {cs.first_span})",
                    span_id,
                    cs.first_span,
                )
                if finding is not None:
                    out.append(finding)
    window = run.window
    window.append(cs)
    if len(window) > ctx.cycle_window:
        del window[0]
    if new_for_key:
        run.since_new = 0
    else:
        run.since_new += 1
        if cs is not None and not first:
            _check_cycle(ctx, run, span_id, cs, out)

    # progress of the run as a whole
    if failed:
        progress = False
    elif result_hash is None:
        progress = first  # nothing recorded: no evidence either way
    elif empty:
        progress = side_effect and first  # an empty answer is nothing new (a write's empty ack is)
    else:
        results = run.results
        seen = result_hash in results
        progress = not seen or (side_effect and first)
        if not seen:
            if len(results) < ctx.max_calls:
                results[result_hash] = None
            else:
                ctx.stats.calls_evicted += bounded_put(results, result_hash, None, ctx.max_calls)
    if progress:
        run.streak = 0
    else:
        run.streak += 1
        if run.streak == 1:
            run.streak_first = span_id
        if run.streak == ctx.no_progress:
            finding = ctx.flagger.make(
                Flag.NO_PROGRESS,
                f"{run.streak} consecutive tool calls brought no new result "
                f"(failed, or a result already seen in this run; streak began at span {run.streak_first})",
                span_id,
                run.streak_first,
            )
            if finding is not None:
                out.append(finding)
    return cs


def brings_new(cs: CallState, result_hash: str, sketch: str | None) -> bool:
    """Is a (non-empty) result new in substance for the key? Records it either way.

    New: its masked fingerprint was not seen for the key, and a long text is not
    near-identical to one the key brought before. Shared with :mod:`.repeats`.
    """
    return _new_result(cs, result_hash) and _new_text(cs, sketch)


def _new_result(cs: CallState, result_hash: str) -> bool:
    """Record ``result_hash`` for the key; ``True`` if the key had not brought it before."""
    if cs.result is None:
        cs.result = result_hash
        return True
    if result_hash == cs.result:
        return False
    results = cs.results
    if results is None:
        cs.results = {result_hash}
        return True
    if result_hash in results:
        return False
    if len(results) >= MAX_RESULTS_PER_KEY:
        results.clear()
    results.add(result_hash)
    return True


def _new_text(cs: CallState, sketch: str | None) -> bool:
    """Is a long text result not near-identical to one the key brought before? (records it)"""
    if sketch is None:
        return True
    sketches = cs.sketches
    if sketches is None:
        cs.sketches = [sketch]
        return True
    if any(noise.similar(sketch, seen) for seen in sketches):
        return False
    if len(sketches) >= MAX_SKETCHES_PER_KEY:
        del sketches[0]
    sketches.append(sketch)
    return True


def _check_cycle(ctx: Context, run: RunState, span_id: str, cs: CallState, out: list[Finding]) -> None:
    """Flag the call that completes (or continues) a cycle of 2..4 distinct keys that brought nothing new."""
    window = run.window
    repeats = ctx.cycle_repeats
    n = len(window)
    for length in range(2, MAX_CYCLE + 1):
        span = length * repeats
        if n < span:
            return
        if window[n - 1 - length] is not cs:
            continue
        if run.since_new < length * (repeats - 1):
            return
        pattern = window[n - length :]
        if None in pattern or len({id(p) for p in pattern}) != length:
            continue
        start = n - span
        if any(window[start + i] is not pattern[i % length] for i in range(span)):
            continue
        names = " -> ".join(f"{p.key[0]}({p.key[1]})" for p in pattern if p is not None)
        finding = ctx.flagger.make(
            Flag.LOOP_DETECTED,
            f"cycle {names} repeated {repeats} times in a row with no new result "
            f"(first {cs.key[0]} call at span {cs.first_span})",
            span_id,
            cs.first_span,
        )
        if finding is not None:
            out.append(finding)
        return


def would_loop(ctx: Context, run: RunState, key: CallKey) -> CallState | None:
    """The key state when one more call of ``key`` with nothing new would reach the loop threshold."""
    cs = run.calls.get(key)
    if cs is not None and cs.stale + 1 >= ctx.loop_threshold:
        return cs
    return None
