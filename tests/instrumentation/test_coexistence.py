"""agentwatch beside the real OpenLLMetry, OpenInference and official openai-v2 instrumentations.

The rule (``_calls._foreign_llm_span``): the outermost LLM span wins. When the
other instrumentation's span for the call is already current, agentwatch adds
its attributes (cost, step, tool-call hashes) to that span; when agentwatch's
span is outer, it sets the suppression key so the inner one stays quiet.
Either way the user gets one LLM span per call and the cost is counted once.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentwatch
from agentwatch import semconv as sc
from agentwatch.hashing import args_hash
from agentwatch.instrumentation import Instrumentor
from agentwatch.testing import LLMServer, reply
from tests.telemetry import Telemetry

MODEL = "gpt-4o-mini"
USAGE = {"input_tokens": 1000, "output_tokens": 200}
COST = round((1000 * 0.15 + 200 * 0.6) / 1e6, 10)

FOREIGN = {
    "openai-v2": "opentelemetry.instrumentation.openai_v2",  # official (contrib repo), on util-genai
    "genai-openai": "opentelemetry.instrumentation.genai.openai",  # official, opentelemetry-python-genai
    "openllmetry": "opentelemetry.instrumentation.openai",  # traceloop
    "openinference": "openinference.instrumentation.openai",  # Arize
}
# OpenInference wraps ``OpenAI.request`` on the subclass. Instrumented before agentwatch, that
# attribute shadows agentwatch's wrapper on ``SyncAPIClient.request``, so agentwatch never sees
# the call: still one span, but without cost, step or tool-call hashes. The fix belongs in
# ``_stainless.py`` (also wrap subclasses that define their own ``request``).
SHADOWED: set[tuple[str, str]] = set()  # fixed: subclasses defining request are wrapped too


def _foreign(name: str) -> Any:
    module = pytest.importorskip(FOREIGN[name])
    return module.OpenAIInstrumentor()


def _setup(order: str, foreign: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Telemetry, Callable[[], None]]:
    """Instrument both onto one provider in ``order``; returns telemetry and an LIFO teardown."""
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", raising=False)
    agentwatch.uninstrument()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])

    def ours() -> None:
        agentwatch.instrument(tracer_provider=provider, meter_provider=meters)

    def theirs() -> None:
        foreign.instrument(tracer_provider=provider, meter_provider=meters)

    steps = [theirs, ours] if order == "foreign_first" else [ours, theirs]
    for step in steps:
        step()

    def teardown() -> None:
        for step in reversed(steps):
            if step is ours:
                agentwatch.uninstrument()
            else:
                foreign.uninstrument()

    return Telemetry(exporter, reader, provider), teardown


def _llm_spans(telemetry: Telemetry) -> list[Any]:
    """Every span of any of the four conventions that describes an LLM call."""
    out = []
    for span in telemetry.spans():
        attrs = span.attributes or {}
        if (
            attrs.get(sc.GEN_AI_OPERATION_NAME) in sc.LLM_OPERATIONS
            or attrs.get(sc.LLM_REQUEST_TYPE)
            or attrs.get(sc.OPENINFERENCE_SPAN_KIND) == "LLM"
            or (span.instrumentation_scope.name == "agentwatch" and span.kind.name == "CLIENT")
        ):
            out.append(span)
    return out


@pytest.mark.parametrize("order", ["agentwatch_first", "foreign_first"])
@pytest.mark.parametrize("name", list(FOREIGN))
def test_one_llm_span_with_cost_counted_once(
    name: str,
    order: str,
    llm_server: LLMServer,
    monkeypatch: pytest.MonkeyPatch,
    restore_openai_classes: None,
    request: pytest.FixtureRequest,
) -> None:
    if (name, order) in SHADOWED:
        shadowed = pytest.mark.xfail(strict=True, reason="OpenAI.request shadows agentwatch's wrapper")
        request.applymarker(shadowed)
    foreign = _foreign(name)
    telemetry, teardown = _setup(order, foreign, monkeypatch)
    try:
        llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}, usage=USAGE))
        client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=5)
        with agentwatch.run("support"):
            result = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Where is ord_555?"}]
            )
        client.close()
    finally:
        teardown()

    assert result.choices[0].message.tool_calls[0].function.name == "get_order"
    spans = _llm_spans(telemetry)
    assert len(spans) == 1, [(s.name, s.instrumentation_scope.name) for s in spans]
    (span,) = spans
    (run_span,) = telemetry.runs()
    assert span.parent is not None and span.parent.span_id == run_span.context.span_id
    assert span.attributes[sc.COST_USD] == pytest.approx(COST)
    assert span.attributes[sc.STEP] == 1
    assert span.attributes[sc.LLM_TOOL_CALLS] == (f"get_order:{args_hash({'order_id': 'ord_555'})}",)
    # the run's totals count the call once
    assert run_span.attributes[sc.RUN_COST_USD] == pytest.approx(COST)
    assert run_span.attributes[sc.RUN_LLM_CALLS] == 1
    assert run_span.attributes[sc.RUN_INPUT_TOKENS] == 1000
    assert len(telemetry.spans()) == 2  # the run and the one LLM span: nothing else


@pytest.mark.parametrize("value", ["agentwatch", "openai, agentwatch ,requests"])
def test_disabled_instrumentations_env_makes_instrument_a_no_op(
    value: str, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    agentwatch.uninstrument()
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", value)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agentwatch.instrument(tracer_provider=provider)
    try:
        assert not Instrumentor().is_instrumented_by_opentelemetry
        base_client = importlib.import_module("openai._base_client")
        assert not hasattr(base_client.SyncAPIClient.request, "__wrapped__")
        client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=5)
        llm_server.script(reply.text("hi"))
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        client.close()
        assert exporter.get_finished_spans() == ()
    finally:
        agentwatch.uninstrument()


def test_a_name_that_only_contains_agentwatch_does_not_disable_it(
    llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    agentwatch.uninstrument()
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "agentwatch-extras")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agentwatch.instrument(tracer_provider=provider)
    try:
        client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=5)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        client.close()
        assert len(exporter.get_finished_spans()) == 1
    finally:
        agentwatch.uninstrument()


@pytest.mark.parametrize("name", list(FOREIGN))
def test_cost_metric_is_recorded_beside_a_foreign_span(
    name: str, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch, restore_openai_classes: None
) -> None:
    """The others emit no cost metric, so agentwatch's is the only one: it must not go missing."""
    foreign = _foreign(name)
    telemetry, teardown = _setup("agentwatch_first", foreign, monkeypatch)
    try:
        llm_server.script(reply.text("hi", usage=USAGE))
        client = openai.OpenAI(base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=5)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        client.close()
    finally:
        teardown()
    assert len(_llm_spans(telemetry)) == 1
    assert sum(p.value for p in telemetry.metric_points(sc.METRIC_COST)) == pytest.approx(COST)


