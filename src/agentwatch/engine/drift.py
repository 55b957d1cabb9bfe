"""``CONTEXT_DRIFT``: an agent's own system instructions changed with no user turn between its calls.

Seed 003's context poisoning: the agent's own view of its task is rewritten
mid-run (by injected content, a memory write, a framework bug) while nobody
asked it to change. A changed system prompt *with* a new user turn is an
ordinary conversation step.

Several agents may share one run: experts taking turns in a group chat, a
handoff from a triage agent to a billing agent, the nodes of a multi-agent
graph. Each has its own instructions, so an agent is only ever compared with
itself. A call's agent is, in this order:

* the agent its span names (``gen_ai.agent.name``: the framework
  integrations set it for a LangGraph node, a group chat sets it per speaker);
* the agent whose instructions were exactly these earlier in the run (an
  agent taking its turn again);
* the agent of the run's previous unnamed call when it was offered the same
  tools (a plain tool loop is one agent);
* otherwise a new agent: one offered other tools than the previous call (the
  Agents SDK's triage agent offers ``transfer_to_billing``, the billing agent
  its own tools) is another agent, not the same one drifting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..semconv import Flag
from .record import Finding, SpanRecord
from .state import RunState

if TYPE_CHECKING:
    from .context import Context

MAX_AGENTS = 64
_PREV = ("prev", "")

# An agent's last LLM call: (system hash, user hash, span id, offered tools).
_Agent = tuple


def _identity(rec: SpanRecord, agents: dict[tuple[str, str], _Agent]) -> tuple[str, str]:
    name = rec.agent_name
    if name.__class__ is str and name:
        return ("name", name)
    system = rec.system_hash
    if system is not None and ("system", system) in agents:
        return ("system", system)
    prev = agents.get(_PREV)
    if prev is None or prev[3] == rec.offered_tools or system is None:
        return _PREV
    return ("system", system)


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
        and last[0] is not None
        and system != last[0]
        and rec.user_hash == last[1]
    ):
        finding = ctx.flagger.make(
            Flag.CONTEXT_DRIFT,
            f"system instructions changed ({last[0]} -> {system}) since the same agent's previous "
            f"LLM call (span {last[2]}) with no new user turn",
            rec.span_id,
            last[2],
        )
        if finding is not None:
            out.append(finding)
    state = (system, rec.user_hash, rec.span_id, rec.offered_tools)
    if len(agents) >= MAX_AGENTS and ident not in agents:
        agents.clear()
    agents[ident] = state
    if ident[0] != "name":  # unnamed: the previous call's agent, and findable by its instructions
        agents[_PREV] = state
        if system is not None:
            agents[("system", system)] = state
