"""Replay: the fixture, ``agentwatch.replay()`` through the unchanged agents (offline, identical flags),
divergence, recorded errors, and the regression test ``replay test`` writes (fails buggy, passes fixed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider

import agentwatch
from agentwatch.cli import main
from agentwatch.otlp_files import read_spans

from .conftest import EXAMPLES, walkthrough

DEAD_URL = "http://127.0.0.1:9/v1"  # nothing listens: a call that escaped the replay would fail


@pytest.fixture
def instrumented() -> Iterator[None]:
    agentwatch.instrument(tracer_provider=TracerProvider(), config={"agent": {"anomaly": {"log_findings": False}}})
    yield
    agentwatch.uninstrument()


def _export(source: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    assert main(["replay", "export", str(source), "-o", str(out), *extra]) == 0, capsys.readouterr().err
    capsys.readouterr()
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _live_flags(path: Path, run_span: str) -> set[str]:
    """Flags the live run put on its spans (the recording's own verdict)."""
    spans = list(read_spans(path))
    by_id = {s.span_hex: s for s in spans}

    def in_run(span: Any) -> bool:
        while span is not None:
            if span.span_hex == run_span:
                return True
            span = by_id.get(span.parent_hex or "")
        return False

    flags: set[str] = set()
    for span in spans:
        if in_run(span):
            flags.update(span.attributes.get("agentwatch.anomaly.flags") or ())
            flags.update(span.attributes.get("agentwatch.run.anomaly.flags") or ())
    return flags


def test_export_refuses_a_run_recorded_without_content(
    no_content_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "export", str(no_content_file), "-o", str(tmp_path / "f.json")]) == 2
    err = capsys.readouterr().err
    assert "recorded without the content replay needs" in err and "gen_ai.output.messages" in err
    assert "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true" in err and "Traceback" not in err
    assert not (tmp_path / "f.json").exists()


def test_fixture_holds_responses_in_order_and_tool_results_keyed(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture = _export(incident_file, tmp_path / "f.json", capsys)
    assert fixture["input"] == "Please confirm my latest order."
    assert [r["step"] for r in fixture["llm"]] == [1, 3, 5, 7]
    assert [c["name"] for r in fixture["llm"] for c in r["tool_calls"]] == [
        "crm.get_customer", "orders.get", "orders.confirm",
    ]  # fmt: skip
    assert fixture["llm"][-1]["text"] == "Confirmed: order ord_555 for Alice Chen."
    assert [(t["tool"], t["index"]) for t in fixture["tools"]] == [
        ("crm.get_customer", 0), ("orders.get", 0), ("orders.confirm", 0),
    ]  # fmt: skip
    assert all(len(t["args_hash"]) == 16 and "result" in t for t in fixture["tools"])
    assert fixture["severe_flags"] == ["ENTITY_HALLUCINATION", "ENTITY_MISMATCH"]


def test_replay_through_the_unchanged_agent_is_offline_with_identical_flags(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], instrumented: None
) -> None:
    fixture_path = tmp_path / "f.json"
    fixture = _export(incident_file, fixture_path, capsys)
    iw = walkthrough()
    iw.CONFIRMATIONS.clear()
    with agentwatch.replay(fixture_path) as replayed:
        answer = iw.support_agent(fixture["input"])  # its client points at DEAD_URL
    assert answer == "Confirmed: order ord_555 for Alice Chen."
    assert iw.CONFIRMATIONS == []  # the write did not run again
    assert replayed.calls == 7
    assert set(replayed.flags) == _live_flags(incident_file, fixture["run"]["span_id"])
    assert replayed.summary is not None and str(replayed.summary.failure_mode) == "bad_decision"


