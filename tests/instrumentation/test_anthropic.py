"""The real ``anthropic`` client against the scripted server, with agentwatch instrumented."""

from __future__ import annotations

import gc
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import agentwatch
from agentwatch import semconv as sc
from agentwatch.hashing import args_hash
from agentwatch.testing import reply
from tests.telemetry import Telemetry

anthropic = pytest.importorskip("anthropic")

MODEL = "claude-sonnet-4-5"
MSGS = [{"role": "user", "content": "hello"}]
# Anthropic's input_tokens exclude cache reads and writes.
USAGE = {"input_tokens": 100, "output_tokens": 20, "cached_tokens": 300, "cache_creation_tokens": 50}
TOTAL_INPUT = 100 + 300 + 50
COST = (100 * 3 + 300 * 0.3 + 50 * 3.75 + 20 * 15) / 1e6
TOOLS = [{"name": "get_order", "description": "x", "input_schema": {"type": "object"}}]


def only(spans: list[Any]) -> Any:
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_messages_create(telemetry: Telemetry, llm_server: Any, anthropic_client: Any) -> None:
    llm_server.script(reply.text("hi", usage=USAGE))
    msg = anthropic_client.messages.create(
        model=MODEL, max_tokens=64, system="Be brief.", messages=MSGS
    )
    assert msg.content[0].text == "hi"
    span = only(telemetry.spans())
    attrs = span.attributes
    assert span.name == f"chat {MODEL}"
    assert span.kind is SpanKind.CLIENT
    assert attrs[sc.GEN_AI_PROVIDER_NAME] == "anthropic"
    assert attrs[sc.GEN_AI_REQUEST_MAX_TOKENS] == 64
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == TOTAL_INPUT
    assert attrs[sc.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 300
    assert attrs[sc.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 50
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 20
    assert attrs[sc.COST_USD] == pytest.approx(COST)
    # Outside agentwatch.run the call is an implicit run of its own (contract §8): drift fingerprints too.
    assert attrs[sc.RUN_IMPLICIT] is True and sc.LLM_SYSTEM_HASH in attrs


async def test_async_messages_create(telemetry: Telemetry, llm_server: Any, async_anthropic_client: Any) -> None:
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_555"}, usage=USAGE))
    msg = await async_anthropic_client.messages.create(model=MODEL, max_tokens=64, messages=MSGS, tools=TOOLS)
    assert msg.stop_reason == "tool_use"
    attrs = only(telemetry.spans()).attributes
    assert attrs[sc.LLM_TOOL_CALLS] == (f"get_order:{args_hash({'order_id': 'ord_555'})}",)
    assert attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_use",)
    assert attrs[sc.LLM_TOOLS_OFFERED] == ("get_order",)


def test_stream_true_with_tool_use(telemetry: Telemetry, llm_server: Any, anthropic_client: Any) -> None:
    args = {"order_id": "ord_555", "reason": "streamed in several input_json_delta pieces"}
    llm_server.script(reply.tool_call("get_order", args, usage=USAGE, chunk_size=5))
    events = list(anthropic_client.messages.create(model=MODEL, max_tokens=64, messages=MSGS, stream=True))
    assert events[-1].type == "message_stop"
    attrs = only(telemetry.spans()).attributes
    assert attrs[sc.LLM_TOOL_CALLS] == (f"get_order:{args_hash(args)}",)
    assert attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == TOTAL_INPUT
    assert attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 20
    assert attrs[sc.COST_USD] == pytest.approx(COST)


def test_stream_manager(telemetry: Telemetry, llm_server: Any, anthropic_client: Any) -> None:
    llm_server.script(reply.text("managed stream", usage=USAGE))
    with anthropic_client.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "managed stream" and final.usage.output_tokens == 20
    assert only(telemetry.spans()).attributes[sc.GEN_AI_USAGE_OUTPUT_TOKENS] == 20


async def test_async_stream_manager(telemetry: Telemetry, llm_server: Any, async_anthropic_client: Any) -> None:
    llm_server.script(reply.text("async managed", usage=USAGE))
    async with async_anthropic_client.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text == "async managed"
    assert only(telemetry.spans()).attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == TOTAL_INPUT


def test_stream_manager_early_exit(telemetry: Telemetry, llm_server: Any, anthropic_client: Any) -> None:
    llm_server.script(reply.text("a b c d e f g h i j", usage=USAGE))
    with anthropic_client.messages.stream(model=MODEL, max_tokens=64, messages=MSGS) as stream:
        for _event in stream:
            break
    gc.collect()
    span = only(telemetry.spans())
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == TOTAL_INPUT  # from message_start


def test_error_event_mid_stream(telemetry: Telemetry, llm_server: Any, anthropic_client: Any) -> None:
    llm_server.script(reply.stream_error(2, then=reply.text("one two three four")))
    with pytest.raises(anthropic.APIStatusError):
        for _ in anthropic_client.messages.create(model=MODEL, max_tokens=64, messages=MSGS, stream=True):
            pass
    span = only(telemetry.spans())
    assert span.status.status_code is StatusCode.ERROR
    assert sc.ERROR_TYPE in span.attributes


@pytest.mark.parametrize(("status", "name"), [(429, "RateLimitError"), (529, "OverloadedError"),
                                              (401, "AuthenticationError")])
def test_http_errors(telemetry: Telemetry, llm_server: Any, anthropic_client: Any, status: int, name: str) -> None:
    llm_server.script(reply.error(status))
    with pytest.raises(anthropic.APIStatusError) as caught:
        anthropic_client.messages.create(model=MODEL, max_tokens=64, messages=MSGS)
    span = only(telemetry.spans())
    assert span.attributes[sc.ERROR_TYPE] == f"anthropic.{type(caught.value).__qualname__}"
    if hasattr(anthropic, name):
        assert isinstance(caught.value, getattr(anthropic, name))


def test_run_totals_and_entities(telemetry: Telemetry, llm_server: Any, anthropic_client: Any) -> None:
    llm_server.script(
        reply.tool_call("get_order", {"order_id": "ord_555"}, usage=USAGE), reply.text("done", usage=USAGE)
    )

    @agentwatch.tool("get_order")
    def get_order(order_id: str) -> dict[str, str]:
        return {"order_id": order_id, "customer_id": "cust_012"}

    with agentwatch.run("support", entities={"customer": "cust_789"}):
        msg = anthropic_client.messages.create(model=MODEL, max_tokens=64, messages=MSGS, tools=TOOLS)
        block = next(b for b in msg.content if b.type == "tool_use")
        result = get_order(**block.input)
        anthropic_client.messages.create(
            model=MODEL, max_tokens=64, tools=TOOLS,
            messages=[*MSGS, {"role": "assistant", "content": [block.model_dump()]},
                      {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id,
                                                    "content": str(result)}]}],
        )
    (run_span,) = telemetry.runs()
    assert all(s.attributes[sc.LLM_USER_HASH] for s in telemetry.llm())
    assert run_span.attributes[sc.RUN_LLM_CALLS] == 2
    assert run_span.attributes[sc.RUN_TOOL_CALLS] == 1
    assert run_span.attributes[sc.RUN_COST_USD] == pytest.approx(2 * COST)
    (tool_span,) = telemetry.tools()
    assert tool_span.attributes[sc.GEN_AI_TOOL_CALL_ID] == block.id  # matched to the model's request
    flags = set(tool_span.attributes.get(sc.ANOMALY_FLAGS, ()))
    assert {"ENTITY_HALLUCINATION", "ENTITY_MISMATCH"} <= flags
    llm_first = min(telemetry.llm(), key=lambda s: s.start_time)
    assert "ENTITY_HALLUCINATION" in llm_first.attributes[sc.ANOMALY_FLAGS]
    assert run_span.attributes[sc.RUN_FAULT_ORIGIN_SPAN_ID] == format(llm_first.context.span_id, "016x")
    assert run_span.attributes[sc.RUN_FAILURE_MODE] == "bad_decision"


def test_captured_content_in_genai_shape(
    telemetry: Telemetry, llm_server: Any, anthropic_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv(sc.ENV_CAPTURE_CONTENT, "SPAN_ONLY")
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_1"}, text="Let me check."))
    anthropic_client.messages.create(model=MODEL, max_tokens=64, system="Be brief.", messages=MSGS, tools=TOOLS)
    attrs = only(telemetry.spans()).attributes
    assert json.loads(attrs[sc.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "Be brief."}]
    assert json.loads(attrs[sc.GEN_AI_INPUT_MESSAGES]) == [{"role": "user", "parts": [{"type": "text",
                                                                                        "content": "hello"}]}]
    (output,) = json.loads(attrs[sc.GEN_AI_OUTPUT_MESSAGES])
    assert output["finish_reason"] == "tool_use"
    assert output["parts"] == [
        {"type": "text", "content": "Let me check."},
        {"type": "tool_call", "id": output["parts"][1]["id"], "name": "get_order", "arguments": {"order_id": "ord_1"}},
    ]
