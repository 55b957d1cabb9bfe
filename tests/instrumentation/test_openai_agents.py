"""The real OpenAI Agents SDK (``agents``) driven by the scripted LLM server, with no decorators."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("agents")

import agents
import openai
from agents import (
    Agent,
    MaxTurnsExceeded,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
)
from opentelemetry.trace import StatusCode

import agentwatch
from agentwatch import semconv as sc
from agentwatch.hashing import args_hash
from agentwatch.testing import LLMServer, reply
from tests.telemetry import Telemetry

MODEL = "gpt-4o-mini"
ORDERS = {"ord_555": {"order_id": "ord_555", "customer": "cust_789", "status": "shipped"}}
ran: list[str] = []


@function_tool
def get_order(order_id: str) -> dict[str, str]:
    """Look up an order by id."""
    ran.append(order_id)
    return ORDERS[order_id]


@function_tool
def cancel_order(order_id: str) -> str:
    """Cancel an order."""
    raise ValueError(f"order {order_id} already shipped")


@function_tool(failure_error_function=None)
def strict_cancel(order_id: str) -> str:
    """Cancel an order; errors reach the caller."""
    raise PermissionError("not allowed")


@function_tool(timeout=0.05)
async def slow_lookup(order_id: str) -> str:
    """Answers too late."""
    await asyncio.sleep(1)
    return "late"


@pytest.fixture(autouse=True)
def _quiet_agents() -> Iterator[None]:
    """The SDK's own tracing would try to export to OpenAI; agentwatch does not depend on it."""
    agents.set_tracing_disabled(True)
    ran.clear()
    yield


@pytest.fixture
def aclient(llm_server: LLMServer) -> Iterator[openai.AsyncOpenAI]:
    yield openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=5)


def support_agent(client: openai.AsyncOpenAI, *, chat: bool = False, tools: list[Any] | None = None) -> Agent:
    model: Any = (
        OpenAIChatCompletionsModel(model=MODEL, openai_client=client)
        if chat
        else OpenAIResponsesModel(model=MODEL, openai_client=client)
    )
    return Agent(
        name="support",
        instructions="Help the customer.",
        model=model,
        tools=tools if tools is not None else [get_order],
    )


def assert_tree(telemetry: Telemetry, *, llm: int, tools: int) -> Any:
    """One run span; every LLM and tool span is its child. Returns the run span."""
    (run_span,) = telemetry.runs()
    assert len(telemetry.llm()) == llm, [s.name for s in telemetry.spans()]
    assert len(telemetry.tools()) == tools, [s.name for s in telemetry.spans()]
    for span in telemetry.llm() + telemetry.tools():
        assert span.parent is not None and span.parent.span_id == run_span.context.span_id, span.name
        assert span.context.trace_id == run_span.context.trace_id
    return run_span


