"""``CONTEXT_DRIFT``: an agent's own system instructions changed with no user turn between its calls.

Seed 003's context poisoning: the agent's own view of its task is rewritten
mid-run (by injected content, a memory write, a framework bug) while nobody
asked it to change. A changed system prompt *with* a new user turn is an
ordinary conversation step.

Several agents may share one run: experts taking turns in a group chat, a
handoff from a triage agent to a billing agent, the nodes of a multi-agent
graph. Each has its own instructions, so an agent is only ever compared with
itself:

* by name, when the call carries one (``gen_ai.agent.name``);
* otherwise by what it was given: the tools it was offered and its
  instructions. A call is the previous call's agent when it was offered the
  same tools and its instructions keep at least :data:`SAME_AGENT` (half) of
  the previous instructions' lines (estimated from the ``system_sketch`` of
  both, :func:`.noise.containment`); instructions that share less are another
  agent's, and an agent whose instructions are exactly one seen before in the
  run is that agent returning. Without sketches (spans recorded by other
  instrumentations), same tools means same agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..semconv import Flag
from . import noise
from .record import Finding, SpanRecord
from .state import RunState

if TYPE_CHECKING:
    from .context import Context

SAME_AGENT = 0.5
MAX_AGENTS = 64


class _Agent:
    """The last LLM call of one agent in a run."""

    __slots__ = ("sketch", "span", "system", "tools", "user")

    def __init__(self, rec: SpanRecord) -> None:
        self.system = rec.system_hash
        self.sketch = rec.system_sketch
        self.user = rec.user_hash
        self.span = rec.span_id
        self.tools = rec.offered_tools


def _identity(rec: SpanRecord, agents: dict[str, _Agent]) -> str:
    name = rec.agent_name
    if name.__class__ is str and name:
        return "name:" + name
    system = rec.system_hash
    if system is None:
        return "prev"
    key = "system:" + system
    if key in agents:
        return key  # an agent seen before, with the same instructions
    prev = agents.get("prev")
    if prev is not None and prev.system is not None and prev.tools == rec.offered_tools:
        if prev.sketch is None or rec.system_sketch is None:
            return "prev"
        kept = noise.containment(prev.sketch, rec.system_sketch)
        if kept is not None and kept >= SAME_AGENT:
            return "prev"
    return key


def observe_llm(ctx: Context, run: RunState, rec: SpanRecord, out: list[Finding]) -> None:
    agents = run.agents
    if agents is None:
        agents = run.agents = {}
    ident = _identity(rec, agents)
    last = agents.get(ident)
    system = rec.system_hash
    if (
        last is not None
        and system is not None
        and last.system is not None
        and system != last.system
        and rec.user_hash == last.user
    ):
        finding = ctx.flagger.make(
            Flag.CONTEXT_DRIFT,
            f"system instructions changed ({last.system} -> {system}) since the same agent's previous "
            f"LLM call (span {last.span}) with no new user turn",
            rec.span_id,
            last.span,
        )
        if finding is not None:
            out.append(finding)
    state = _Agent(rec)
    if len(agents) >= MAX_AGENTS and ident not in agents:
        agents.clear()
    agents[ident] = state
    if not ident.startswith("name:"):
        agents["prev"] = state
        if system is not None:
            agents["system:" + system] = state
