"""Multi-agent and multi-turn runs through the real clients: what the engine must see as normal.

Each agent of a multi-agent run is compared with itself for drift, the history a
second chat turn sends is known, and a step limit the framework handles itself
is the run's stop reason.
"""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("langchain_openai")
pytest.importorskip("agents")

import agents
import openai
from agents import Agent, OpenAIResponsesModel, Runner, function_tool
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import create_react_agent

import agentwatch
from agentwatch import semconv as sc
from agentwatch.instrumentation.langchain import NEED_MORE_STEPS
from agentwatch.testing import LLMServer, reply
from tests.telemetry import Telemetry

MODEL = "gpt-4o-mini"


def all_flags(telemetry: Telemetry) -> set[str]:
    return {f for s in telemetry.spans() for f in (s.attributes or {}).get(sc.ANOMALY_FLAGS, ())}


@tool
def lookup(order_id: str) -> str:
    """Look up an order."""
    return f"order {order_id}: shipped"


def test_two_node_graph_is_two_agents_not_drift(telemetry: Telemetry, llm_server: LLMServer) -> None:
    llm_server.script(reply.text("Findings: ord_555 shipped."), reply.text("Dear customer, it shipped."))
    llm = ChatOpenAI(model=MODEL, base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=5)

    def researcher(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke([SystemMessage("You research orders."), *state["messages"]])]}

    def writer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [llm.invoke([SystemMessage("You write the reply."), *state["messages"]])]}

    builder = StateGraph(MessagesState)
    builder.add_node("researcher", researcher)
    builder.add_node("writer", writer)
    builder.add_edge(START, "researcher")
    builder.add_edge("researcher", "writer")
    builder.add_edge("writer", END)
    builder.compile(name="team").invoke({"messages": [HumanMessage("Where is ord_555?")]})

    first, second = sorted(telemetry.llm(), key=lambda s: s.start_time)
    assert first.attributes[sc.LLM_SYSTEM_HASH] != second.attributes[sc.LLM_SYSTEM_HASH]
    assert (first.attributes[sc.GEN_AI_AGENT_NAME], second.attributes[sc.GEN_AI_AGENT_NAME]) == (
        "researcher",
        "writer",
    )
    assert "CONTEXT_DRIFT" not in all_flags(telemetry)
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_FAILURE_MODE] == "completed"


def test_prebuilt_agent_out_of_steps_is_a_step_budget_stop(telemetry: Telemetry, llm_server: LLMServer) -> None:
    llm_server.default = reply.tool_call("lookup", {"order_id": "ord_555"})
    llm = ChatOpenAI(model=MODEL, base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=5)
    graph = create_react_agent(llm, [lookup])
    out = graph.invoke({"messages": [HumanMessage("Where is ord_555?")]}, {"recursion_limit": 6})
    assert out["messages"][-1].content == NEED_MORE_STEPS  # the graph answered, no exception
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "step_budget"


@function_tool
def get_order(order_id: str) -> str:
    """Look up an order by id."""
    return f"order {order_id}: shipped"


async def test_agents_max_turns_handled_by_an_error_handler_is_a_step_budget_stop(
    telemetry: Telemetry, llm_server: LLMServer
) -> None:
    agents.set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=5)
    agent = Agent(
        name="support", model=OpenAIResponsesModel(model=MODEL, openai_client=client), tools=[get_order]
    )
    llm_server.default = reply.tool_call("get_order", {"order_id": "ord_555"})
    result = await Runner.run(
        agent,
        "Loop forever",
        max_turns=2,
        error_handlers={"max_turns": lambda data: "I could not finish in time."},
    )
    assert result.final_output == "I could not finish in time."
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "step_budget"
    assert "MaxTurnsExceeded" in run_span.attributes[sc.RUN_STOP_DETAIL]


def test_second_turn_of_a_chat_knows_the_history(telemetry: Telemetry, llm_server: LLMServer) -> None:
    """A chat loop keeps its history; each turn is a run. Turn 2 uses an id only turn 1 saw."""
    client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=5)
    history: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "What did I order?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "list_orders", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"orders": {"Mug": "#W2378156"}}'},
        {"role": "assistant", "content": "You ordered a mug."},
        {"role": "user", "content": "Return it please."},
    ]
    llm_server.script(reply.tool_call("return_order", {"order_id": "W2378156"}))
    with agentwatch.run("support"):
        client.chat.completions.create(model=MODEL, messages=history)  # type: ignore[arg-type]

        @agentwatch.tool("return_order", side_effect=True)
        def return_order(order_id: str) -> str:
            return "return requested"

        return_order("W2378156")
    assert "ENTITY_HALLUCINATION" not in all_flags(telemetry)
    (llm_span,) = telemetry.llm()
    assert "code:W2378156" in " ".join(llm_span.attributes[sc.LLM_INPUT_ENTITIES])
