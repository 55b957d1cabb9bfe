"""The tool gateway on agent-framework tools: the OpenAI Agents SDK and LangGraph's ToolNode,
driven by the real openai client against the scripted model server."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import StatusCode

import agentwatch
from agentwatch import semconv as sc
from agentwatch.testing import LLMServer, reply

MODEL = "gpt-4o-mini"


class Upstream(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"upstream answered {status_code}")
        self.status_code = status_code


class Tickets:
    def __init__(self, fail_first: int) -> None:
        self.created: list[str] = []
        self.keys: dict[str, int] = {}
        self.calls = 0
        self.fail_first = fail_first

    def create(self, title: str, key: str | None) -> str:
        self.calls += 1
        if key is None or key not in self.keys:
            self.created.append(title)
            if key is not None:
                self.keys[key] = len(self.created)
        if self.calls <= self.fail_first:
            raise Upstream(502)
        return f"T-{len(self.created)}"



GATEWAY = {
    "tools": {
        "idempotency_required": ["create_ticket"],
        "retries": {"max_attempts": 3, "retryable_status": [502], "backoff_ms": [1]},
    }
}


# --------------------------------------------------------------------------- OpenAI Agents SDK


async def test_agents_sdk_tool_retried_with_one_ticket(instrument: Any, llm_server: LLMServer) -> None:
    agents = pytest.importorskip("agents")
    import openai

    agents.set_tracing_disabled(True)
    tel = instrument(GATEWAY)
    store = Tickets(fail_first=2)

    @agents.function_tool
    def create_ticket(title: str, idempotency_key: str | None = None) -> str:
        """Create a support ticket."""
        return store.create(title, idempotency_key)

    client = openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="t", max_retries=0, timeout=5)
    agent = agents.Agent(
        name="support", instructions="Help.", tools=[create_ticket],
        model=agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
    )
    llm_server.script(reply.tool_call("create_ticket", {"title": "printer on fire"}), reply.text("Done: T-1"))
    result = await agents.Runner.run(agent, "My printer is on fire")
    assert result.final_output == "Done: T-1"
    assert store.created == ["printer on fire"]
    spans = tel.tools()
    assert [s.attributes[sc.TOOL_ATTEMPT] for s in spans] == [1, 2, 3]
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert "T-1" in llm_server.requests[1].tool_results[0].content  # the model saw the last outcome


async def test_agents_sdk_safe_mode_refuses(instrument: Any, llm_server: LLMServer) -> None:
    agents = pytest.importorskip("agents")
    import openai

    agents.set_tracing_disabled(True)
    tel = instrument({"safe_mode": {"enabled": True, "allowed_tools": ["lookup"]}})
    ran: list[str] = []

    @agents.function_tool
    def delete_account(user: str) -> str:
        """Delete an account."""
        ran.append(user)
        return "deleted"

    client = openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="t", max_retries=0, timeout=5)
    agent = agents.Agent(
        name="support", instructions="Help.", tools=[delete_account],
        model=agents.OpenAIChatCompletionsModel(model=MODEL, openai_client=client),
    )
    llm_server.script(reply.tool_call("delete_account", {"user": "bob"}), reply.text("ok"))
    with pytest.raises(agentwatch.ToolDenied):
        await agents.Runner.run(agent, "Delete bob")
    assert ran == []
    (span,) = tel.tools()
    assert "TOOL_DENIED" in span.attributes[sc.ANOMALY_FLAGS]
    assert span.attributes[sc.SAFE_MODE] is True


# --------------------------------------------------------------------------- LangGraph ToolNode


def _graph(server: LLMServer, tools: list[Any]) -> Any:
    pytest.importorskip("langgraph")
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    llm = ChatOpenAI(model=MODEL, base_url=server.openai_base_url, api_key="t", max_retries=0, timeout=5)
    bound = llm.bind_tools(tools)

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model)
    builder.add_node("tools", ToolNode(tools, handle_tool_errors=True))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    return builder.compile(name="support")


def test_langgraph_tool_retried_with_one_ticket(instrument: Any, llm_server: LLMServer) -> None:
    pytest.importorskip("langgraph")
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    tel = instrument(GATEWAY)
    store = Tickets(fail_first=2)

    @tool
    def create_ticket(title: str, idempotency_key: str | None = None) -> str:
        """Create a support ticket."""
        return store.create(title, idempotency_key)

    llm_server.script(reply.tool_call("create_ticket", {"title": "printer on fire"}), reply.text("Done"))
    out = _graph(llm_server, [create_ticket]).invoke({"messages": [HumanMessage("printer on fire")]})
    assert out["messages"][-1].content == "Done"
    assert store.created == ["printer on fire"]
    spans = tel.tools()
    assert [s.attributes[sc.TOOL_ATTEMPT] for s in spans] == [1, 2, 3]
    assert all(s.attributes[sc.TOOL_IDEMPOTENCY_KEY_VALUE].endswith(s.attributes[sc.TOOL_ARGS_HASH]) for s in spans)


def test_langgraph_breaker_opens(instrument: Any, llm_server: LLMServer) -> None:
    pytest.importorskip("langgraph")
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool

    tel = instrument({"tools": {"circuit_breakers": {"enabled": True, "failure_threshold": 2, "window_seconds": 60}}})

    @tool
    def charge(order_id: str) -> str:
        """Charge an order."""
        raise Upstream(503)

    llm_server.script(
        *[reply.tool_call("charge", {"order_id": f"ord_{i}"}) for i in range(2)],
        reply.tool_call("charge", {"order_id": "ord_9"}),
        reply.text("giving up"),
    )
    with pytest.raises(agentwatch.CircuitOpen):
        _graph(llm_server, [charge]).invoke({"messages": [HumanMessage("charge")]})
    assert "CIRCUIT_OPEN" in tel.tools()[-1].attributes[sc.ANOMALY_FLAGS]
