"""Real spans from other instrumentations get flagged: official openai-v2 (+ util-genai),
OpenInference and OpenLLMetry, driving the real ``openai`` client against the scripted server.

Each test runs through both adapters: ``AnomalyProcessor`` (in-process, live) and
``AnomalyExporter`` (whole traces at export time).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch import semconv as sc
from agentwatch.otel.exporter import AnomalyExporter
from agentwatch.otel.processor import AnomalyProcessor
from agentwatch.testing import LLMServer, reply

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "Look an order up",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
]
ORDER = {"order_id": "ord_555", "customer_id": "cust_789", "status": "shipped"}


# The peers' uninstrument() leaves wrappers behind: put the openai classes back after each test.
pytestmark = pytest.mark.usefixtures("restore_openai_classes")


@pytest.fixture(params=["processor", "exporter"])
def pipeline(request: pytest.FixtureRequest) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    if request.param == "processor":
        provider.add_span_processor(AnomalyProcessor(SimpleSpanProcessor(memory)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(AnomalyExporter(memory)))
    yield provider, memory
    provider.shutdown()


def flags(span: ReadableSpan) -> tuple[str, ...]:
    value: Any = (span.attributes or {}).get(sc.ANOMALY_FLAGS, ())
    return tuple(value)


def agent_loop(client: Any, execute: Callable[[str, dict[str, Any]], Any], user: str, turns: int = 4) -> None:
    """A minimal tool-using agent: ask, run the requested tools, feed results back."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are the order support agent."},
        {"role": "user", "content": user},
    ]
    for _ in range(turns):
        response = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
        message = response.choices[0].message
        if not message.tool_calls:
            return
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments},
                    }
                    for c in message.tool_calls
                ],
            }
        )
        for call in message.tool_calls:
            result = execute(call.function.name, json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})


def script_loop(server: LLMServer, times: int = 3) -> None:
    server.script(
        *[reply.tool_call("get_order", {"order_id": "ord_555"}) for _ in range(times)],
        reply.text("It has shipped."),
    )


# --------------------------------------------------------------------------- official openai-v2 + util-genai


@pytest.fixture
def genai_content(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, "SPAN_ONLY")


def _official(provider: TracerProvider) -> Any:
    v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")
    handler_mod = pytest.importorskip("opentelemetry.util.genai.handler")
    instrumentor = v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    return instrumentor, handler_mod.TelemetryHandler(tracer_provider=provider)


@pytest.mark.usefixtures("genai_content")
def test_official_genai_loop_of_identical_tool_calls(
    pipeline: tuple[TracerProvider, InMemorySpanExporter], llm_server: LLMServer, openai_client: Any
) -> None:
    provider, memory = pipeline
    instrumentor, handler = _official(provider)
    try:
        script_loop(llm_server)

        def execute(name: str, args: dict[str, Any]) -> Any:
            with handler.tool(name) as tool:
                tool.arguments = args
                tool.tool_result = ORDER
            return ORDER

        with handler.invoke_local_agent(agent_name="support", request_model="gpt-4o-mini"):
            agent_loop(openai_client, execute, "Where is order ord_555?")
    finally:
        instrumentor.uninstrument()
    spans = memory.get_finished_spans()
    tools = sorted((s for s in spans if s.name == "execute_tool get_order"), key=lambda s: s.start_time or 0)
    assert len(tools) == 3 and (tools[0].attributes or {}).get(sc.GEN_AI_TOOL_CALL_ARGUMENTS)
    assert [flags(t) for t in tools] == [(), (), ("LOOP_DETECTED",)]
    (agent,) = [s for s in spans if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == "invoke_agent"]
    run_flags: Any = (agent.attributes or {})[sc.RUN_ANOMALY_FLAGS]
    assert "LOOP_DETECTED" in run_flags
    assert len([s for s in spans if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == "chat"]) == 4


@pytest.mark.usefixtures("genai_content")
def test_official_genai_llm_span_requesting_an_invented_entity(
    pipeline: tuple[TracerProvider, InMemorySpanExporter], llm_server: LLMServer, openai_client: Any
) -> None:
    """Seed 003: asked about cust_789, the model requests ord_555, an id it never read."""
    provider, memory = pipeline
    instrumentor, handler = _official(provider)
    try:
        llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}), reply.text("Done."))
        with handler.invoke_local_agent(agent_name="support"):
            agent_loop(openai_client, lambda name, args: ORDER, "I am customer cust_789, where is my order?")
    finally:
        instrumentor.uninstrument()
    chats = sorted(
        (s for s in memory.get_finished_spans() if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == "chat"),
        key=lambda s: s.start_time or 0,
    )
    assert "ENTITY_HALLUCINATION" in flags(chats[0])
    assert not flags(chats[1])


# --------------------------------------------------------------------------- OpenInference


def test_openinference_agent_with_traced_tools_loops(
    pipeline: tuple[TracerProvider, InMemorySpanExporter], llm_server: LLMServer, openai_client: Any
) -> None:
    oi_openai = pytest.importorskip("openinference.instrumentation.openai")
    oi = pytest.importorskip("openinference.instrumentation")
    provider, memory = pipeline
    instrumentor = oi_openai.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        tracer = oi.OITracer(provider.get_tracer("support-agent"), config=oi.TraceConfig())

        @tracer.tool
        def get_order(order_id: str) -> dict[str, Any]:
            return ORDER

        script_loop(llm_server)
        with tracer.start_as_current_span("support", openinference_span_kind="agent"):
            agent_loop(openai_client, lambda name, args: get_order(**args), "Where is order ord_555?")
    finally:
        instrumentor.uninstrument()
    spans = memory.get_finished_spans()
    tools = sorted((s for s in spans if s.name == "get_order"), key=lambda s: s.start_time or 0)
    assert [flags(t) for t in tools] == [(), (), ("LOOP_DETECTED",)]
    llms = [s for s in spans if (s.attributes or {}).get(sc.OPENINFERENCE_SPAN_KIND) == "LLM"]
    assert len(llms) == 4 and not any(flags(s) for s in llms)
    (agent,) = [s for s in spans if s.name == "support"]
    assert (agent.attributes or {})[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED",)


# --------------------------------------------------------------------------- OpenLLMetry


def test_openllmetry_llm_span_requesting_a_tool_it_was_not_offered(
    pipeline: tuple[TracerProvider, InMemorySpanExporter], llm_server: LLMServer, openai_client: Any
) -> None:
    traceloop = pytest.importorskip("opentelemetry.instrumentation.openai")
    provider, memory = pipeline
    instrumentor = traceloop.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        llm_server.script(reply.tool_call("delete_account", {"customer_id": "cust_789"}), reply.text("Done."))
        with provider.get_tracer("app").start_as_current_span("POST /support"):
            agent_loop(openai_client, lambda name, args: {"ok": True}, "Close my account, I am cust_789.")
    finally:
        instrumentor.uninstrument()
    chats = sorted(
        (s for s in memory.get_finished_spans() if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) == "chat"),
        key=lambda s: s.start_time or 0,
    )
    assert len(chats) == 2
    assert flags(chats[0]) == ("UNKNOWN_TOOL",)
    assert not flags(chats[1])
