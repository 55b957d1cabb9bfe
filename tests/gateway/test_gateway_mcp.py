"""The tool gateway on a real MCP server (``mcp`` package, in-memory transport): failing, hanging,
invalid and ticket-creating tools, through the real ``mcp.Client``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

pytest.importorskip("mcp.server.mcpserver")

from mcp import Client
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

import agentwatch
from agentwatch import semconv as sc
from agentwatch.instrumentation.mcp_gateway import status_in_text


class TicketStore:
    def __init__(self) -> None:
        self.tickets: list[str] = []
        self.by_key: dict[str, int] = {}


def ticket_server(store: TicketStore, fail_first: int = 0) -> MCPServer:
    server = MCPServer("helpdesk")
    calls = {"n": 0, "flaky": 0}

    @server.tool()
    def create_ticket(title: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Create a ticket (the backend creates it, then may lose the response)."""
        calls["n"] += 1
        if idempotency_key is not None and idempotency_key in store.by_key:
            number = store.by_key[idempotency_key]
        else:
            store.tickets.append(title)
            number = len(store.tickets)
            if idempotency_key is not None:
                store.by_key[idempotency_key] = number
        if calls["n"] <= fail_first:
            raise ToolError("upstream answered HTTP 502 Bad Gateway")
        return {"ticket": number}

    @server.tool()
    def rate_limited(q: str) -> str:
        """Always throttled."""
        raise ToolError("429 Too Many Requests")

    @server.tool()
    def flaky_search(q: str) -> str:
        """Fails twice with 503, then answers."""
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise ToolError("status: 503 service unavailable")
        return "hits"

    @server.tool()
    async def hang(q: str) -> str:
        """Never answers in time."""
        await asyncio.sleep(5)
        return "late"

    @server.tool(structured_output=True)
    def order_status(order_id: str) -> dict[str, str]:
        """Returns the wrong shape."""
        return {"state": "shipped"}

    return server



async def test_seed_004_incident_over_mcp_creates_one_ticket(instrument: Any) -> None:
    tel = instrument({
        "tools": {
            "idempotency_required": ["create_ticket"],
            "retries": {"max_attempts": 3, "retryable_status": [502, 503], "backoff_ms": [1]},
        }
    })
    store = TicketStore()
    async with Client(ticket_server(store, fail_first=2)) as client:
        await client.list_tools()
        with agentwatch.run("support"):
            result = await client.call_tool("create_ticket", {"title": "printer on fire"})
            again = await client.call_tool("create_ticket", {"title": "printer on fire"})
    assert store.tickets == ["printer on fire"]
    assert result.is_error is False and again.is_error is False
    spans = tel.tools()
    assert [s.attributes.get(sc.TOOL_ATTEMPT) for s in spans[:3]] == [1, 2, 3]
    assert spans[0].status.status_code is StatusCode.ERROR
    assert spans[2].status.status_code is not StatusCode.ERROR
    assert spans[3].attributes[sc.TOOL_DEDUPLICATED] is True
    assert all(s.attributes[sc.GEN_AI_TOOL_TYPE] == "extension" for s in spans)


async def test_seed_004_incident_over_mcp_without_the_gateway(instrument: Any) -> None:
    tel = instrument({"tools": {"side_effects": ["create_ticket"]}})
    store = TicketStore()
    async with Client(ticket_server(store, fail_first=2)) as client:
        with agentwatch.run("support"):
            for _ in range(3):  # the agent retries by itself
                result = await client.call_tool("create_ticket", {"title": "printer on fire"})
                if not result.is_error:
                    break
    assert len(store.tickets) == 3
    flagged = [s for s in tel.tools() if "DUPLICATE_SIDE_EFFECT" in s.attributes.get(sc.ANOMALY_FLAGS, ())]
    assert flagged


async def test_retry_an_mcp_503_then_succeed(instrument: Any) -> None:
    tel = instrument({"tools": {"retries": {"max_attempts": 3, "retryable_status": [503], "backoff_ms": [1]}}})
    async with Client(ticket_server(TicketStore())) as client:
        result = await client.call_tool("flaky_search", {"q": "x"})
    assert result.is_error is False
    assert len(tel.tools()) == 3


async def test_a_429_not_in_the_list_is_returned_after_one_attempt(instrument: Any) -> None:
    tel = instrument({"tools": {"retries": {"max_attempts": 3, "retryable_status": [503], "backoff_ms": [1]}}})
    async with Client(ticket_server(TicketStore())) as client:
        result = await client.call_tool("rate_limited", {"q": "x"})
    assert result.is_error is True  # the caller sees the server's result unchanged
    (span,) = tel.tools()
    assert span.attributes[sc.TOOL_ERROR_CLASS] == "rate_limit"


async def test_mcp_timeout(instrument: Any) -> None:
    tel = instrument({"tools": {"timeouts_s": {"hang": 0.1}}})
    async with Client(ticket_server(TicketStore())) as client:
        with pytest.raises(TimeoutError):
            await client.call_tool("hang", {"q": "x"})
    (span,) = tel.tools()
    assert span.attributes[sc.TOOL_ERROR_CLASS] == "timeout"


async def test_mcp_output_schema_fail_closed(instrument: Any) -> None:
    tel = instrument({"validation": {"output": {"fail_closed": True}}})
    server = ticket_server(TicketStore())
    async with Client(server) as client:
        listed = await client.list_tools()
        assert next(t for t in listed.tools if t.name == "order_status").output_schema is not None
        # The server's declared outputSchema is what it returns; tighten the client's view of it
        # the way a schema change upstream would break it: require a field the server no longer sends.
        from agentwatch.instrumentation import mcp as mcp_patch

        session = mcp_patch._client_session(client)  # the session behind the client
        mcp_patch._SESSIONS[session].outputs["order_status"] = {
            "type": "object", "required": ["status"], "properties": {"status": {"type": "string"}},
        }
        with pytest.raises(agentwatch.ToolOutputInvalid):
            await client.call_tool("order_status", {"order_id": "ord_1"})
    (span,) = tel.tools()
    assert "TOOL_OUTPUT_INVALID" in span.attributes[sc.ANOMALY_FLAGS]


async def test_mcp_circuit_breaker(instrument: Any) -> None:
    tel = instrument({"tools": {"circuit_breakers": {"enabled": True, "failure_threshold": 2, "window_seconds": 60}}})
    async with Client(ticket_server(TicketStore())) as client:
        for _ in range(2):
            assert (await client.call_tool("rate_limited", {"q": "x"})).is_error
        with pytest.raises(agentwatch.CircuitOpen):
            await client.call_tool("rate_limited", {"q": "x"})
    assert "CIRCUIT_OPEN" in tel.tools()[-1].attributes[sc.ANOMALY_FLAGS]


async def test_mcp_safe_mode(instrument: Any) -> None:
    instrument({"safe_mode": {"enabled": True, "allowed_tools": ["flaky_search"]}})
    store = TicketStore()
    async with Client(ticket_server(store)) as client:
        with pytest.raises(agentwatch.ToolDenied):
            await client.call_tool("create_ticket", {"title": "x"})
    assert store.tickets == []


@pytest.mark.parametrize(
    ("text", "status"),
    [("upstream answered HTTP 502 Bad Gateway", 502), ("status: 503 service unavailable", 503),
     ("429 Too Many Requests", 429), ("status_code=504", 504), ("order 503 not found", None),
     ("HTTP/1.1 500", 500), ("no status here", None)],
)
def test_status_in_error_text(text: str, status: int | None) -> None:
    assert status_in_text(text) == status
