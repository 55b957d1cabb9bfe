"""Conversations across traces (contract §8) in the SDK processor and exporter.

Each call below is its own trace, as with zero-code instrumentation: only
``gen_ai.conversation.id`` ties them together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

from agentwatch import semconv as sc
from agentwatch.otel.exporter import AnomalyExporter
from agentwatch.otel.processor import AnomalyProcessor


def _tool(conversation: str | None, tool: str = "get_order") -> dict[str, Any]:
    attrs: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: "execute_tool",
        sc.GEN_AI_TOOL_NAME: tool,
        sc.TOOL_ARGS_HASH: "a" * 16,
        sc.TOOL_RESULT_HASH: "r" * 16,  # the same answer every time: nothing new
    }
    if conversation is not None:
        attrs[sc.GEN_AI_CONVERSATION_ID] = conversation
    return attrs


def _llm(conversation: str, requested: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        sc.GEN_AI_OPERATION_NAME: "chat",
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
        sc.GEN_AI_CONVERSATION_ID: conversation,
        **extra,
    }
    if requested:
        attrs[sc.LLM_TOOL_CALLS] = requested
    return attrs


def _root_span(tracer: Tracer, name: str, attrs: dict[str, Any]) -> None:
    """One span that is its own trace (no parent in the current context)."""
    span = tracer.start_span(name, attributes=attrs, context=None)
    span.end()


Pipeline = tuple[Tracer, Callable[[], list[ReadableSpan]], Any]


def _processor() -> Pipeline:
    exporter = InMemorySpanExporter()
    processor = AnomalyProcessor(SimpleSpanProcessor(exporter))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return provider.get_tracer("t"), lambda: list(exporter.get_finished_spans()), processor


def _exporter() -> Pipeline:
    memory = InMemorySpanExporter()
    exporter = AnomalyExporter(memory)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    def spans() -> list[ReadableSpan]:
        provider.force_flush()
        return list(memory.get_finished_spans())

    return provider.get_tracer("t"), spans, exporter


PIPELINES = pytest.mark.parametrize("pipeline", [_processor, _exporter], ids=["processor", "exporter"])


def _flags(span: ReadableSpan) -> tuple[str, ...]:
    return tuple((span.attributes or {}).get(sc.ANOMALY_FLAGS, ()))


@PIPELINES
def test_tool_loop_across_traces(pipeline: Callable[[], Pipeline]) -> None:
    tracer, spans, adapter = pipeline()
    for _ in range(4):
        _root_span(tracer, "execute_tool get_order", _tool("conv-1"))
    tools = spans()
    assert len({s.context.trace_id for s in tools}) == 4
    assert [("LOOP_DETECTED" in _flags(s)) for s in tools] == [False, False, True, True]
    assert adapter.stats.get("conversation_spans", adapter.stats.get("conversations.spans")) == 4


@PIPELINES
def test_without_conversation_each_trace_stands_alone(pipeline: Callable[[], Pipeline]) -> None:
    tracer, spans, _ = pipeline()
    for _ in range(4):
        _root_span(tracer, "execute_tool get_order", _tool(None))
    assert not any(_flags(s) for s in spans())


@PIPELINES
def test_conversations_are_kept_apart(pipeline: Callable[[], Pipeline]) -> None:
    tracer, spans, _ = pipeline()
    for i in range(4):
        _root_span(tracer, "execute_tool get_order", _tool(f"conv-{i % 2}"))
    assert not any(_flags(s) for s in spans())  # two calls per conversation


@PIPELINES
def test_repeated_requests_across_traces(pipeline: Callable[[], Pipeline]) -> None:
    """A tool that leaves no span: each call carries the last request's result, by call id."""
    tracer, spans, _ = pipeline()
    for i in range(4):
        extra: dict[str, Any] = {sc.LLM_TOOL_CALL_IDS: (f"call_{i}",)}
        if i:
            extra[sc.LLM_TOOL_RESULTS] = (f"{'c' * 16} - call_{i - 1}",)  # the same fingerprint each time
        _root_span(tracer, "chat gpt-4o-mini", _llm("conv-9", ("get_order:" + "b" * 16,), **extra))
    assert [("LOOP_DETECTED" in _flags(s)) for s in spans()] == [False, False, False, True]


@PIPELINES
def test_requests_whose_results_are_unseen_are_not_a_loop(pipeline: Callable[[], Pipeline]) -> None:
    tracer, spans, _ = pipeline()
    for _ in range(4):  # no call ids, no results: nothing says the repeats brought nothing new
        _root_span(tracer, "chat gpt-4o-mini", _llm("conv-9", ("get_order:" + "b" * 16,)))
    assert not any(_flags(s) for s in spans())


@PIPELINES
def test_a_run_span_holds_its_spans(pipeline: Callable[[], Pipeline]) -> None:
    """Inside a run the run decides: a conversation id on its spans does not pull them out."""
    tracer, spans, _ = pipeline()
    for _ in range(2):  # two runs, two identical calls each: no loop in either
        with tracer.start_as_current_span(
            "invoke_agent support", attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent"}, context=None
        ):
            for _ in range(2):
                with tracer.start_as_current_span("execute_tool get_order", attributes=_tool("conv-1")):
                    pass
    assert not any("LOOP_DETECTED" in _flags(s) for s in spans())


def test_exporter_conversation_state_is_bounded() -> None:
    memory = InMemorySpanExporter()
    exporter = AnomalyExporter(memory, config={"agent": {"limits": {"max_runs": 2}}})
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for i in range(5):
        _root_span(tracer, "execute_tool get_order", _tool(f"conv-{i}"))
    stats = exporter.stats
    assert stats["conversations.runs_open"] == 2
    assert stats["conversations.runs_evicted"] == 3