async def test_async_replay_with_async_client_and_tools(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], instrumented: None
) -> None:
    fixture_path = tmp_path / "f.json"
    fixture = _export(incident_file, fixture_path, capsys)
    ran: list[str] = []

    def make(name: str) -> Any:
        @agentwatch.tool(name)
        async def run_tool(**kwargs: Any) -> Any:
            ran.append(name)
            return {}

        return run_tool

    tools = {n: make(n) for n in ("crm.get_customer", "orders.get", "orders.confirm")}
    client = openai.AsyncOpenAI(base_url=DEAD_URL, api_key="x", max_retries=0, timeout=5)
    messages: list[dict[str, Any]] = [{"role": "user", "content": fixture["input"]}]
    async with (
        agentwatch.replay(fixture_path) as replayed,
        agentwatch.run("support-agent", entities={"customer": "cust_789"}),
    ):
        while True:
            response = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
            message = response.choices[0].message
            if not message.tool_calls:
                break
            messages.append(message.model_dump(exclude_none=True))
            for call in message.tool_calls:
                result = await tools[call.function.name](**json.loads(call.function.arguments))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    await client.close()
    assert ran == [] and replayed.calls == 7
    assert message.content == "Confirmed: order ord_555 for Alice Chen."
    assert {"ENTITY_HALLUCINATION", "ENTITY_MISMATCH"} <= set(replayed.flags)


def test_a_call_the_recording_lacks_raises_replay_divergence(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], instrumented: None
) -> None:
    fixture_path = tmp_path / "f.json"
    _export(incident_file, fixture_path, capsys)
    iw = walkthrough()
    with agentwatch.replay(fixture_path), pytest.raises(agentwatch.ReplayDivergence) as info:
        iw.demo_agent.get_order("ord_999")  # strict: orders.get was recorded with ord_555
    assert info.value.step == 1 and "ord_555" in info.value.expected and "ord_999" in info.value.got
    with agentwatch.replay(fixture_path), pytest.raises(agentwatch.ReplayDivergence, match=r"call 1 of search\.read"):
        iw.demo_agent.search("anything")
    with agentwatch.replay(fixture_path, strict=False):
        assert iw.demo_agent.get_order("ord_999")["customer_id"] == "cust_012"  # not strict: the recorded answer
    with agentwatch.replay(fixture_path) as replayed, pytest.raises(agentwatch.ReplayDivergence) as info:
        for _ in range(2):
            iw.support_agent("Please confirm my latest order.")
    assert info.value.step == 8 and "4 LLM call(s)" in str(info.value)
    assert replayed.calls == 7


def _demo_entries(demo: Any) -> dict[str, Any]:
    """Each demo run as scenarios() starts it, around the unchanged demo agent."""

    def support(question: str) -> Any:
        def go(client: Any) -> None:
            with agentwatch.run("support-agent", entities={"customer": "cust_789"}):
                demo.agent(client, question)

        return go

    def research(client: Any) -> None:
        budget = agentwatch.Budget(max_steps=25, max_seconds=90, max_usd=1.0, enforce=True)
        try:
            with agentwatch.run("research-agent", budget=budget):
                demo.agent(client, "Research how agents detect loops.", max_turns=50)
        except agentwatch.StopRun:
            pass

    def triage(client: Any) -> None:
        with agentwatch.run("triage-agent"):
            demo.agent(client, "Users can't log in. Create a Jira ticket and reply with the URL.")

    return {"Where is my order?": support("Where is my order?"),
            "Please confirm my latest order.": support("Please confirm my latest order."),
            "Research how agents detect loops.": research,
            "Users can't log in. Create a Jira ticket and reply with the URL.": triage}  # fmt: skip


