"""Recorded-shape API traffic through the real clients, with and without agentwatch.

Every fixture in ``tests/fixtures/wire`` is served byte for byte from a loopback
server to the real ``openai``/``anthropic`` client, through each way of calling
it (plain, ``with_raw_response``, ``with_streaming_response``, sync and async).
The user must see exactly the same result with agentwatch as without it, and the
one LLM span must carry the id, model, finish reasons, tokens, cost and
requested tool calls read independently from the fixture bytes (``wire.py``).
An SDK too old for an API (the Responses API before openai 1.66) skips cleanly.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

import agentwatch
from agentwatch import semconv as sc
from agentwatch.pricing import PriceTable
from tests.instrumentation.wire import (
    Expected,
    Fixture,
    WireServer,
    dump,
    expect_chat,
    expect_messages,
    expect_responses,
)
from tests.telemetry import make_telemetry

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

USER = [{"role": "user", "content": "Where is order ord_4471? I am cus_9982."}]


@dataclass
class Case:
    fixture: Fixture
    api: str  # chat | completions | responses | messages
    request: dict[str, Any] = field(default_factory=dict)
    expect: Callable[[Fixture], Expected] | None = None

    @property
    def id(self) -> str:
        return self.fixture.name.split("/", 1)[1].rsplit(".", 1)[0]

    @property
    def provider(self) -> str:
        return self.fixture.name.split("/", 1)[0]

    @property
    def error(self) -> bool:
        return self.fixture.status >= 400 or "error" in self.fixture.name

    def kwargs(self) -> dict[str, Any]:
        base: dict[str, Any]
        if self.api == "chat":
            base = {"model": "gpt-4o", "messages": USER}
        elif self.api == "completions":
            base = {"model": "gpt-3.5-turbo-instruct", "prompt": "When does my order ship?", "max_tokens": 16}
        elif self.api == "responses":
            base = {"model": "o4-mini", "input": USER, "instructions": "You are a support agent."}
        else:
            base = {"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": USER}
        base.update(self.request)
        if self.fixture.streamed:
            base["stream"] = True
        return base


CASES = [
    Case(Fixture("openai/chat_parallel_tool_calls.json"), "chat", expect=expect_chat),
    Case(Fixture("openai/chat_stream_usage.sse"), "chat", {"stream_options": {"include_usage": True}}, expect_chat),
    Case(Fixture("openai/chat_stream_n2.sse"), "chat",
         {"n": 2, "max_tokens": 5, "stream_options": {"include_usage": True}}, expect_chat),
    Case(Fixture("openai/chat_stream_tool_calls.sse"), "chat", {}, expect_chat),
    Case(Fixture("openai/chat_rate_limited_429.json", status=429), "chat"),
    Case(Fixture("openai/completions_legacy.json"), "completions", expect=expect_chat),
    Case(Fixture("openai/responses_reasoning_function_calls.json"), "responses", expect=expect_responses),
    Case(Fixture("openai/responses_incomplete_max_tokens.json"), "responses", {"max_output_tokens": 64},
         expect_responses),
    Case(Fixture("openai/responses_stream_function_call.sse"), "responses", expect=expect_responses),
    Case(Fixture("anthropic/messages_thinking_tool_use_cache_write.json"), "messages",
         {"thinking": {"type": "enabled", "budget_tokens": 512}}, expect_messages),
    Case(Fixture("anthropic/messages_stream_thinking_cache_read.sse"), "messages",
         {"thinking": {"type": "enabled", "budget_tokens": 512}}, expect_messages),
    Case(Fixture("anthropic/messages_stream_tool_use.sse"), "messages", expect=expect_messages),
    Case(Fixture("anthropic/messages_stream_overloaded_error.sse"), "messages", expect=expect_messages),
    Case(Fixture("anthropic/messages_overloaded_529.json", status=529), "messages"),
]
MODES = ["create", "raw", "streaming", "async_create", "async_raw", "async_streaming"]


def _client(case: Case, server: WireServer, is_async: bool) -> Any:
    if case.provider == "openai":
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        return cls(base_url=server.openai_base_url, api_key="test", max_retries=0, timeout=5)
    cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
    return cls(base_url=server.anthropic_base_url, api_key="test", max_retries=0, timeout=5)


def _resource(client: Any, api: str) -> Any:
    if api == "chat":
        return client.chat.completions
    if api == "responses":
        if not hasattr(client, "responses"):
            pytest.skip("this openai client has no Responses API")
        return client.responses
    return client.completions if api == "completions" else client.messages


def _supported(resource: Any, kwargs: dict[str, Any]) -> None:
    """Skip a request this SDK version cannot make (anthropic 0.40 has no ``thinking`` parameter)."""
    accepted = inspect.signature(resource.create).parameters
    missing = [key for key in kwargs if key not in accepted]
    if missing:
        pytest.skip(f"this client's create() has no {', '.join(missing)}")


def _raised(exc: BaseException) -> tuple[str, Any, str]:
    return (type(exc).__name__, getattr(exc, "status_code", None), str(exc))


def _call_sync(case: Case, server: WireServer, mode: str) -> Any:
    client = _client(case, server, False)
    resource = _resource(client, case.api)
    kwargs = case.kwargs()
    streamed = case.fixture.streamed
    try:
        _supported(resource, kwargs)
        if mode == "create":
            result = resource.create(**kwargs)
            return dump(list(result)) if streamed else dump(result)
        if mode == "raw":
            raw = resource.with_raw_response.create(**kwargs)
            parsed = raw.parse()
            return dump(list(parsed)) if streamed else dump(parsed)
        with resource.with_streaming_response.create(**kwargs) as response:
            parsed = response.parse()
            return dump(list(parsed)) if streamed else dump(parsed)
    except Exception as exc:
        return _raised(exc)
    finally:
        client.close()


async def _call_async(case: Case, server: WireServer, mode: str) -> Any:
    client = _client(case, server, True)
    resource = _resource(client, case.api)
    kwargs = case.kwargs()
    streamed = case.fixture.streamed
    try:
        _supported(resource, kwargs)
        if mode == "async_create":
            result = await resource.create(**kwargs)
            return dump([c async for c in result]) if streamed else dump(result)
        if mode == "async_raw":
            raw = await resource.with_raw_response.create(**kwargs)
            parsed = raw.parse()  # the legacy raw response parses synchronously, newer async ones do not
            if inspect.isawaitable(parsed):
                parsed = await parsed
            return dump([c async for c in parsed]) if streamed else dump(parsed)
        async with resource.with_streaming_response.create(**kwargs) as response:
            parsed = await response.parse()
            return dump([c async for c in parsed]) if streamed else dump(parsed)
    except Exception as exc:
        return _raised(exc)
    finally:
        await client.close()


def _call(case: Case, server: WireServer, mode: str) -> Any:
    if mode.startswith("async_"):
        return asyncio.run(_call_async(case, server, mode))
    return _call_sync(case, server, mode)


def check_span(span: Any, expected: Expected, port: int) -> None:
    """The span says what the fixture bytes say: nothing missing, nothing invented."""
    attrs = dict(span.attributes)
    assert attrs[sc.SERVER_ADDRESS] == "127.0.0.1"
    assert attrs[sc.SERVER_PORT] == port
    assert attrs.get(sc.GEN_AI_RESPONSE_ID) == expected.response_id
    assert attrs.get(sc.GEN_AI_RESPONSE_MODEL) == expected.model
    assert attrs.get(sc.GEN_AI_RESPONSE_FINISH_REASONS, ()) == expected.finish_reasons
    assert attrs.get(sc.GEN_AI_USAGE_INPUT_TOKENS) == expected.input_tokens
    assert attrs.get(sc.GEN_AI_USAGE_OUTPUT_TOKENS) == expected.output_tokens
    assert attrs.get(sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS) == expected.cache_read
    assert attrs.get(sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS) == expected.cache_write
    if expected.reasoning is not None:
        assert attrs[sc.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == expected.reasoning
    assert attrs.get(sc.LLM_TOOL_CALLS, ()) == expected.tool_call_hashes
    cost = PriceTable().cost(
        expected.model, expected.input_tokens, expected.output_tokens, expected.cache_read, expected.cache_write
    )
    if cost is None:
        assert sc.COST_USD not in attrs
    else:
        assert attrs[sc.COST_USD] == pytest.approx(cost)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_fixture_through_the_real_client(case: Case, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    monkeypatch.delenv("AGENTWATCH_CONFIG", raising=False)
    server = WireServer(case.fixture)
    try:
        agentwatch.uninstrument()
        bare = _call(case, server, mode)
        telemetry = make_telemetry()
        try:
            seen = _call(case, server, mode)
        finally:
            agentwatch.uninstrument()
    finally:
        server.close()

    assert seen == bare  # the user sees exactly what they see without agentwatch
    spans = telemetry.llm()
    assert len(spans) == 1, [s.name for s in telemetry.spans()]
    (span,) = spans
    assert span.end_time is not None
    if case.error:
        assert isinstance(seen, tuple)  # the call raised, with and without agentwatch
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes[sc.ERROR_TYPE].endswith(seen[0])
    else:
        assert span.status.status_code is not StatusCode.ERROR
    if case.expect is not None:
        check_span(span, case.expect(case.fixture), server.port)


# --------------------------------------------------------------------------- captured content


def _captured(case: Case, mode: str, monkeypatch: pytest.MonkeyPatch, **request: Any) -> dict[str, Any]:
    """Run a fixture with content capture on; the LLM span's input and output messages, parsed."""
    monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, "SPAN_ONLY")
    monkeypatch.delenv("AGENTWATCH_CONFIG", raising=False)
    case.request.update(request)
    server = WireServer(case.fixture)
    agentwatch.uninstrument()
    telemetry = make_telemetry()
    try:
        _call(case, server, mode)
    finally:
        agentwatch.uninstrument()
        server.close()
    (span,) = telemetry.llm()
    return {
        key: json.loads(span.attributes[attr])
        for key, attr in (("input", sc.GEN_AI_INPUT_MESSAGES), ("output", sc.GEN_AI_OUTPUT_MESSAGES))
        if attr in span.attributes
    }