# --------------------------------------------------------------------------- anthropic

ANTHROPIC_FOREIGN = {
    "genai-anthropic": "opentelemetry.instrumentation.genai.anthropic",  # official, opentelemetry-python-genai
    "openllmetry": "opentelemetry.instrumentation.anthropic",  # traceloop
}
# OpenLLMetry's anthropic instrumentation (0.62) starts its span without making it current, so no
# instrumentation inside the call can see it, and it wraps ``Messages.create``, outside agentwatch's
# reach: two spans per call. Documented in the README's coexistence table; fixed only upstream.
UNSEEN = {"openllmetry"}
CLAUDE = "claude-sonnet-4-5"
CLAUDE_COST = round((1000 * 3.0 + 200 * 15.0) / 1e6, 10)


@pytest.fixture
def restore_anthropic_classes() -> Iterator[None]:
    """Put the classes the anthropic instrumentations wrap back as they were (uninstrument may not)."""
    messages = importlib.import_module("anthropic.resources.messages")
    response = importlib.import_module("anthropic._response")
    classes = [messages.Messages, messages.AsyncMessages, response.ResponseContextManager,
               response.AsyncResponseContextManager]
    saved = {cls: dict(vars(cls)) for cls in classes}
    yield
    for cls, before in saved.items():
        for attr in [a for a in vars(cls) if not a.startswith("__") and a not in before]:
            delattr(cls, attr)
        for attr, value in before.items():
            if not attr.startswith("__") and vars(cls).get(attr) is not value:
                setattr(cls, attr, value)


@pytest.mark.usefixtures("restore_anthropic_classes")
@pytest.mark.parametrize("order", ["agentwatch_first", "foreign_first"])
@pytest.mark.parametrize("name", list(ANTHROPIC_FOREIGN))
def test_anthropic_one_llm_span_beside_foreign_and_sdk_tracing(
    name: str, order: str, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """Three would-be spans per call (the foreign one, the SDK's own on anthropic >= 2, agentwatch's): one."""
    if name in UNSEEN:
        request.applymarker(pytest.mark.xfail(strict=True, reason="the foreign span is never current"))
    anthropic = pytest.importorskip("anthropic")
    foreign = pytest.importorskip(ANTHROPIC_FOREIGN[name]).AnthropicInstrumentor()
    telemetry, teardown = _setup(order, foreign, monkeypatch)
    try:
        llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}, usage=USAGE))
        options: dict[str, Any] = {}
        if "open_telemetry" in inspect.signature(anthropic.Anthropic.__init__).parameters:
            options["open_telemetry"] = {"tracer_provider": telemetry.provider}  # the SDK traces itself too
        client = anthropic.Anthropic(
            base_url=llm_server.anthropic_base_url, api_key="test", max_retries=0, timeout=5, **options
        )
        with agentwatch.run("support"):
            result = client.messages.create(
                model=CLAUDE, max_tokens=256, messages=[{"role": "user", "content": "Where is ord_555?"}]
            )
        client.close()
    finally:
        teardown()

    assert result.content[0].name == "get_order"
    spans = _llm_spans(telemetry)
    assert len(spans) == 1, [(s.name, s.instrumentation_scope.name) for s in spans]
    (span,) = spans
    (run_span,) = telemetry.runs()
    assert span.attributes[sc.COST_USD] == pytest.approx(CLAUDE_COST)
    assert span.attributes[sc.LLM_TOOL_CALLS] == (f"get_order:{args_hash({'order_id': 'ord_555'})}",)
    assert run_span.attributes[sc.RUN_COST_USD] == pytest.approx(CLAUDE_COST)
    assert run_span.attributes[sc.RUN_INPUT_TOKENS] == 1000
    assert sum(p.value for p in telemetry.metric_points(sc.METRIC_COST)) == pytest.approx(CLAUDE_COST)
