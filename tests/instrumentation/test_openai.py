"""The real ``openai`` client against the scripted server, with agentwatch instrumented."""

from __future__ import annotations

import gc
import importlib.metadata
import json
from typing import Any

import openai
import pytest
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import SpanKind, StatusCode

import agentwatch
from agentwatch import semconv as sc
from agentwatch.hashing import args_hash
from agentwatch.testing import reply
from tests.telemetry import Telemetry

MODEL = "gpt-4o-mini"
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
USAGE = {"input_tokens": 100, "output_tokens": 20, "cached_tokens": 40, "reasoning_tokens": 5}
HAS_RESPONSES = hasattr(openai.OpenAI, "responses")


def expected_cost(inp: int, out: int, cached: int) -> float:
    return round(((inp - cached) * 0.15 + cached * 0.075 + out * 0.6) / 1e6, 10)


def only(spans: list[Any]) -> Any:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_chat_completion_span_has_genai_attributes_tokens_and_cost(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.text("hi there", usage=USAGE))
    result = openai_client.chat.completions.create(model=MODEL, messages=MSGS, temperature=0.2, max_tokens=50)
    assert result.choices[0].message.content == "hi there"

    span = only(telemetry.spans())
    attrs = span.attributes
    assert span.name == f"chat {MODEL}"
    assert span.kind is SpanKind.CLIENT
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat"
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == MODEL
    assert attrs[sc.GEN_AI_RESPONSE_MODEL] == MODEL
    assert attrs[sc.GEN_AI_RESPONSE_ID] == result.id
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 20
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 40
    assert attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 5
    assert attrs[sc.GEN_AI_REQUEST_TEMPERATURE] == 0.2
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 50
    assert attrs[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert attrs[sc.COST_USD] == pytest.approx(expected_cost(100, 20, 40))
    assert sc.GEN_AI_INPUT_MESSAGES not in attrs  # content capture is off by default

    tokens = telemetry.metric_points(sc.METRIC_TOKEN_USAGE)
    by_type = {p.attributes[sc.GEN_AI_TOKEN_TYPE]: p.sum for p in tokens}
    assert by_type == {"input": 100, "output": 20}
    (duration,) = telemetry.metric_points(sc.METRIC_OPERATION_DURATION)
    assert duration.attributes[sc.GEN_AI_OPERATION_NAME] == "chat"


def test_unknown_tool_is_flagged_even_outside_a_run(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.tool_call("drop_database", {}))
    openai_client.chat.completions.create(
        model=MODEL, messages=MSGS,
        tools=[{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}],
    )
    assert only(telemetry.spans()).attributes[sc.ANOMALY_FLAGS] == ("UNKNOWN_TOOL",)


def test_unknown_model_has_no_cost(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    llm_server.script(reply.text("ok", usage=USAGE, model="my-finetune-xyz"))
    openai_client.chat.completions.create(model="my-finetune-xyz", messages=MSGS)
    span = only(telemetry.spans())
    assert sc.COST_USD not in span.attributes
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100


async def test_async_chat(telemetry: Telemetry, llm_server: Any, async_openai_client: openai.AsyncOpenAI) -> None:
    llm_server.script(reply.text("async hi", usage=USAGE))
    result = await async_openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    assert result.choices[0].message.content == "async hi"
    span = only(telemetry.spans())
    assert span.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 20


def test_tool_calls_are_recorded_with_args_hash(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}, usage=USAGE))
    with agentwatch.run("agent"):
        openai_client.chat.completions.create(
            model=MODEL, messages=MSGS,
            tools=[{"type": "function", "function": {"name": "get_order", "parameters": {"type": "object"}}}],
        )
    attrs = only(telemetry.llm()).attributes
    assert attrs[sc.LLM_TOOL_CALLS] == (f"get_order:{args_hash({'order_id': 'ord_555'})}",)
    assert attrs[sc.LLM_TOOLS_OFFERED] == ("get_order",)
    assert "order:ord_555" in attrs[sc.LLM_REQUESTED_ENTITIES]
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)


# --------------------------------------------------------------------------- streaming