async def test_runner_run_is_a_run_with_llm_and_tool_spans(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.script(
        reply.tool_call("get_order", {"order_id": "ord_555"}, call_id="call_abc"),
        reply.text("It shipped."),
    )
    result = await Runner.run(support_agent(aclient), "Where is ord_555?")

    assert result.final_output == "It shipped." and ran == ["ord_555"]
    run_span = assert_tree(telemetry, llm=2, tools=1)
    assert run_span.name == "invoke_agent support"
    assert run_span.attributes[sc.GEN_AI_AGENT_NAME] == "support"
    assert run_span.attributes[sc.RUN_STOP_REASON] == "success"
    assert run_span.attributes[sc.RUN_LLM_CALLS] == 2
    assert run_span.attributes[sc.RUN_TOOL_CALLS] == 1
    (tool,) = telemetry.tools()
    first_llm, second_llm = sorted(telemetry.llm(), key=lambda s: s.start_time)
    h = args_hash({"order_id": "ord_555"})
    assert tool.name == "execute_tool get_order"
    assert tool.attributes[sc.GEN_AI_TOOL_CALL_ID] == "call_abc"
    assert tool.attributes[sc.TOOL_ARGS_HASH] == h
    assert tool.attributes[sc.GEN_AI_TOOL_DESCRIPTION] == "Look up an order by id."
    assert tool.attributes[sc.TOOL_RESULT_HASH] == args_hash(ORDERS["ord_555"])
    assert first_llm.attributes[sc.LLM_TOOL_CALLS] == (f"get_order:{h}",)
    assert [s.attributes[sc.STEP] for s in (first_llm, tool, second_llm)] == [1, 2, 3]


def test_run_sync_with_chat_completions(telemetry: Telemetry, llm_server: LLMServer) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    client = openai.AsyncOpenAI(base_url=llm_server.openai_base_url, api_key="test", max_retries=0)
    result = Runner.run_sync(support_agent(client, chat=True), "Where is ord_555?")

    assert result.final_output == "Shipped."
    assert [r.path for r in llm_server.requests] == ["/v1/chat/completions"] * 2
    run_span = assert_tree(telemetry, llm=2, tools=1)
    assert run_span.attributes[sc.RUN_STOP_REASON] == "success"
    (tool,) = telemetry.tools()
    assert tool.attributes[sc.GEN_AI_TOOL_CALL_ID] == llm_server.requests[1].tool_results[0].call_id


async def test_run_streamed_run_ends_with_the_stream(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    result = Runner.run_streamed(support_agent(aclient), "Where is ord_555?")
    assert telemetry.runs() == []  # still running
    events = [event async for event in result.stream_events()]

    assert events and result.final_output == "Shipped."
    run_span = assert_tree(telemetry, llm=2, tools=1)
    assert run_span.attributes[sc.RUN_STOP_REASON] == "success"
    assert all(s.attributes.get(sc.GEN_AI_REQUEST_STREAM) for s in telemetry.llm())


async def test_tool_exception_turned_into_a_message_is_a_failed_tool_span(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.tool_call("cancel_order", {"order_id": "ord_555"}), reply.text("Sorry."))
    result = await Runner.run(support_agent(aclient, tools=[cancel_order]), "Cancel ord_555")

    assert result.final_output == "Sorry."
    assert "error occurred" in llm_server.requests[1].tool_results[0].content  # the SDK told the model
    (tool,) = telemetry.tools()
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes[sc.ERROR_TYPE] == "ValueError"
    assert tool.attributes[sc.TOOL_ERROR_CLASS] == "error"
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "success"  # the agent recovered


async def test_tool_exception_that_ends_the_run(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.tool_call("strict_cancel", {"order_id": "ord_555"}))
    with pytest.raises(Exception) as caught:
        await Runner.run(support_agent(aclient, tools=[strict_cancel]), "Cancel ord_555")

    assert isinstance(caught.value.__cause__, PermissionError)  # the SDK wraps it; we change nothing
    (tool,) = telemetry.tools()
    assert tool.status.status_code is StatusCode.ERROR
    assert tool.attributes[sc.ERROR_TYPE] == "PermissionError"
    (run_span,) = telemetry.runs()
    assert run_span.status.status_code is StatusCode.ERROR
    assert run_span.attributes[sc.ERROR_TYPE] == "agents.exceptions.UserError"
    assert run_span.attributes[sc.RUN_STOP_REASON] == "tool_error"  # from the tool failure it wraps


async def test_tool_timeout_as_result_is_a_timeout(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.tool_call("slow_lookup", {"order_id": "ord_1"}), reply.text("Try later."))
    await Runner.run(support_agent(aclient, tools=[slow_lookup]), "Look up ord_1")
    (tool,) = telemetry.tools()
    assert tool.attributes[sc.TOOL_ERROR_CLASS] == "timeout"
    assert tool.attributes[sc.ERROR_TYPE] == "agents.exceptions.ToolTimeoutError"


async def test_max_turns_is_a_step_budget_stop(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.default = reply.tool_call("get_order", {"order_id": "ord_555"})
    with pytest.raises(MaxTurnsExceeded):
        await Runner.run(support_agent(aclient), "Loop forever", max_turns=2)
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "step_budget"


async def test_agent_as_tool_is_a_nested_run_under_the_tool(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    specialist = support_agent(aclient)
    specialist.name = "orders"
    triage = Agent(
        name="triage",
        model=OpenAIResponsesModel(model=MODEL, openai_client=aclient),
        tools=[specialist.as_tool(tool_name="ask_orders", tool_description="Ask the orders agent.")],
    )
    llm_server.script(
        reply.tool_call("ask_orders", {"input": "Where is ord_555?"}),  # triage
        reply.tool_call("get_order", {"order_id": "ord_555"}),  # orders
        reply.text("It shipped."),  # orders
        reply.text("Your order shipped."),  # triage
    )
    result = await Runner.run(triage, "Where is my order ord_555?")

    assert result.final_output == "Your order shipped."
    outer = next(s for s in telemetry.runs() if s.name == "invoke_agent triage")
    inner = next(s for s in telemetry.runs() if s.name == "invoke_agent orders")
    ask = next(s for s in telemetry.tools() if s.name == "execute_tool ask_orders")
    lookup = next(s for s in telemetry.tools() if s.name == "execute_tool get_order")
    assert ask.parent.span_id == outer.context.span_id
    assert inner.parent.span_id == ask.context.span_id
    assert lookup.parent.span_id == inner.context.span_id
    assert outer.attributes[sc.RUN_TOOL_CALLS] == 2  # totals include the nested run
    assert inner.attributes[sc.RUN_TOOL_CALLS] == 1


async def test_runner_inside_an_explicit_run_joins_it(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    with agentwatch.run("ticket-42", entities={"customer": "cust_789"}):
        await Runner.run(support_agent(aclient), "Where is ord_555?")
    run_span = assert_tree(telemetry, llm=2, tools=1)
    assert run_span.name == "invoke_agent ticket-42"


async def test_enforced_budget_stops_the_agent_before_the_tool_runs(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    with (
        pytest.raises(agentwatch.BudgetExceeded),
        agentwatch.run("support", budget=agentwatch.Budget(max_steps=1, enforce=True)),
    ):
        await Runner.run(support_agent(aclient), "Where is ord_555?")
    assert ran == []
    assert telemetry.tools() == []
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "step_budget"


async def test_enforced_budget_stops_the_next_model_call(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    with (
        pytest.raises(agentwatch.BudgetExceeded),
        agentwatch.run("support", budget=agentwatch.Budget(max_steps=2, enforce=True)),
    ):
        await Runner.run(support_agent(aclient), "Where is ord_555?")
    assert ran == ["ord_555"] and len(llm_server.requests) == 1
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "step_budget"


@agentwatch.tool("audit.write", side_effect=True)
def write_audit(order_id: str) -> str:
    return f"audited {order_id}"


@function_tool
def audited_lookup(order_id: str) -> str:
    """Look up an order and write an audit record."""
    write_audit(order_id)
    return "ok"


async def test_stop_inside_a_tool_body_ends_the_run_instead_of_reaching_the_model(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.tool_call("audited_lookup", {"order_id": "ord_555"}), reply.text("Done."))
    with (
        pytest.raises(agentwatch.BudgetExceeded),
        agentwatch.run("support", budget=agentwatch.Budget(max_tool_calls=1, enforce=True)),
    ):
        await Runner.run(support_agent(aclient, tools=[audited_lookup]), "Look up ord_555")
    assert len(llm_server.requests) == 1  # the model never saw the stop as a tool error
    (tool,) = telemetry.tools()
    assert tool.name == "execute_tool audited_lookup"
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "tool_budget"


async def test_uninstrument_makes_the_sdk_inert(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    agentwatch.uninstrument()
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Shipped."))
    result = await Runner.run(support_agent(aclient), "Where is ord_555?")
    assert result.final_output == "Shipped." and ran == ["ord_555"]
    assert telemetry.spans() == []


# --------------------------------------------------------------------------- handoffs and MCP servers


async def test_a_handoff_is_a_tool_span_naming_both_agents(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    refunds = Agent(name="refunds", instructions="Handle refunds.",
                    model=OpenAIResponsesModel(model=MODEL, openai_client=aclient))
    triage = Agent(name="triage", instructions="Route the customer.", handoffs=[refunds],
                   model=OpenAIResponsesModel(model=MODEL, openai_client=aclient))
    llm_server.script(reply.tool_call("transfer_to_refunds", {}), reply.text("Refund issued."))
    result = await Runner.run(triage, "I want a refund for ord_555")
    assert result.final_output == "Refund issued."
    assert result.last_agent.name == "refunds"
    run_span = assert_tree(telemetry, llm=2, tools=1)
    (handoff,) = telemetry.tools()
    attrs = handoff.attributes
    assert attrs[sc.GEN_AI_TOOL_NAME] == "transfer_to_refunds"
    assert attrs[sc.HANDOFF_FROM_AGENT] == "triage"
    assert attrs[sc.HANDOFF_TO_AGENT] == "refunds"
    assert attrs[sc.GEN_AI_TOOL_CALL_ID] == llm_server.requests[1].tool_results[0].call_id
    assert handoff.status.status_code is not StatusCode.ERROR
    assert sc.ANOMALY_FLAGS not in attrs  # the model asked for it: nothing invented
    assert run_span.attributes[sc.GEN_AI_AGENT_NAME] == "triage"


async def test_an_mcp_tool_error_through_an_agents_mcp_server_fails_the_tool_span(
    telemetry: Telemetry, llm_server: LLMServer, aclient: openai.AsyncOpenAI
) -> None:
    """The SDK hands the ``isError`` text to the model as the tool's output; the span still fails."""
    mcp_server = pytest.importorskip("mcp.server.mcpserver")
    memory = pytest.importorskip("mcp.client._memory")
    from agents.mcp.server import _MCPServerWithClientSession
    from mcp.server.mcpserver.exceptions import ToolError

    orders = mcp_server.MCPServer("orders")

    @orders.tool()
    def refund(order_id: str) -> str:
        """Refund an order."""
        raise ToolError("Rate limit exceeded for refunds, retry in 30s")

    class InMemoryServer(_MCPServerWithClientSession):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(cache_tools_list=True, client_session_timeout_seconds=5)

        @property
        def name(self) -> str:
            return "orders"

        def create_streams(self) -> Any:
            return memory.InMemoryTransport(orders)

    server = InMemoryServer()
    async with server:
        agent = Agent(name="support", instructions="Help.", mcp_servers=[server],
                      model=OpenAIResponsesModel(model=MODEL, openai_client=aclient))
        llm_server.script(reply.tool_call("refund", {"order_id": "ord_555"}), reply.text("Try later."))
        await Runner.run(agent, "refund ord_555")
    (span,) = telemetry.tools()
    assert span.attributes[sc.GEN_AI_TOOL_NAME] == "refund"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.ERROR_TYPE] == "tool_error"
    assert span.attributes[sc.TOOL_ERROR_CLASS] == "rate_limit"
    assert span.attributes[sc.MCP_METHOD_NAME] == "tools/call"
    assert span.attributes[sc.GEN_AI_TOOL_TYPE] == "extension"