def test_every_demo_run_replays_with_identical_flags(
    demo_runs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], instrumented: None
) -> None:
    assert main(["forensics", str(demo_runs_file), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    demo = walkthrough().demo_agent
    entries = _demo_entries(demo)
    assert len(runs) == 4
    for run in runs:
        fixture_path = tmp_path / f"{run['run']['span_id']}.json"
        fixture = _export(demo_runs_file, fixture_path, capsys, "--run", run["run"]["span_id"])
        demo._ticket_attempts["n"] = 0
        client = openai.OpenAI(base_url=DEAD_URL, api_key="x", max_retries=0, timeout=5)
        with agentwatch.replay(fixture_path) as replayed:
            entries[fixture["input"]](client)
        client.close()
        assert demo._ticket_attempts["n"] == 0  # the ticket API was never called
        expected = _live_flags(demo_runs_file, run["run"]["span_id"])
        assert set(replayed.flags) == expected, (run["run"]["name"], replayed.flags, expected)
        assert replayed.calls == len(fixture["llm"]) + len(fixture["tools"])


def test_replay_test_fails_on_the_buggy_agent_and_passes_after_the_fix(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {}
    for entry in ("incident_walkthrough:support_agent", "incident_walkthrough:support_agent_fixed"):
        test_file = tmp_path / entry.split(":")[1] / "test_incident.py"
        test_file.parent.mkdir()
        assert main(["replay", "test", str(incident_file), "--entry", entry, "-o", str(test_file)]) == 0
        capsys.readouterr()
        assert test_file.with_suffix(".replay.json").exists()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXAMPLES), os.environ.get("PYTHONPATH", "")])}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", str(test_file)],
            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path, check=False,
        )  # fmt: skip
        results[entry] = done
    buggy = results["incident_walkthrough:support_agent"]
    assert buggy.returncode == 1, buggy.stdout[-3000:]
    assert "the incident's flags still fire" in buggy.stdout and "ENTITY_MISMATCH" in buggy.stdout
    fixed = results["incident_walkthrough:support_agent_fixed"]
    assert fixed.returncode == 0, fixed.stdout[-3000:]


def test_replay_refuses_to_run_uninstrumented_or_twice(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixture_path = tmp_path / "f.json"
    _export(incident_file, fixture_path, capsys)
    agentwatch.uninstrument()
    with pytest.raises(RuntimeError, match="instrument"), agentwatch.replay(fixture_path):
        pass
    agentwatch.instrument(tracer_provider=TracerProvider())
    try:
        with (
            agentwatch.replay(fixture_path),
            pytest.raises(RuntimeError, match="already active"),
            agentwatch.replay(fixture_path),
        ):
            pass
    finally:
        agentwatch.uninstrument()
    with pytest.raises(ValueError, match="not a replay fixture"):
        agentwatch.replay(incident_file)  # a trace, not a fixture
    with pytest.raises(ValueError, match="no such replay fixture"):
        agentwatch.replay(tmp_path / "missing.json")


def test_replay_test_needs_module_and_function(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "test", str(incident_file), "--entry", "nofunction", "-o", str(tmp_path / "t.py")]) == 2
    assert "MODULE:FUNCTION" in capsys.readouterr().err


def test_anthropic_client_replays_offline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Anthropic SDK's requests pass the same choke point: record a run, then replay it offline."""
    import anthropic

    from agentwatch.testing import LLMServer, reply

    iw = walkthrough()
    ran: list[str] = []

    @agentwatch.tool("kb.read")
    def kb_read(topic: str) -> dict[str, Any]:
        ran.append(topic)
        return {"topic": topic, "text": "Refunds take 5 days."}

    def agent(client: Any) -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "How long do refunds take?"}]
        with agentwatch.run("kb-agent"):
            while True:
                response = client.messages.create(model="claude-3-5-haiku-latest", max_tokens=100, messages=messages)
                uses = [b for b in response.content if b.type == "tool_use"]
                if not uses:
                    return "".join(b.text for b in response.content if b.type == "text")
                messages.append({"role": "assistant", "content": [b.model_dump() for b in response.content]})
                results = [{"type": "tool_result", "tool_use_id": u.id, "content": json.dumps(kb_read(**u.input))}
                           for u in uses]  # fmt: skip
                messages.append({"role": "user", "content": results})

    trace = tmp_path / "kb.jsonl"
    saved = os.environ.get(iw.CAPTURE)
    os.environ[iw.CAPTURE] = "true"
    provider = TracerProvider()
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider.add_span_processor(SimpleSpanProcessor(iw.JsonLinesExporter(trace)))
    agentwatch.instrument(tracer_provider=provider)
    try:
        with LLMServer() as server:
            server.script(reply.tool_call("kb.read", {"topic": "refunds"}), reply.text("About 5 days."))
            live = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="x", max_retries=0)
            assert agent(live) == "About 5 days."
        provider.force_flush()
        fixture_path = tmp_path / "kb.replay.json"
        _export(trace, fixture_path, capsys)
        ran.clear()
        dead = anthropic.Anthropic(base_url="http://127.0.0.1:9", api_key="x", max_retries=0, timeout=5)
        with agentwatch.replay(fixture_path) as replayed:
            assert agent(dead) == "About 5 days."
        assert ran == [] and replayed.calls == 3
    finally:
        agentwatch.uninstrument()
        provider.shutdown()
        if saved is None:
            os.environ.pop(iw.CAPTURE, None)
        else:
            os.environ[iw.CAPTURE] = saved


