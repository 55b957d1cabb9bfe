"""Foreign spans that lost attributes to the SDK's limit are still recognised.

The SDK keeps at most ``OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`` (default 128) attributes
per span and drops the oldest first. OpenInference writes one attribute per message
field, so an LLM call with a long conversation overflows. Releases of OpenInference
that write ``openinference.span.kind`` with the request lose it (recent ones write it
again when the span ends, so it survives); the span must still count as an LLM call
from what is left.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch import Budget
from agentwatch import semconv as sc
from agentwatch.engine.record import Kind
from agentwatch.otel.exporter import AnomalyExporter
from agentwatch.otel.normalize import detect_kind, record_from_attributes
from agentwatch.otel.processor import AnomalyProcessor
from agentwatch.testing import LLMServer, reply

pytestmark = pytest.mark.usefixtures("restore_openai_classes")


@pytest.fixture(params=["processor", "exporter"])
def pipeline(request: pytest.FixtureRequest) -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()  # the SDK's default limits: 128 attributes per span
    if request.param == "processor":
        provider.add_span_processor(AnomalyProcessor(SimpleSpanProcessor(memory)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(AnomalyExporter(memory)))
    yield provider, memory
    provider.shutdown()


def test_openinference_llm_span_over_the_limit_still_counts(
    pipeline: tuple[TracerProvider, InMemorySpanExporter], llm_server: LLMServer, openai_client: Any
) -> None:
    oi_openai = pytest.importorskip("openinference.instrumentation.openai")
    oi = pytest.importorskip("openinference.instrumentation")
    provider, memory = pipeline
    instrumentor = oi_openai.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    history: list[dict[str, Any]] = []
    for i in range(40):  # 80 messages: role and content attributes each, well over 128
        history.append({"role": "user", "content": f"question {i}"})
        history.append({"role": "assistant", "content": f"answer {i}"})
    history.append({"role": "user", "content": "and now?"})
    llm_server.script(reply.text("done", usage={"input_tokens": 900, "output_tokens": 200}))
    try:
        tracer = oi.OITracer(provider.get_tracer("support-agent"), config=oi.TraceConfig())
        budget = Budget(max_tokens=1000).to_attributes()
        with tracer.start_as_current_span("support", openinference_span_kind="agent", attributes=budget):
            openai_client.chat.completions.create(model="gpt-4o-mini", messages=history)
    finally:
        instrumentor.uninstrument()
    spans = memory.get_finished_spans()
    (llm,) = [s for s in spans if s.name != "support"]
    attrs = dict(llm.attributes or {})
    assert llm.dropped_attributes > 0  # the real instrumentation did overflow the limit
    assert "TOKEN_BUDGET_EXCEEDED" in attrs.get(sc.ANOMALY_FLAGS, ())  # its tokens counted in the run
    # What an OpenInference release that writes the kind first leaves: the same span without it.
    leftovers = {k: v for k, v in attrs.items() if k != sc.OPENINFERENCE_SPAN_KIND and not k.startswith("agentwatch.")}
    assert detect_kind(leftovers) is Kind.LLM
    record = record_from_attributes(
        leftovers, trace_id="1" * 32, span_id="2" * 16, parent_id=None, name=llm.name,
        start_ns=1, end_ns=2, is_error=False,
    )  # fmt: skip
    assert record.kind is Kind.LLM
    assert (record.input_tokens, record.output_tokens) == (900, 200)


@pytest.mark.parametrize(
    "attributes,kind",
    [
        ({"llm.model_name": "gpt-4o", "llm.output_messages.0.message.role": "assistant"}, Kind.LLM),
        ({"llm.token_count.total": 12}, Kind.LLM),
        ({"embedding.model_name": "text-embedding-3-small"}, Kind.LLM),
        ({"tool.name": "get_order", "tool.parameters": "{}"}, Kind.TOOL),
        ({"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 3}, Kind.LLM),
        ({"gen_ai.completion.0.role": "assistant", "llm.usage.total_tokens": 9}, Kind.LLM),  # OpenLLMetry
        ({"gen_ai.tool.name": "get_order"}, Kind.TOOL),
        ({"http.method": "GET", "http.route": "/orders"}, None),
        ({}, None),
    ],
)
def test_kind_from_leftover_attributes(attributes: dict[str, Any], kind: Kind | None) -> None:
    assert detect_kind(attributes) is kind


def test_a_kind_attribute_still_wins() -> None:
    assert detect_kind({"openinference.span.kind": "CHAIN", "llm.model_name": "gpt-4o"}) is Kind.OTHER
    assert detect_kind({"traceloop.span.kind": "tool", "gen_ai.request.model": "m"}) is Kind.TOOL
