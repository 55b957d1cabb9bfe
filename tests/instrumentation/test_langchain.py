"""Real LangChain tools and LangGraph graphs, with ChatOpenAI on the scripted server; no callbacks."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("langgraph")
pytest.importorskip("langchain_openai")

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import StructuredTool, ToolException, tool
from langchain_openai import ChatOpenAI
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry.trace import StatusCode
from typing_extensions import TypedDict

import agentwatch
from agentwatch import semconv as sc
from agentwatch.hashing import args_hash
from agentwatch.testing import LLMServer, reply
from tests.telemetry import Telemetry

MODEL = "gpt-4o-mini"
ran: list[str] = []


@tool
def get_order(order_id: str) -> dict[str, str]:
    """Look up an order by id."""
    ran.append(order_id)
    return {"order_id": order_id, "customer": "cust_789", "status": "shipped"}


@tool
def cancel_order(order_id: str) -> str:
    """Cancel an order."""
    raise ValueError(f"order {order_id} already shipped")


def _refund(order_id: str) -> str:
    raise ToolException("refund service unavailable")


flaky_refund = StructuredTool.from_function(
    _refund,
    name="flaky_refund",
    description="Refund an order; reports its own errors as text.",
    handle_tool_error=True,
)


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


def agent_graph(server: LLMServer, tools: list[Any], *, handle_tool_errors: Any = True) -> Any:
    """The classic tool-calling agent: model node, ToolNode, loop until no tool call."""
    llm = ChatOpenAI(model=MODEL, base_url=server.openai_base_url, api_key="test", max_retries=0, timeout=5)
    bound = llm.bind_tools(tools)

    def call_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [bound.invoke(state["messages"])]}

    async def acall_model(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", call_model, afunc=acall_model)  # type: ignore[call-overload]
    builder.add_node("tools", ToolNode(tools, handle_tool_errors=handle_tool_errors))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    return builder.compile(name="support")


def assert_tree(telemetry: Telemetry, *, llm: int, tools: int) -> Any:
    (run_span,) = telemetry.runs()
    assert len(telemetry.llm()) == llm, [s.name for s in telemetry.spans()]
    assert len(telemetry.tools()) == tools, [s.name for s in telemetry.spans()]
    for span in telemetry.llm() + telemetry.tools():
        assert span.parent is not None and span.parent.span_id == run_span.context.span_id, span.name
    return run_span


def test_graph_invoke_is_a_run_with_llm_and_tool_spans(telemetry: Telemetry, llm_server: LLMServer) -> None:
    llm_server.script(
        reply.tool_call("get_order", {"order_id": "ord_555"}, call_id="call_lc1"),
        reply.text("It shipped."),
    )
    out = agent_graph(llm_server, [get_order]).invoke({"messages": [HumanMessage("Where is ord_555?")]})

    assert out["messages"][-1].content == "It shipped." and ran == ["ord_555"]
    run_span = assert_tree(telemetry, llm=2, tools=1)
    assert run_span.name == "invoke_agent support"
    assert run_span.attributes[sc.RUN_STOP_REASON] == "success"
    assert run_span.attributes[sc.RUN_TOOL_CALLS] == 1
    (span,) = telemetry.tools()
    first, second = sorted(telemetry.llm(), key=lambda s: s.start_time)
    h = args_hash({"order_id": "ord_555"})
    assert span.name == "execute_tool get_order"
    assert span.attributes[sc.GEN_AI_TOOL_CALL_ID] == "call_lc1"
    assert span.attributes[sc.TOOL_ARGS_HASH] == h
    assert span.attributes[sc.GEN_AI_TOOL_DESCRIPTION] == "Look up an order by id."
    assert span.attributes[sc.TOOL_RESULT_HASH] == args_hash(
        {"order_id": "ord_555", "customer": "cust_789", "status": "shipped"}
    )
    assert "customer:cust_789" in span.attributes[sc.TOOL_RESULT_ENTITIES]
    assert first.attributes[sc.LLM_TOOL_CALLS] == (f"get_order:{h}",)
    assert [s.attributes[sc.STEP] for s in (first, span, second)] == [1, 2, 3]


async def test_graph_ainvoke(telemetry: Telemetry, llm_server: LLMServer) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    graph = agent_graph(llm_server, [get_order])
    out = await graph.ainvoke({"messages": [HumanMessage("Where is ord_555?")]})
    assert out["messages"][-1].content == "Shipped."
    run_span = assert_tree(telemetry, llm=2, tools=1)
    assert run_span.attributes[sc.RUN_STOP_REASON] == "success"


async def test_graph_astream_consumed_partly_still_ends_its_run(
    telemetry: Telemetry, llm_server: LLMServer
) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    stream = agent_graph(llm_server, [get_order]).astream(
        {"messages": [HumanMessage("Where is ord_555?")]}, stream_mode="updates"
    )
    async for update in stream:
        assert "model" in update  # first step only, then stop consuming
        break
    await stream.aclose()
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_LLM_CALLS] == 1
    assert run_span.attributes[sc.RUN_STOP_REASON] == "success"


def test_graph_stream_run_covers_every_step(telemetry: Telemetry, llm_server: LLMServer) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    updates = list(
        agent_graph(llm_server, [get_order]).stream(
            {"messages": [HumanMessage("Where is ord_555?")]}, stream_mode="updates"
        )
    )
    assert [next(iter(u)) for u in updates] == ["model", "tools", "model"]
    assert_tree(telemetry, llm=2, tools=1)


def test_tool_error_handed_to_the_model_is_a_failed_span(telemetry: Telemetry, llm_server: LLMServer) -> None:
    llm_server.script(reply.tool_call("cancel_order", {"order_id": "ord_555"}), reply.text("Sorry."))
    out = agent_graph(llm_server, [cancel_order]).invoke({"messages": [HumanMessage("Cancel ord_555")]})
    assert out["messages"][-1].content == "Sorry."
    (span,) = telemetry.tools()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.ERROR_TYPE] == "ValueError"
    assert span.attributes[sc.TOOL_ERROR_CLASS] == "error"
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "success"


def test_tool_error_that_ends_the_graph(telemetry: Telemetry, llm_server: LLMServer) -> None:
    llm_server.script(reply.tool_call("cancel_order", {"order_id": "ord_555"}))
    graph = agent_graph(llm_server, [cancel_order], handle_tool_errors=False)
    with pytest.raises(ValueError, match="already shipped"):
        graph.invoke({"messages": [HumanMessage("Cancel ord_555")]})
    (run_span,) = telemetry.runs()
    assert run_span.status.status_code is StatusCode.ERROR
    assert run_span.attributes[sc.RUN_STOP_REASON] == "tool_error"


def test_tool_that_reports_its_own_error_as_text(telemetry: Telemetry) -> None:
    message = flaky_refund.invoke(
        {"type": "tool_call", "name": "flaky_refund", "id": "call_9", "args": {"order_id": "ord_1"}}
    )
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert message.content == "refund service unavailable"
    (span,) = telemetry.tools()
    assert span.attributes[sc.GEN_AI_TOOL_CALL_ID] == "call_9"
    assert span.attributes[sc.ERROR_TYPE] == "langchain_core.tools.base.ToolException"
    assert span.status.status_code is StatusCode.ERROR


async def test_direct_tool_calls_sync_async_and_string_input(telemetry: Telemetry) -> None:
    get_order.invoke({"order_id": "ord_1"})
    await get_order.ainvoke({"order_id": "ord_2"})
    get_order.run("ord_3")  # a single-input tool given a bare string: hashed as the model would send it
    assert ran == ["ord_1", "ord_2", "ord_3"]
    hashes = [s.attributes[sc.TOOL_ARGS_HASH] for s in telemetry.tools()]
    assert hashes == [args_hash({"order_id": f"ord_{i}"}) for i in (1, 2, 3)]
    assert telemetry.runs() == []


def test_listed_schema_flags_bad_arguments(telemetry: Telemetry) -> None:
    with pytest.raises(Exception):  # noqa: B017 - pydantic rejects it too; the flag is what we check
        get_order.invoke({"order_id": ["not", "a", "string"]})
    (span,) = telemetry.tools()
    assert "TOOL_ARG_MISMATCH" in span.attributes[sc.ANOMALY_FLAGS]


class Steps(TypedDict):
    order_id: str
    result: str


def test_subgraph_from_a_node_joins_the_run_but_graph_in_a_tool_nests(telemetry: Telemetry) -> None:
    child_builder = StateGraph(Steps)
    child_builder.add_node("lookup", lambda s: {"result": str(get_order.invoke({"order_id": s["order_id"]}))})
    child_builder.add_edge(START, "lookup")
    child_builder.add_edge("lookup", END)
    child = child_builder.compile(name="lookup_graph")

    @tool
    def ask_lookup(order_id: str) -> str:
        """Ask the lookup graph."""
        return str(child.invoke({"order_id": order_id, "result": ""})["result"])

    parent_builder = StateGraph(Steps)
    parent_builder.add_node("direct", lambda s: {"result": child.invoke(s)["result"]})
    parent_builder.add_node("via_tool", lambda s: {"result": ask_lookup.invoke({"order_id": s["order_id"]})})
    parent_builder.add_edge(START, "direct")
    parent_builder.add_edge("direct", "via_tool")
    parent_builder.add_edge("via_tool", END)
    parent_builder.compile(name="parent").invoke({"order_id": "ord_7", "result": ""})

    assert ran == ["ord_7", "ord_7"]
    runs = {s.name: s for s in telemetry.runs()}
    assert set(runs) == {"invoke_agent parent", "invoke_agent lookup_graph"}
    parent, nested = runs["invoke_agent parent"], runs["invoke_agent lookup_graph"]
    ask = next(s for s in telemetry.tools() if s.name == "execute_tool ask_lookup")
    direct_lookup, tool_lookup = sorted(
        (s for s in telemetry.tools() if s.name == "execute_tool get_order"), key=lambda s: s.start_time
    )
    assert direct_lookup.parent.span_id == parent.context.span_id  # the subgraph joined the parent run
    assert ask.parent.span_id == parent.context.span_id
    assert nested.parent.span_id == ask.context.span_id  # a graph run by a tool is a sub-agent
    assert tool_lookup.parent.span_id == nested.context.span_id
    assert parent.attributes[sc.RUN_TOOL_CALLS] == 3


def test_recursion_limit_is_a_step_budget_stop(telemetry: Telemetry, llm_server: LLMServer) -> None:
    llm_server.default = reply.tool_call("get_order", {"order_id": "ord_555"})
    with pytest.raises(GraphRecursionError):
        agent_graph(llm_server, [get_order]).invoke(
            {"messages": [HumanMessage("loop")]}, {"recursion_limit": 4}
        )
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "step_budget"


def test_enforced_budget_ends_the_graph_even_when_tool_errors_are_handled(
    telemetry: Telemetry, llm_server: LLMServer
) -> None:
    llm_server.default = reply.tool_call("get_order", {"order_id": "ord_555"})
    graph = agent_graph(llm_server, [get_order], handle_tool_errors=True)
    with (
        pytest.raises(agentwatch.BudgetExceeded),
        agentwatch.run("support", budget=agentwatch.Budget(max_tool_calls=1, enforce=True)),
    ):
        graph.invoke({"messages": [HumanMessage("Where is ord_555?")]})
    assert ran == ["ord_555"]
    assert len(llm_server.requests) == 2  # the stop never reached the model as a tool message
    (run_span,) = telemetry.runs()  # the graph joined the explicit run
    assert run_span.attributes[sc.RUN_STOP_REASON] == "tool_budget"


def test_uninstrument_makes_langchain_inert(telemetry: Telemetry, llm_server: LLMServer) -> None:
    agentwatch.uninstrument()
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    out = agent_graph(llm_server, [get_order]).invoke({"messages": [HumanMessage("Where is ord_555?")]})
    assert isinstance(out["messages"][-1], AIMessage) and ran == ["ord_555"]
    assert telemetry.spans() == []
