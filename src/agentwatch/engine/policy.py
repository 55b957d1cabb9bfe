"""``TOOL_DENIED`` and ``UNKNOWN_TOOL``: tools the agent must not, or could not, call.

Denial follows ``agent.tools`` (deny globs win; a non-empty allow list denies
everything it does not match). An unknown tool is one the model asked for
although it was not among the tools offered to it: flagged on the LLM span
that asked, and again on the tool span if the framework executed it anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..semconv import Flag
from .record import Finding, SpanRecord
from .state import RunState, bounded_put

if TYPE_CHECKING:
    from .context import Context


def check_denied(ctx: Context, tool: str, span_id: str, out: list[Finding]) -> None:
    reason = ctx.denial(tool)
    if reason is not None:
        finding = ctx.flagger.make(Flag.TOOL_DENIED, f"call to a denied tool: {reason}", span_id)
        if finding is not None:
            out.append(finding)


def check_refused(ctx: Context, rec: SpanRecord, tool: str, span_id: str, out: list[Finding]) -> None:
    """The gateway's refusals and output check, read from the span so every adapter flags them alike.

    A call refused by safe mode (or any denial recorded as ``error_class=denied``)
    is ``TOOL_DENIED``; one refused by an open breaker is ``CIRCUIT_OPEN``; a result
    that failed its output schema is ``TOOL_OUTPUT_INVALID``.
    """
    name = tool or "tool"
    made = None
    if rec.error_class == "circuit_open":
        made = ctx.flagger.make(Flag.CIRCUIT_OPEN, f"call of {name} refused: its circuit breaker is open", span_id)
    elif rec.error_class == "denied" and not any(f.flag is Flag.TOOL_DENIED for f in out):
        made = ctx.flagger.make(Flag.TOOL_DENIED, f"call of {name} refused by policy", span_id)
    if made is not None:
        out.append(made)
    if rec.output_invalid:
        made = ctx.flagger.make(
            Flag.TOOL_OUTPUT_INVALID, f"the result of {name} does not match its output schema", span_id
        )
        if made is not None:
            out.append(made)


def check_requested(ctx: Context, run: RunState | None, rec: SpanRecord, out: list[Finding]) -> None:
    """Flag an LLM span that requested tools outside ``offered_tools``; remember them for the tool spans."""
    offered = rec.offered_tools
    if offered is None:
        return
    unknown: list[str] = []
    for call in rec.requested_calls:
        name = call[0]
        if name not in offered and name not in unknown:
            unknown.append(name)
    if not unknown:
        return
    if run is not None:
        if run.unknown_requested is None:
            run.unknown_requested = {}
        for name in unknown:
            bounded_put(run.unknown_requested, name, rec.span_id, ctx.max_calls)
    listed = ", ".join(repr(n) for n in unknown[:5])
    finding = ctx.flagger.make(
        Flag.UNKNOWN_TOOL,
        f"the model requested {listed}, not among the {len(offered)} tools offered to it",
        rec.span_id,
    )
    if finding is not None:
        out.append(finding)


def check_executed(ctx: Context, run: RunState, tool: str, span_id: str, out: list[Finding]) -> None:
    """Flag a tool span executing a tool the model requested without it being offered."""
    llm_span = run.unknown_requested.get(tool) if run.unknown_requested else None
    if llm_span is None:
        return
    finding = ctx.flagger.make(
        Flag.UNKNOWN_TOOL,
        f"{tool} was executed although the model requested it without it being offered (span {llm_span})",
        span_id,
        llm_span,
    )
    if finding is not None:
        out.append(finding)
