"""The real ``mcp`` client against a real in-process MCP server (``MCPServer``, formerly FastMCP)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

pytest.importorskip("mcp.server.mcpserver")  # the tests use the mcp 2.x server and client APIs

from mcp import Client, ClientSession
from mcp.client._memory import InMemoryTransport
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

import agentwatch
from agentwatch import semconv as sc
from agentwatch.hashing import args_hash
from agentwatch.instrumentation import mcp as mcp_patch
from tests.telemetry import Telemetry


class Customer(BaseModel):
    customer_id: str
    tier: str


def make_server() -> tuple[MCPServer, list[str]]:
    """A server with a plain tool, a structured one and failing ones; records which tools ran."""
    server = MCPServer("orders")
    ran: list[str] = []

    @server.tool()
    def get_order(order_id: str) -> dict[str, str]:
        """Look up an order."""
        ran.append("get_order")
        return {"order_id": order_id, "customer": "cust_789"}

    @server.tool()
    def get_customer(customer_id: str) -> Customer:
        """Look up a customer."""
        ran.append("get_customer")
        return Customer(customer_id=customer_id, tier="gold")

    @server.tool()
    def refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append("refund")
        raise ToolError("Rate limit exceeded for refunds, retry in 30s")

    @server.tool()
    def broken(order_id: str) -> str:
        """Always fails."""
        ran.append("broken")
        raise RuntimeError("disk on fire")

    @server.tool()
    async def slow(order_id: str) -> str:
        """Answers too late."""
        await asyncio.sleep(2)
        return "late"

    return server, ran


def only(spans: list[Any]) -> Any:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


async def test_call_tool_is_a_tool_span_under_the_run(telemetry: Telemetry) -> None:
    server, ran = make_server()
    async with Client(server) as client:
        with agentwatch.run("support", entities={"customer": "cust_789"}) as run:
            await client.list_tools()
            result = await client.call_tool("get_order", {"order_id": "ord_555"})

    assert result.is_error is False and ran == ["get_order"]
    span = only(telemetry.tools())
    (run_span,) = telemetry.runs()
    attrs = span.attributes
    assert span.name == "execute_tool get_order"
    assert span.parent.span_id == run_span.context.span_id
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert attrs[sc.GEN_AI_TOOL_NAME] == "get_order"
    assert attrs[sc.GEN_AI_TOOL_TYPE] == "extension"
    assert attrs[sc.TOOL_SERVER] == "orders"
    assert attrs[sc.MCP_METHOD_NAME] == "tools/call"  # MCP conventions
    assert sc.MCP_SESSION_ID not in attrs  # in-memory transport: no session id to report
    assert attrs[sc.GEN_AI_TOOL_DESCRIPTION] == "Look up an order."
    assert attrs[sc.TOOL_ARGS_HASH] == args_hash({"order_id": "ord_555"})
    assert attrs[sc.RUN_ID] == run.run_id
    assert attrs[sc.STEP] == 1
    assert "order:ord_555" in attrs[sc.TOOL_ARG_ENTITIES]
    # the text content is JSON: its value is the result (hash ignores the server's indentation)
    assert attrs[sc.TOOL_RESULT_HASH] == args_hash({"order_id": "ord_555", "customer": "cust_789"})
    assert "customer:cust_789" in attrs[sc.TOOL_RESULT_ENTITIES]
    assert span.status.status_code is StatusCode.UNSET
    assert run_span.attributes[sc.RUN_TOOL_CALLS] == 1


async def test_structured_content_is_the_result(telemetry: Telemetry) -> None:
    server, _ = make_server()
    async with Client(server) as client:
        result = await client.call_tool("get_customer", {"customer_id": "cust_789"})
    assert result.structured_content == {"customer_id": "cust_789", "tier": "gold"}
    span = only(telemetry.tools())
    assert span.attributes[sc.TOOL_RESULT_HASH] == args_hash({"customer_id": "cust_789", "tier": "gold"})


async def test_is_error_result_is_a_failed_span_and_returned_unchanged(telemetry: Telemetry) -> None:
    server, ran = make_server()
    async with Client(server) as client:
        limited = await client.call_tool("refund", {"order_id": "ord_555", "amount": 10})
        failed = await client.call_tool("broken", {"order_id": "ord_555"})

    assert ran == ["refund", "broken"]
    assert limited.is_error is True
    assert limited.content[0].text == (
        "Error executing tool refund: Rate limit exceeded for refunds, retry in 30s"
    )
    assert failed.is_error is True
    refund, broken = telemetry.tools()
    assert refund.status.status_code is StatusCode.ERROR
    assert refund.attributes[sc.TOOL_ERROR_CLASS] == "rate_limit"
    assert refund.attributes[sc.ERROR_TYPE] == "tool_error"  # OTel MCP conventions
    assert "Rate limit exceeded" in refund.status.description
    assert broken.status.status_code is StatusCode.ERROR
    assert broken.attributes[sc.TOOL_ERROR_CLASS] == "error"
    assert broken.attributes[sc.ERROR_TYPE] == "tool_error"
    assert sc.TOOL_RESULT_HASH not in broken.attributes


async def test_raw_session_over_memory_streams_gets_server_name_from_initialize(telemetry: Telemetry) -> None:
    server, _ = make_server()
    async with InMemoryTransport(server) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        await session.call_tool("get_order", {"order_id": "ord_1"})
        await session.call_tool("nope", {"x": 1})

    ok, unknown = telemetry.tools()
    assert ok.attributes[sc.TOOL_SERVER] == "orders"
    assert ok.status.status_code is StatusCode.UNSET
    assert unknown.name == "execute_tool nope"
    assert unknown.attributes[sc.TOOL_ERROR_CLASS] == "error"
    assert unknown.status.status_code is StatusCode.ERROR


async def test_listed_input_schema_is_checked(telemetry: Telemetry) -> None:
    server, _ = make_server()
    async with Client(server) as client:
        await client.call_tool("get_order", {"order_id": 555})  # not listed yet: nothing to check against
        await client.list_tools()
        await client.call_tool("get_order", {"order_id": 556})

    unchecked, checked = telemetry.tools()
    assert sc.ANOMALY_FLAGS not in unchecked.attributes
    assert "TOOL_ARG_MISMATCH" in checked.attributes[sc.ANOMALY_FLAGS]


async def test_protocol_error_propagates_unchanged(telemetry: Telemetry) -> None:
    server, _ = make_server()
    async with (
        InMemoryTransport(server) as (read, write),
        ClientSession(read, write, read_timeout_seconds=0.1) as session,
    ):
        await session.initialize()
        with pytest.raises(MCPError) as caught:
            await session.call_tool("slow", {"order_id": "ord_1"})

    span = only(telemetry.tools())
    assert span.status.status_code is StatusCode.ERROR
    cls = type(caught.value)
    assert span.attributes[sc.ERROR_TYPE] == f"{cls.__module__}.{cls.__qualname__}"
    assert span.events[0].name == "exception"


async def test_enforced_budget_stops_the_call_before_it_is_sent(telemetry: Telemetry) -> None:
    server, ran = make_server()
    async with Client(server) as client:
        budget = agentwatch.Budget(max_tool_calls=1, enforce=True)
        with pytest.raises(agentwatch.BudgetExceeded), agentwatch.run("support", budget=budget):
            await client.call_tool("get_order", {"order_id": "ord_1"})
            await client.call_tool("get_order", {"order_id": "ord_2"})
    assert ran == ["get_order"]
    assert len(telemetry.tools()) == 1
    (run_span,) = telemetry.runs()
    assert run_span.attributes[sc.RUN_STOP_REASON] == "tool_budget"


async def test_framework_tool_forwarding_to_mcp_is_one_span(telemetry: Telemetry) -> None:
    server, ran = make_server()
    async with Client(server) as client:

        @agentwatch.tool("get_order")
        async def get_order(order_id: str) -> Any:
            return await client.call_tool("get_order", {"order_id": order_id})

        with agentwatch.run("support"):
            await get_order("ord_9")

    assert ran == ["get_order"]
    span = only(telemetry.tools())
    assert span.attributes[sc.TOOL_SERVER] == "orders"
    assert span.attributes[sc.GEN_AI_TOOL_TYPE] == "extension"


async def test_a_different_tool_inside_a_tool_is_its_own_span(telemetry: Telemetry) -> None:
    server, _ = make_server()
    async with Client(server) as client:

        @agentwatch.tool("lookup")
        async def lookup(order_id: str) -> Any:
            return await client.call_tool("get_order", {"order_id": order_id})

        await lookup("ord_9")

    inner, outer = telemetry.tools()
    assert (outer.name, inner.name) == ("execute_tool lookup", "execute_tool get_order")
    assert inner.parent.span_id == outer.context.span_id


async def test_uninstrument_makes_the_client_inert(telemetry: Telemetry) -> None:
    server, ran = make_server()
    agentwatch.uninstrument()
    async with Client(server) as client:
        result = await client.call_tool("get_order", {"order_id": "ord_1"})
    assert result.is_error is False and ran == ["get_order"]
    assert telemetry.spans() == []


def test_tool_memory_is_bounded_per_session() -> None:
    info = mcp_patch._SessionInfo()
    for i in range(mcp_patch.MAX_TOOLS_PER_SESSION + 10):
        info.remember(f"t{i}", {"type": "object"}, None)
    assert len(info.tools) == mcp_patch.MAX_TOOLS_PER_SESSION
    assert "t0" not in info.tools and f"t{mcp_patch.MAX_TOOLS_PER_SESSION + 9}" in info.tools


@pytest.mark.parametrize(
    ("text", "error_class"),
    [
        ("Request timed out after 30s", "timeout"),
        ("upstream deadline exceeded", "timeout"),
        ("429 Too Many Requests", "rate_limit"),
        ("401 Unauthorized: invalid api key", "auth"),
        ("Permission denied for /etc", "auth"),
        ("Order ord_401 not found", "error"),
    ],
)
def test_error_text_gives_the_error_class(text: str, error_class: str) -> None:
    assert mcp_patch.tool_failure(text)[1].value == error_class