def test_each_streamed_choice_is_its_own_output_message(monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case(Fixture("openai/chat_stream_n2.sse"), "chat", {"n": 2})
    expected = expect_chat(case.fixture)
    out = _captured(case, "create", monkeypatch)["output"]
    assert [m["parts"] for m in out] == [[{"type": "text", "content": expected.texts[i]}] for i in (0, 1)]
    assert [m["finish_reason"] for m in out] == ["stop", "length"]


@pytest.mark.parametrize("mode", ["create", "streaming"])
def test_a_responses_turn_is_one_assistant_message_with_reasoning_and_calls(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = Case(Fixture("openai/responses_reasoning_function_calls.json"), "responses")
    body = case.fixture.json()
    out = _captured(case, mode, monkeypatch)["output"]
    summary = body["output"][0]["summary"][0]["text"]
    assert out == [{
        "role": "assistant",
        "parts": [
            {"type": "reasoning", "content": summary},
            {"type": "tool_call", "name": "get_order", "arguments": {"order_id": "ord_4471"},
             "id": body["output"][1]["call_id"]},
            {"type": "tool_call", "name": "get_customer", "arguments": {"customer_id": "cus_9982"},
             "id": body["output"][2]["call_id"]},
        ],
        "finish_reason": "tool_call",
    }]


def test_reasoning_items_in_the_input_are_not_empty_user_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent sends the previous turn back: reasoning, the call, its output (the Agents SDK does)."""
    case = Case(Fixture("openai/responses_incomplete_max_tokens.json"), "responses")
    previous = Fixture("openai/responses_reasoning_function_calls.json").json()["output"]
    history = [
        USER[0],
        {"type": "reasoning", "id": previous[0]["id"], "summary": previous[0]["summary"]},
        {k: previous[1][k] for k in ("type", "call_id", "name", "arguments")},
        {"type": "function_call_output", "call_id": previous[1]["call_id"], "output": '{"status": "shipped"}'},
    ]
    captured = _captured(case, "create", monkeypatch, input=history)
    assert [m["role"] for m in captured["input"]] == ["user", "assistant", "tool"]
    assert [p["type"] for p in captured["input"][1]["parts"]] == ["reasoning", "tool_call"]
    (out,) = captured["output"]
    assert out["finish_reason"] == "length"  # incomplete: max_output_tokens


def test_legacy_completions_have_output_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case(Fixture("openai/completions_legacy.json"), "completions")
    choice = case.fixture.json()["choices"][0]
    out = _captured(case, "create", monkeypatch)["output"]
    text = {"type": "text", "content": choice["text"]}
    assert out == [{"role": "assistant", "parts": [text], "finish_reason": "stop"}]


def test_a_stream_broken_off_still_says_why_its_output_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case(Fixture("anthropic/messages_stream_overloaded_error.sse"), "messages")
    (out,) = _captured(case, "create", monkeypatch)["output"]
    assert out["parts"] == [{"type": "text", "content": "The refund policy allows"}]
    assert out["finish_reason"] == "error"


def test_anthropic_thinking_is_a_reasoning_part(monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case(Fixture("anthropic/messages_thinking_tool_use_cache_write.json"), "messages")
    body = case.fixture.json()
    (out,) = _captured(case, "create", monkeypatch)["output"]
    assert out["parts"][0] == {"type": "reasoning", "content": body["content"][0]["thinking"]}
    assert out["finish_reason"] == "tool_use"


def test_streamed_anthropic_thinking_is_a_reasoning_part(monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case(Fixture("anthropic/messages_stream_thinking_cache_read.sse"), "messages")
    deltas = [e["delta"] for e in case.fixture.events() if e["type"] == "content_block_delta"]
    thinking = "".join(d["thinking"] for d in deltas if d["type"] == "thinking_delta")
    text = "".join(d["text"] for d in deltas if d["type"] == "text_delta")
    (out,) = _captured(case, "create", monkeypatch)["output"]
    assert out["parts"] == [{"type": "reasoning", "content": thinking}, {"type": "text", "content": text}]
    assert out["finish_reason"] == "end_turn"


@pytest.mark.parametrize("mode", ["streaming", "raw", "async_streaming"])
def test_an_enforced_cost_budget_fires_behind_the_streaming_wrappers(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Agents SDK's ``run_streamed`` path: the streamed call's cost counts before the next call."""
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    case = Case(Fixture("openai/chat_stream_usage.sse"), "chat")
    expected = expect_chat(case.fixture)
    cost = PriceTable().cost(expected.model, expected.input_tokens, expected.output_tokens, expected.cache_read)
    assert cost is not None
    server = WireServer(case.fixture)
    agentwatch.uninstrument()
    telemetry = make_telemetry()
    try:
        with agentwatch.run("support", budget=agentwatch.Budget(max_usd=cost / 2, enforce=True)):
            first = _call(case, server, mode)
            second = _call(case, server, mode)  # over budget after the first: never sent
    finally:
        agentwatch.uninstrument()
        server.close()
    assert isinstance(first, list)
    assert second[0] == "BudgetExceeded"
    assert len(server.requests) == 1
    (span,) = telemetry.llm()
    assert span.attributes[sc.COST_USD] == pytest.approx(cost)


@pytest.mark.parametrize("opt_in", ["", "http,gen_ai_latest_experimental"])
def test_latest_genai_names_on_opt_in(opt_in: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_SEMCONV_STABILITY_OPT_IN=gen_ai_latest_experimental``: cache writes under their new name."""
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    monkeypatch.setenv(sc.ENV_SEMCONV_OPT_IN, opt_in)
    case = Case(Fixture("anthropic/messages_thinking_tool_use_cache_write.json"), "messages")
    written = case.fixture.json()["usage"]["cache_creation_input_tokens"]
    server = WireServer(case.fixture)
    agentwatch.uninstrument()
    telemetry = make_telemetry()
    try:
        _call(case, server, "create")
    finally:
        agentwatch.uninstrument()
        server.close()
    (span,) = telemetry.llm()
    new, old = sc.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS, sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
    expected, absent = (new, old) if opt_in else (old, new)
    assert span.attributes[expected] == written
    assert absent not in span.attributes