def test_mcp_tool_calls_replay_from_the_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent whose tools are on a real MCP server: replayed, the server's tools do not run."""
    pytest.importorskip("mcp.server.mcpserver")
    import asyncio

    from mcp import Client
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from agentwatch.testing import LLMServer, reply

    ran: list[str] = []

    def server() -> MCPServer:
        mcp_server = MCPServer("orders")

        @mcp_server.tool()
        def get_order(order_id: str) -> dict[str, str]:
            """Look up an order."""
            ran.append("get_order")
            return {"order_id": order_id, "status": "shipped"}

        @mcp_server.tool()
        def refund(order_id: str) -> str:
            """Refund an order."""
            ran.append("refund")
            raise ToolError("refund service unavailable")

        return mcp_server

    async def agent(client: openai.AsyncOpenAI, question: str) -> list[Any]:
        results = []
        async with Client(server()) as session, agentwatch.run("mcp-agent"):
            messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
            for _ in range(3):
                out = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
                message = out.choices[0].message
                if not message.tool_calls:
                    break
                messages.append(message.model_dump(exclude_none=True))
                for call in message.tool_calls:
                    result = await session.call_tool(call.function.name, json.loads(call.function.arguments))
                    results.append((result.is_error, result.content[0].text))
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content[0].text})
        return results

    # Record, with content capture, to a JSON Lines file.
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    recording = tmp_path / "mcp.jsonl"
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(walkthrough().JsonLinesExporter(recording)))
    agentwatch.instrument(tracer_provider=provider, config={"agent": {"anomaly": {"log_findings": False}}})
    try:
        with LLMServer() as llm:
            llm.script(
                reply.tool_call("get_order", {"order_id": "ord_1"}),
                reply.tool_call("refund", {"order_id": "ord_1"}),
                reply.text("Sorry, the refund failed."),
            )
            live_client = openai.AsyncOpenAI(base_url=llm.openai_base_url, api_key="x", max_retries=0, timeout=5)
            live = asyncio.run(agent(live_client, "Refund ord_1"))
    finally:
        agentwatch.uninstrument()
        provider.shutdown()
    assert ran == ["get_order", "refund"]
    fixture_path = tmp_path / "mcp-fixture.json"
    _export(recording, fixture_path, capsys)

    # Replay: offline, the MCP server's tools never run, the results are the recorded ones.
    ran.clear()
    agentwatch.instrument(tracer_provider=TracerProvider(), config={"agent": {"anomaly": {"log_findings": False}}})
    try:
        dead = openai.AsyncOpenAI(base_url=DEAD_URL, api_key="x", max_retries=0, timeout=5)
        with agentwatch.replay(fixture_path) as replayed:
            again = asyncio.run(agent(dead, "Refund ord_1"))
    finally:
        agentwatch.uninstrument()
    assert ran == []
    assert [is_error for is_error, _ in again] == [is_error for is_error, _ in live] == [False, True]
    assert json.loads(again[0][1]) == json.loads(live[0][1])
    assert "refund service unavailable" in again[1][1]
    assert replayed.calls == 5  # three model answers, two tool results


