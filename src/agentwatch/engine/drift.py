"""``CONTEXT_DRIFT``: the system instructions changed between two LLM calls with no user turn between them.

Seed 003's context poisoning: the agent's own view of its task is rewritten
mid-run (by injected content, a memory write, a framework bug) while nobody
asked it to change. A changed system prompt *with* a new user turn is an
ordinary conversation step. The previous call is the run's previous LLM call;
two calls that both lack a user turn have the same (absent) user turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..semconv import Flag
from .record import Finding, SpanRecord
from .state import RunState

if TYPE_CHECKING:
    from .context import Context


def observe_llm(ctx: Context, run: RunState, rec: SpanRecord, out: list[Finding]) -> None:
    system = rec.system_hash
    if (
        run.llm_seen
        and system is not None
        and run.last_system is not None
        and system != run.last_system
        and rec.user_hash == run.last_user
    ):
        finding = ctx.flagger.make(
            Flag.CONTEXT_DRIFT,
            f"system instructions changed ({run.last_system} -> {system}) since the previous LLM call "
            f"(span {run.last_llm_span}) with no new user turn",
            rec.span_id,
            run.last_llm_span,
        )
        if finding is not None:
            out.append(finding)
    run.llm_seen = True
    run.last_system = system
    run.last_user = rec.user_hash
    run.last_llm_span = rec.span_id
