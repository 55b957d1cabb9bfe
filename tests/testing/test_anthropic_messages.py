"""The real ``anthropic`` client against the scripted server's Messages endpoint."""

from __future__ import annotations

from typing import Any

import pytest

from agentwatch.testing import LLMServer, Usage, reply

anthropic = pytest.importorskip("anthropic")

MESSAGES = [{"role": "user", "content": "Where is my order ord_555?"}]
TOOLS = [{"name": "get_order", "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}}}]


def create(client: Any, **kwargs: Any) -> Any:
    return client.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES, **kwargs)


def test_json_text_and_tool_use(llm_server: LLMServer, anthropic_client: Any) -> None:
    llm_server.script(
        reply.tool_call(
            "get_order",
            {"id": "ord_555"},
            text="Let me check.",
            usage=Usage(80, 25, cached_tokens=1000, cache_creation_tokens=300),
        )
    )
    raw = anthropic_client.messages.with_raw_response.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=MESSAGES, tools=TOOLS
    )
    message = raw.parse()

    assert raw.headers["request-id"].startswith("req_")
    assert message.type == "message" and message.role == "assistant"
    assert message.model == "claude-sonnet-4-5"
    assert message.stop_reason == "tool_use"
    text, tool_use = message.content
    assert (text.type, text.text) == ("text", "Let me check.")
    assert (tool_use.type, tool_use.id, tool_use.name) == ("tool_use", "toolu_000001", "get_order")
    assert tool_use.input == {"id": "ord_555"}
    usage = message.usage
    assert (usage.input_tokens, usage.output_tokens) == (80, 25)
    assert usage.cache_read_input_tokens == 1000
    assert usage.cache_creation_input_tokens == 300
    sent = llm_server.last_request
    assert sent.header("anthropic-version")
    assert "test" in (sent.header("x-api-key") or sent.header("authorization") or "")
    assert llm_server.last_request.tool_names == ["get_order"]


def test_stop_reason_mapping(llm_server: LLMServer, anthropic_client: Any) -> None:
    llm_server.script(
        reply.text("a"), reply.text("b", stop_reason="length"), reply.text("c", stop_reason="refusal")
    )
    assert [create(anthropic_client).stop_reason for _ in range(3)] == ["end_turn", "max_tokens", "refusal"]


def test_stream_event_sequence(llm_server: LLMServer, anthropic_client: Any) -> None:
    llm_server.script(reply.tool_call("get_order", {"id": "ord_555", "verbose": True}, text="Checking."))
    raw = anthropic_client.messages.with_raw_response.create(
        model="m", max_tokens=10, messages=MESSAGES, tools=TOOLS, stream=True
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = list(raw.parse())

    kinds = [e.type for e in events]  # the client drops `ping` events
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
    text_deltas = [
        e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"
    ]
    json_deltas = [
        e.delta.partial_json
        for e in events
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert "".join(text_deltas) == "Checking."
    assert len(json_deltas) > 2, "tool input arrives in several partial_json pieces"
    assert "".join(json_deltas) == '{"id":"ord_555","verbose":true}'
    tool_start = [e for e in events if e.type == "content_block_start"][1]
    assert tool_start.index == 1 and tool_start.content_block.input == {}
    assert events[-2].delta.stop_reason == "tool_use"


def test_stream_sends_ping(llm_server: LLMServer) -> None:
    import http.client
    import json

    llm_server.script(reply.text("hi"))
    conn = http.client.HTTPConnection("127.0.0.1", llm_server.port, timeout=5)
    body = {"model": "m", "max_tokens": 5, "messages": MESSAGES, "stream": True}
    conn.request("POST", "/v1/messages", json.dumps(body), {"anthropic-version": "2023-06-01"})
    text = conn.getresponse().read().decode()
    conn.close()
    names = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_stream_manager_final_message(llm_server: LLMServer, anthropic_client: Any) -> None:
    llm_server.script(
        reply.tool_calls(
            ("get_order", {"id": "ord_555"}),
            ("get_customer", {"id": "c_1", "fields": ["email"]}),
            text="Looking up both.",
            usage=Usage(60, 30, cached_tokens=500, cache_creation_tokens=0),
        )
    )
    with anthropic_client.messages.stream(
        model="m", max_tokens=100, messages=MESSAGES, tools=TOOLS
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == "Looking up both."
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert final.content[1].input == {"id": "ord_555"}
    assert final.content[2].input == {"id": "c_1", "fields": ["email"]}
    assert [b.id for b in final.content[1:]] == ["toolu_000001", "toolu_000002"]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (60, 30)
    assert final.usage.cache_read_input_tokens == 500
    assert final.usage.cache_creation_input_tokens == 0


async def test_async_json_and_stream(llm_server: LLMServer, async_anthropic_client: Any) -> None:
    llm_server.script(reply.text("one"), reply.tool_call("get_order", {"id": "ord_9"}, usage=Usage(7, 3)))
    message = await async_anthropic_client.messages.create(model="m", max_tokens=10, messages=MESSAGES)
    assert message.content[0].text == "one"

    async with async_anthropic_client.messages.stream(
        model="m", max_tokens=10, messages=MESSAGES, tools=TOOLS
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "tool_use"
    assert final.content[0].input == {"id": "ord_9"}
    assert final.usage.output_tokens == 3