def _record_to(path: Path, monkeypatch: pytest.MonkeyPatch, run: Any) -> Any:
    """Run RUN instrumented with content capture, its spans written to PATH as JSON Lines."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(walkthrough().JsonLinesExporter(path)))
    agentwatch.instrument(tracer_provider=provider, config={"agent": {"anomaly": {"log_findings": False}}})
    try:
        return run()
    finally:
        agentwatch.uninstrument()
        provider.shutdown()


def test_langgraph_tools_replay_from_the_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("langgraph")
    pytest.importorskip("langchain_openai")
    from langchain_core.messages import HumanMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    from agentwatch.testing import LLMServer, reply

    ran: list[str] = []

    @tool
    def get_order(order_id: str) -> dict[str, str]:
        """Look up an order."""
        ran.append("get_order")
        return {"order_id": order_id, "status": "shipped"}

    @tool
    def cancel(order_id: str) -> str:
        """Cancel an order."""
        ran.append("cancel")
        raise ValueError(f"order {order_id} already shipped")

    def agent(base_url: str) -> str:
        llm = ChatOpenAI(model="gpt-4o-mini", base_url=base_url, api_key="x", max_retries=0, timeout=5)
        bound = llm.bind_tools([get_order, cancel])
        builder = StateGraph(MessagesState)
        builder.add_node("model", lambda state: {"messages": [bound.invoke(state["messages"])]})
        builder.add_node("tools", ToolNode([get_order, cancel], handle_tool_errors=True))
        builder.add_edge(START, "model")
        builder.add_conditional_edges("model", tools_condition)
        builder.add_edge("tools", "model")
        out = builder.compile(name="support").invoke({"messages": [HumanMessage("Cancel ord_1")]})
        return "\n".join(str(m.content) for m in out["messages"])

    def live() -> str:
        with LLMServer() as llm:
            llm.script(
                reply.tool_call("get_order", {"order_id": "ord_1"}),
                reply.tool_call("cancel", {"order_id": "ord_1"}),
                reply.text("It has shipped; I could not cancel it."),
            )
            return agent(llm.openai_base_url)

    recording = tmp_path / "graph.jsonl"
    live_transcript = _record_to(recording, monkeypatch, live)
    assert ran == ["get_order", "cancel"]
    fixture_path = tmp_path / "graph-fixture.json"
    _export(recording, fixture_path, capsys)
    ran.clear()
    agentwatch.instrument(tracer_provider=TracerProvider(), config={"agent": {"anomaly": {"log_findings": False}}})
    try:
        with agentwatch.replay(fixture_path) as replayed:
            again = agent(DEAD_URL)
    finally:
        agentwatch.uninstrument()
    assert ran == []
    assert again == live_transcript  # the same conversation, tool error message included
    assert replayed.calls == 5


async def test_agents_sdk_tools_replay_from_the_recording(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = pytest.importorskip("agents")
    from agentwatch.testing import LLMServer, reply

    agents.set_tracing_disabled(True)
    ran: list[str] = []

    @agents.function_tool
    def get_order(order_id: str) -> str:
        """Look up an order."""
        ran.append("get_order")
        return f"{order_id}: shipped"

    @agents.function_tool
    def cancel(order_id: str) -> str:
        """Cancel an order."""
        ran.append("cancel")
        raise ValueError(f"order {order_id} already shipped")

    async def agent(base_url: str) -> Any:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=5)
        support = agents.Agent(
            name="support", instructions="Help.", tools=[get_order, cancel],
            model=agents.OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client),
        )
        result = await agents.Runner.run(support, "Cancel ord_1")
        return [str(item) for item in result.to_input_list()]

    def live() -> Any:
        import asyncio

        with LLMServer() as llm:
            llm.script(
                reply.tool_call("get_order", {"order_id": "ord_1"}),
                reply.tool_call("cancel", {"order_id": "ord_1"}),
                reply.text("Shipped already."),
            )
            return asyncio.run(agent(llm.openai_base_url))

    import concurrent.futures

    recording = tmp_path / "agents.jsonl"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # asyncio.run needs a thread without a loop
        live_items = pool.submit(_record_to, recording, monkeypatch, live).result()
    assert ran == ["get_order", "cancel"]
    fixture_path = tmp_path / "agents-fixture.json"
    _export(recording, fixture_path, capsys)
    ran.clear()
    agentwatch.instrument(tracer_provider=TracerProvider(), config={"agent": {"anomaly": {"log_findings": False}}})
    try:
        with agentwatch.replay(fixture_path) as replayed:
            again = await agent(DEAD_URL)
    finally:
        agentwatch.uninstrument()
    assert ran == []
    assert again == live_items
    assert replayed.calls == 5
