"""anthropic >= 2 traces itself: one LLM span per call all the same.

The SDK opens an ``anthropic.messages.create`` span (scope ``com.anthropic.sdk.python``)
inside ``request``, under agentwatch's ``chat`` span, with its own operation name and
token counts, and it ignores OpenTelemetry's suppression key. agentwatch's span is the
outer one, so the SDK's is turned off for the calls agentwatch records, per call: the
client's ``open_telemetry`` option is untouched, and calls agentwatch does not record
(``count_tokens``) keep their SDK span. anthropic 0.x has no such span (skipped there).
The openai SDK (through 3.x) does not trace itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentwatch
from agentwatch import semconv as sc
from tests.instrumentation.wire import Fixture, WireServer

anthropic = pytest.importorskip("anthropic")
pytestmark = pytest.mark.skipif(
    "open_telemetry" not in inspect.signature(anthropic.Anthropic.__init__).parameters,
    reason="this anthropic SDK does not trace itself",
)
SDK_SCOPE = "com.anthropic.sdk.python"
USER = [{"role": "user", "content": "Where is ord_4471?"}]


@pytest.fixture
def wire() -> Iterator[WireServer]:
    server = WireServer(
        Fixture("anthropic/messages_thinking_tool_use_cache_write.json"),
        routes={"/messages/count_tokens": (200, b'{"input_tokens": 17}')},
    )
    yield server
    server.close()


def _traced_client(wire: WireServer, provider: TracerProvider, is_async: bool = False) -> Any:
    cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
    return cls(
        base_url=wire.anthropic_base_url, api_key="test", max_retries=0, timeout=5,
        open_telemetry={"tracer_provider": provider},
    )


def _genai(spans: Any) -> list[Any]:
    return [s for s in spans if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) in sc.LLM_OPERATIONS]


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_without_agentwatch_the_sdk_span_is_there(wire: WireServer) -> None:
    """The premise: this SDK does emit a GenAI span of its own."""
    agentwatch.uninstrument()
    provider, exporter = _provider()
    client = _traced_client(wire, provider)
    client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
    client.close()
    (span,) = _genai(exporter.get_finished_spans())
    assert span.instrumentation_scope.name == SDK_SCOPE


def test_one_genai_span_per_call_and_the_client_option_untouched(wire: WireServer, monkeypatch: Any) -> None:
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    provider, exporter = _provider()
    agentwatch.instrument(tracer_provider=provider)
    try:
        client = _traced_client(wire, provider)
        option_before = client.open_telemetry
        client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
        client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER).parse()
        client.messages.count_tokens(model="claude-sonnet-4-5", messages=USER)
        assert client.open_telemetry == option_before
        client.close()
    finally:
        agentwatch.uninstrument()
    spans = exporter.get_finished_spans()
    llm = _genai(spans)
    assert [s.instrumentation_scope.name for s in llm] == ["agentwatch", "agentwatch"], [s.name for s in spans]
    tokens = sum(s.attributes.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS, 0) for s in spans)
    assert tokens == 2 * 131  # counted once per call
    # a call agentwatch does not record keeps the SDK's own span
    assert [s.name for s in spans if s.instrumentation_scope.name == SDK_SCOPE] == ["anthropic.messages.count_tokens"]


async def test_async_calls_too(wire: WireServer, monkeypatch: Any) -> None:
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    provider, exporter = _provider()
    agentwatch.instrument(tracer_provider=provider)
    try:
        client = _traced_client(wire, provider, is_async=True)
        await client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
        await client.close()
    finally:
        agentwatch.uninstrument()
    assert [s.instrumentation_scope.name for s in _genai(exporter.get_finished_spans())] == ["agentwatch"]


def test_suppressed_instrumentation_quiets_the_sdk_span_too(wire: WireServer) -> None:
    """The SDK ignores OpenTelemetry's suppression key; with agentwatch installed it is honoured."""
    provider, exporter = _provider()
    agentwatch.instrument(tracer_provider=provider)
    try:
        client = _traced_client(wire, provider)
        with suppress_instrumentation():
            client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=USER)
        client.close()
    finally:
        agentwatch.uninstrument()
    assert exporter.get_finished_spans() == ()
