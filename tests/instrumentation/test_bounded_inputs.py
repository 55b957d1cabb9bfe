"""Nothing a model or a tool schema sends can hang the user's call or lose its tokens.

The real ``openai`` client against the scripted server: a tool offered with a
pattern that backtracks catastrophically in Python's ``re``, a model that asks
for it with a matching evil argument, tool-call arguments nested 1,000 and
100,000 levels deep under an enforced token budget.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any

import openai
import pytest
from pydantic import Field

import agentwatch
from agentwatch import semconv as sc
from agentwatch.testing import reply
from tests.telemetry import Telemetry

MODEL = "gpt-4o-mini"
MSGS = [{"role": "user", "content": "look it up"}]
EVIL = "^(a+)+$"
EVIL_ARG = "a" * 64 + "!"  # 2**64 paths for a backtracking engine
SCHEMA = {"type": "object", "properties": {"q": {"type": "string", "pattern": EVIL}}, "required": ["q"]}
USAGE = {"input_tokens": 100, "output_tokens": 20}


def _offered() -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "lookup", "parameters": SCHEMA}}]


def test_backtracking_pattern_offered_to_the_model_does_not_hang_the_tool_call(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.tool_call("lookup", {"q": EVIL_ARG}, usage=USAGE))

    @agentwatch.tool("lookup")
    def lookup(q: str) -> str:
        return "found"

    with agentwatch.run("agent"):
        started = time.monotonic()
        response = openai_client.chat.completions.create(model=MODEL, messages=MSGS, tools=_offered())
        call = response.choices[0].message.tool_calls[0]
        assert lookup(q=EVIL_ARG) == "found"
        assert time.monotonic() - started < 1.0
    assert call.function.name == "lookup"
    (span,) = telemetry.tools()
    assert span.attributes[sc.ANOMALY_FLAGS] == ("TOOL_ARG_MISMATCH",)  # checked, on RE2, not skipped


def test_backtracking_pattern_in_a_tool_schema_does_not_hang_the_call(telemetry: Telemetry) -> None:
    @agentwatch.tool("lookup", schema=SCHEMA)
    def lookup(q: str) -> str:
        return "found"

    started = time.monotonic()
    assert lookup(q=EVIL_ARG) == "found"
    assert lookup(q="aaaa") == "found"
    assert time.monotonic() - started < 1.0
    bad, good = sorted(telemetry.tools(), key=lambda s: s.start_time)
    assert bad.attributes[sc.ANOMALY_FLAGS] == ("TOOL_ARG_MISMATCH",)
    assert sc.ANOMALY_FLAGS not in good.attributes


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_arguments_still_count_tokens_against_an_enforced_budget(
    depth: int, telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    arguments = '{"q":' * depth + '"x"' + "}" * depth
    llm_server.script(reply.tool_call("lookup", arguments, usage=USAGE), reply.text("never sent"))
    with pytest.raises(agentwatch.BudgetExceeded) as caught:  # noqa: SIM117
        with agentwatch.run("agent", budget=agentwatch.Budget(max_tokens=100, enforce=True)):
            first = openai_client.chat.completions.create(model=MODEL, messages=MSGS, tools=_offered())
            assert first.choices[0].message.tool_calls[0].function.arguments == arguments
            openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    assert caught.value.stop_reason == agentwatch.StopReason.TOKEN_BUDGET
    assert len(llm_server.requests) == 1
    (llm,) = telemetry.llm()
    assert llm.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100
    raw_hash = hashlib.sha256(arguments.encode()).hexdigest()[:16]  # over the depth limit: the raw text's
    assert llm.attributes[sc.LLM_TOOL_CALLS] == (f"lookup:{raw_hash}",)
    (run,) = telemetry.runs()
    assert run.attributes[sc.RUN_INPUT_TOKENS] == 100
    assert run.attributes[sc.RUN_OUTPUT_TOKENS] == 20


def test_deeply_nested_tool_arguments_from_python_are_recorded(telemetry: Telemetry) -> None:
    @agentwatch.tool("walk")
    def walk(tree: Any) -> str:
        return "ok"

    tree: Any = []
    for _ in range(100_000):
        tree = [tree]
    with agentwatch.run("agent"):
        assert walk(tree=tree) == "ok"
        assert walk(tree=tree) == "ok"
    first, second = sorted(telemetry.tools(), key=lambda s: s.start_time)
    assert first.attributes[sc.TOOL_ARGS_HASH] == second.attributes[sc.TOOL_ARGS_HASH]


# --------------------------------------------------------------------------- MCP: an untrusted server


async def test_mcp_server_schema_with_a_backtracking_pattern_and_deep_results(telemetry: Telemetry) -> None:
    pytest.importorskip("mcp.server.mcpserver")
    from mcp import Client
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("hostile")
    deep = "[" * 100_000 + "]" * 100_000

    @server.tool()
    def lookup(q: Annotated[str, Field(pattern=EVIL)]) -> str:  # the listed inputSchema carries the pattern
        """Look something up."""
        return deep

    async with Client(server) as client:
        listed = await client.list_tools()
        assert listed.tools[0].input_schema["properties"]["q"]["pattern"] == EVIL
        started = time.monotonic()
        await client.call_tool("lookup", {"q": EVIL_ARG})  # the server's own check is pydantic's (Rust, linear)
        result = await client.call_tool("lookup", {"q": "aaaa"})
        assert time.monotonic() - started < 1.0
    assert result.content[0].text == deep
    rejected, answered = sorted(telemetry.tools(), key=lambda s: s.start_time)
    assert "TOOL_ARG_MISMATCH" in rejected.attributes[sc.ANOMALY_FLAGS]
    assert sc.ANOMALY_FLAGS not in answered.attributes
    # too deep to parse: kept as text, fingerprinted like any other result
    assert len(answered.attributes[sc.TOOL_RESULT_HASH]) == 16