def test_stream_full_without_usage_ends_once_and_adds_nothing(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.text("one two three", usage=USAGE))
    stream = openai_client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    chunks = list(stream)
    # agentwatch never asks for include_usage itself: every chunk has a choice
    assert all(c.choices for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "one two three"
    assert "stream_options" not in llm_server.last_request.body
    span = only(telemetry.spans())
    assert span.attributes[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert span.attributes[sc.GEN_AI_REQUEST_STREAM] is True
    assert sc.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes
    assert sc.COST_USD not in span.attributes
    assert sc.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK in span.attributes


def test_stream_with_usage_records_tokens_and_cost(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.text("streamed", usage=USAGE))
    stream = openai_client.chat.completions.create(
        model=MODEL, messages=MSGS, stream=True, stream_options={"include_usage": True}
    )
    for _ in stream:
        pass
    attrs = only(telemetry.spans()).attributes
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100
    assert attrs[sc.COST_USD] == pytest.approx(expected_cost(100, 20, 40))


def test_stream_tool_call_arguments_are_reassembled(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    args = {"order_id": "ord_555", "note": "a fairly long argument split over many chunks"}
    llm_server.script(reply.tool_call("get_order", args, chunk_size=4))
    with openai_client.chat.completions.create(model=MODEL, messages=MSGS, stream=True) as stream:
        for _ in stream:
            pass
    attrs = only(telemetry.spans()).attributes
    assert attrs[sc.LLM_TOOL_CALLS] == (f"get_order:{args_hash(args)}",)


def test_stream_early_break_then_close(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    llm_server.script(reply.text("a b c d e f g h", usage=USAGE))
    stream = openai_client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    for _chunk in stream:
        break
    assert telemetry.spans() == []  # still open: the user may go on reading
    stream.close()
    span = only(telemetry.spans())
    assert span.status.status_code is not StatusCode.ERROR


def test_stream_abandoned_is_ended_by_garbage_collection(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.text("a b c d e f", usage=USAGE))
    stream = openai_client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    next(iter(stream))
    del stream
    gc.collect()
    only(telemetry.spans())


def test_stream_error_midway_propagates_and_is_recorded(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.cut_after(2, then=reply.text("one two three four five six")))
    stream = openai_client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    with pytest.raises(Exception) as caught:
        for _ in stream:
            pass
    span = only(telemetry.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.ERROR_TYPE].endswith(type(caught.value).__qualname__)


async def test_async_stream_early_break_and_close(
    telemetry: Telemetry, llm_server: Any, async_openai_client: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.text("a b c d e f", usage=USAGE))
    stream = await async_openai_client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    async for _chunk in stream:
        break
    await stream.close()
    only(telemetry.spans())


async def test_async_stream_context_manager(
    telemetry: Telemetry, llm_server: Any, async_openai_client: openai.AsyncOpenAI
) -> None:
    llm_server.script(reply.text("x y z", usage=USAGE))
    stream = await async_openai_client.chat.completions.create(model=MODEL, messages=MSGS, stream=True)
    async with stream as s:
        assert s is stream
        texts = [c.choices[0].delta.content async for c in s if c.choices]
    assert "".join(t or "" for t in texts) == "x y z"
    only(telemetry.spans())


def test_stream_helper_manager(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    if not hasattr(openai_client.chat.completions, "stream"):
        pytest.skip("this openai version has no chat.completions.stream helper")
    llm_server.script(reply.tool_call("lookup", {"q": "x"}))
    with openai_client.chat.completions.stream(model=MODEL, messages=MSGS) as stream:
        for _event in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.tool_calls[0].function.name == "lookup"
    attrs = only(telemetry.spans()).attributes
    assert attrs[sc.LLM_TOOL_CALLS] == (f"lookup:{args_hash({'q': 'x'})}",)


# --------------------------------------------------------------------------- responses API


@pytest.mark.skipif(not HAS_RESPONSES, reason="this openai version has no Responses API")
def test_responses_create_and_stream(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    llm_server.script(
        reply.text("plain", usage=USAGE),
        reply.tool_call("get_order", {"order_id": "ord_1"}, usage=USAGE),
    )
    resp = openai_client.responses.create(model=MODEL, input="hello", instructions="Be brief.")
    assert resp.output_text == "plain"
    events = list(openai_client.responses.create(model=MODEL, input="again", stream=True))
    assert events[-1].type == "response.completed"
    first, second = sorted(telemetry.spans(), key=lambda s: s.start_time)
    assert first.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100
    assert first.attributes[sc.GEN_AI_RESPONSE_ID] == resp.id
    assert second.attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 20
    assert second.attributes[sc.LLM_TOOL_CALLS] == (f"get_order:{args_hash({'order_id': 'ord_1'})}",)


@pytest.mark.skipif(not HAS_RESPONSES, reason="this openai version has no Responses API")
def test_responses_stream_helper(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    if not hasattr(openai_client.responses, "stream"):
        pytest.skip("no responses.stream helper")
    llm_server.script(reply.text("helper text", usage=USAGE))
    with openai_client.responses.stream(model=MODEL, input="hi") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "helper text"
    assert only(telemetry.spans()).attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100


def test_with_raw_response(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    llm_server.script(reply.text("raw", usage=USAGE))
    raw = openai_client.chat.completions.with_raw_response.create(model=MODEL, messages=MSGS)
    assert raw.http_response.status_code == 200
    assert raw.parse().choices[0].message.content == "raw"
    assert only(telemetry.spans()).attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == 100


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [(429, openai.RateLimitError), (401, openai.AuthenticationError), (500, openai.InternalServerError)],
)
def test_http_errors_propagate_unchanged(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI, status: int, exc_type: type
) -> None:
    llm_server.script(reply.error(status))
    with pytest.raises(exc_type):
        openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    span = only(telemetry.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[sc.ERROR_TYPE] == f"openai.{exc_type.__qualname__}"


def test_timeout(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    llm_server.script(reply.delay(3.0))
    with pytest.raises(openai.APITimeoutError):
        openai_client.with_options(timeout=0.3).chat.completions.create(model=MODEL, messages=MSGS)
    assert only(telemetry.spans()).attributes[sc.ERROR_TYPE] == "openai.APITimeoutError"


# --------------------------------------------------------------------------- runs and budgets


def test_calls_nest_under_runs_and_totals_roll_up(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.text("a", usage=USAGE), reply.text("b", usage=USAGE), reply.text("c", usage=USAGE))
    with agentwatch.run("outer", entities={"customer": "cust_789"}) as outer:
        openai_client.chat.completions.create(model=MODEL, messages=MSGS)
        with agentwatch.run("inner"):
            openai_client.chat.completions.create(model=MODEL, messages=MSGS)
            openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    runs = {s.attributes[sc.GEN_AI_AGENT_NAME]: s for s in telemetry.runs()}
    outer_span, inner_span = runs["outer"], runs["inner"]
    assert outer_span.attributes[sc.RUN_ID] == outer.run_id
    assert outer_span.attributes[sc.RUN_LLM_CALLS] == 3
    assert inner_span.attributes[sc.RUN_LLM_CALLS] == 2
    assert outer_span.attributes[sc.RUN_INPUT_TOKENS] == 300
    assert outer_span.attributes[sc.RUN_COST_USD] == pytest.approx(3 * expected_cost(100, 20, 40))
    assert outer_span.attributes[sc.RUN_STOP_REASON] == "success"
    assert outer_span.attributes[sc.RUN_FAILURE_MODE] == "completed"
    assert outer_span.attributes["agentwatch.run.entity.customer"] == "cust_789"
    llm = sorted(telemetry.llm(), key=lambda s: s.start_time)
    assert [s.attributes[sc.STEP] for s in llm] == [1, 1, 2]  # numbered within the nearest run
    assert llm[0].parent.span_id == outer_span.context.span_id
    assert llm[1].parent.span_id == inner_span.context.span_id


def test_budget_observed_flags_the_crossing_call(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    with agentwatch.run("agent", budget=agentwatch.Budget(max_steps=2)):
        for _ in range(3):
            openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    llm = sorted(telemetry.llm(), key=lambda s: s.start_time)
    assert [sc.ANOMALY_FLAGS in s.attributes for s in llm] == [False, False, True]
    assert llm[2].attributes[sc.ANOMALY_FLAGS] == ("STEP_BUDGET_EXCEEDED",)
    run_span = only(telemetry.runs())
    assert run_span.attributes[sc.RUN_STOP_REASON] == "success"
    assert "STEP_BUDGET_EXCEEDED" in run_span.attributes[sc.RUN_ANOMALY_FLAGS]
    assert run_span.attributes[sc.RUN_FAULT_ORIGIN_SPAN_ID] == format(llm[2].context.span_id, "016x")


def test_budget_enforced_stops_before_sending(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    with pytest.raises(agentwatch.BudgetExceeded) as caught:  # noqa: SIM117
        with agentwatch.run("agent", budget=agentwatch.Budget(max_steps=2, enforce=True)):
            for _ in range(5):
                openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    assert caught.value.stop_reason == agentwatch.StopReason.STEP_BUDGET
    assert len(llm_server.requests) == 2
    run_span = only(telemetry.runs())
    assert run_span.attributes[sc.RUN_STOP_REASON] == "step_budget"
    assert run_span.attributes[sc.RUN_FAILURE_MODE] == "cost_blowup"
    assert "STEP_BUDGET_EXCEEDED" in run_span.attributes[sc.ANOMALY_FLAGS]


def test_llm_error_classifies_the_run(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    llm_server.script(reply.error(500))
    with pytest.raises(openai.InternalServerError), agentwatch.run("agent"):
        openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    assert only(telemetry.runs()).attributes[sc.RUN_STOP_REASON] == "llm_error"


# --------------------------------------------------------------------------- content capture


SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"


def test_content_not_captured_by_default(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"key {SECRET}"}])
    for span in telemetry.spans():
        assert all(SECRET not in str(v) for v in span.attributes.values())
        assert sc.GEN_AI_INPUT_MESSAGES not in span.attributes


@pytest.mark.parametrize("mode", ["SPAN_ONLY", "true", "SPAN_AND_EVENT"])
def test_content_capture_is_redacted(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, mode)
    llm_server.script(reply.text("Use Bearer abcdefghijklmnop123 to log in"))
    openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"my key is {SECRET}", "api_key": "plain-secret"}]
    )
    attrs = only(telemetry.spans()).attributes
    captured = attrs[sc.GEN_AI_INPUT_MESSAGES]
    assert "my key is [REDACTED]" in captured
    assert SECRET not in captured and "plain-secret" not in captured
    assert "abcdefghijklmnop123" not in attrs[sc.GEN_AI_OUTPUT_MESSAGES]
    everything = " ".join(str(v) for v in attrs.values())
    assert "test-key" not in everything  # the client's API key header is never recorded


def test_content_capture_truncates(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, "SPAN_ONLY")
    openai_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 20000}])
    captured = only(telemetry.spans()).attributes[sc.GEN_AI_INPUT_MESSAGES]
    assert len(captured) < 4200 and "truncated" in captured


# --------------------------------------------------------------------------- lifecycle and robustness


def test_uninstrument_and_double_instrument(llm_server: Any, openai_client: openai.OpenAI) -> None:
    from tests.telemetry import make_telemetry

    tel = make_telemetry()
    agentwatch.instrument()  # second call is a no-op
    openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    assert len(tel.spans()) == 1
    cached = openai_client.chat.completions.with_raw_response  # bound methods cached by the SDK
    agentwatch.uninstrument()
    openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    cached.create(model=MODEL, messages=MSGS)
    assert len(tel.spans()) == 1


def test_instrumentation_fault_never_breaks_the_call(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentwatch.instrumentation.openai import OpenAIProvider

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(OpenAIProvider, "read_response", boom)
    monkeypatch.setattr(OpenAIProvider, "read_request", boom)
    llm_server.script(reply.text("still fine"), reply.text("fine again"))
    out = openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    assert out.choices[0].message.content == "still fine"
    monkeypatch.undo()
    monkeypatch.setattr(OpenAIProvider, "read_response", boom)
    out = openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    assert out.choices[0].message.content == "fine again"
    assert len(telemetry.spans()) == 1  # the second call still got its span, ended


def test_a_fault_while_recording_the_response_keeps_the_request_attributes(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Request attributes are written once, at the end, with the response's: a fault in
    # between must not leave the span without them.
    from agentwatch import _runtime

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(_runtime.get().prices, "cost", boom)
    llm_server.script(reply.text("fine"))
    out = openai_client.chat.completions.create(model=MODEL, messages=MSGS, temperature=0.2)
    assert out.choices[0].message.content == "fine"
    (span,) = telemetry.spans()
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.request.temperature"] == 0.2 and attrs["gen_ai.provider.name"] == "openai"


def test_suppression_key_is_respected(telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI) -> None:
    with suppress_instrumentation():
        openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    assert telemetry.spans() == []


def test_entry_point_is_registered() -> None:
    eps = importlib.metadata.entry_points(group="opentelemetry_instrumentor")
    (ep,) = [e for e in eps if e.name == "agentwatch"]
    assert ep.load() is agentwatch.Instrumentor


def test_repeat_instrument_takes_new_provider_and_config(
    llm_server: Any, openai_client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.telemetry import make_telemetry

    first = make_telemetry()
    try:
        second = make_telemetry(config={"agent": {"budgets": {"max_steps": 1}}})  # no uninstrument between
        with agentwatch.run("agent"):
            openai_client.chat.completions.create(model=MODEL, messages=MSGS)
            openai_client.chat.completions.create(model=MODEL, messages=MSGS)
        assert first.spans() == []
        flags = [s.attributes.get(sc.ANOMALY_FLAGS, ()) for s in second.llm()]
        assert ("STEP_BUDGET_EXCEEDED",) in flags
        monkeypatch.setenv("AGENTWATCH_MAX_STEPS", "5")
        agentwatch.instrument()  # the environment is read again; providers are kept
        with agentwatch.run("agent"):
            openai_client.chat.completions.create(model=MODEL, messages=MSGS)
            openai_client.chat.completions.create(model=MODEL, messages=MSGS)
        assert len(second.llm()) == 4
        assert [s.attributes.get(sc.ANOMALY_FLAGS) for s in second.llm()[2:]] == [None, None]
    finally:
        agentwatch.uninstrument()


def test_tool_arguments_are_checked_against_the_schema_offered_to_the_model(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"],
              "additionalProperties": False}
    llm_server.script(reply.tool_call("lookup", {"id": 5, "extra": True}))

    @agentwatch.tool("lookup")  # declares no schema of its own
    def lookup(**kwargs: Any) -> str:
        return "ok"

    with agentwatch.run("agent"):
        out = openai_client.chat.completions.create(
            model=MODEL, messages=MSGS,
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": schema}}],
        )
        call = out.choices[0].message.tool_calls[0]
        lookup(**json.loads(call.function.arguments))
    (tool_span,) = telemetry.tools()
    assert "TOOL_ARG_MISMATCH" in tool_span.attributes[sc.ANOMALY_FLAGS]


def test_captured_content_uses_genai_message_shape_and_stays_valid_json(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, "SPAN_ONLY")
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_1"}))
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "x" * 20000},
        {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function",
                                              "function": {"name": "lookup", "arguments": '{"q": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": "found"},
    ]
    openai_client.chat.completions.create(model=MODEL, messages=history)
    attrs = only(telemetry.spans()).attributes
    inputs = json.loads(attrs[sc.GEN_AI_INPUT_MESSAGES])  # still valid JSON although truncated
    assert [m["role"] for m in inputs] == ["system", "user", "assistant", "tool"]
    assert inputs[1]["parts"][0]["type"] == "text" and "truncated" in inputs[1]["parts"][0]["content"]
    assert inputs[2]["parts"] == [{"type": "tool_call", "id": "call_0", "name": "lookup", "arguments": {"q": 1}}]
    assert inputs[3]["parts"] == [{"type": "tool_call_response", "id": "call_0", "response": "found"}]
    (output,) = json.loads(attrs[sc.GEN_AI_OUTPUT_MESSAGES])
    assert output["role"] == "assistant" and output["finish_reason"] == "tool_calls"
    assert output["parts"][-1]["name"] == "get_order"


def test_event_only_mode_keeps_content_off_span_attributes(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, "EVENT_ONLY")
    openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    span = only(telemetry.spans())
    assert sc.GEN_AI_INPUT_MESSAGES not in span.attributes
    events = [e for e in span.events if e.name == "gen_ai.client.inference.operation.details"]
    assert events and any(sc.GEN_AI_INPUT_MESSAGES in e.attributes for e in events)
    assert any(sc.GEN_AI_OUTPUT_MESSAGES in e.attributes for e in events)


def test_cost_metric_has_the_name_the_readme_gives(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    llm_server.script(reply.text("hi", usage=USAGE))
    openai_client.chat.completions.create(model=MODEL, messages=MSGS)
    (point,) = telemetry.metric_points("agentwatch.cost")
    assert point.value == pytest.approx(expected_cost(100, 20, 40))
    assert point.attributes[sc.GEN_AI_REQUEST_MODEL] == MODEL
    assert sc.METRIC_COST == "agentwatch.cost"


@pytest.mark.skipif(not HAS_RESPONSES, reason="this openai version has no Responses API")
def test_responses_tool_loop_is_judged_by_its_results(
    telemetry: Telemetry, llm_server: Any, openai_client: openai.OpenAI
) -> None:
    """A Responses API loop whose tool is a plain function: results come back as function_call_output."""
    turns = 4
    llm_server.script(*[reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in range(turns)])
    items: list[Any] = [{"role": "user", "content": "where is ord_1?"}]
    with agentwatch.run("support"):
        for _ in range(turns):
            resp = openai_client.responses.create(model=MODEL, input=items)
            for item in resp.output:
                if item.type == "function_call":
                    items.append({"type": "function_call", "call_id": item.call_id, "name": item.name,
                                  "arguments": item.arguments})
                    items.append({"type": "function_call_output", "call_id": item.call_id, "output": "[]"})
    spans = sorted((s for s in telemetry.spans() if s.name.startswith("chat")), key=lambda s: s.start_time)
    ids = [s.attributes[sc.LLM_TOOL_CALL_IDS][0] for s in spans]
    # each call carries the previous call's result, by id, as a fingerprint (an empty list here)
    assert [r.split(" ")[2] for s in spans[1:] for r in s.attributes[sc.LLM_TOOL_RESULTS]] == ids[:-1]
    assert ["LOOP_DETECTED" in s.attributes.get(sc.ANOMALY_FLAGS, ()) for s in spans] == [False] * 3 + [True]
