"""``TOKEN_SPIKE``: one LLM call far more expensive than the run's earlier calls.

Seed 002's medium rule ("token consumption exceeds 5x the rolling average").
The baseline is the mean of input+output tokens over the run's earlier LLM
calls that reported usage; a spike needs ``token_spike_min_history`` of them
first, so the first calls of a run never spike against nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..semconv import Flag
from .record import Finding
from .state import RunState

if TYPE_CHECKING:
    from .context import Context


def observe_tokens(ctx: Context, run: RunState, tokens: int, span_id: str, out: list[Finding]) -> None:
    calls = run.token_calls
    if calls and calls >= ctx.spike_min:
        mean = run.token_sum / calls
        if mean > 0 and tokens > ctx.spike_factor * mean:
            finding = ctx.flagger.make(
                Flag.TOKEN_SPIKE,
                f"this call used {tokens} tokens, {tokens / mean:.1f}x the run's average of {mean:.0f} over "
                f"{calls} earlier calls (threshold {ctx.spike_factor:g}x)",
                span_id,
            )
            if finding is not None:
                out.append(finding)
    run.token_calls = calls + 1
    run.token_sum += tokens
