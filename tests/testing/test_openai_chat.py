"""The real ``openai`` client against the scripted server's Chat Completions endpoint."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentwatch.testing import LLMServer, ToolCall, Usage, reply

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "user", "content": "Where is my order ord_555?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
    }
]


def detail(usage: Any, group: str, name: str) -> Any:
    """A usage detail; clients older than the field keep it as a plain dict in the model's extras."""
    details = getattr(usage, group, None)
    if details is None:
        return None
    return details.get(name) if isinstance(details, dict) else getattr(details, name)


def stream_helper(client: Any) -> Any:
    """``chat.completions.stream`` (newer clients) or ``beta.chat.completions.stream`` (1.40-era)."""
    helper = getattr(client.chat.completions, "stream", None)
    return helper if helper is not None else client.beta.chat.completions.stream


def test_json_text_usage_and_headers(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.text("It shipped.", usage=Usage(120, 8, cached_tokens=100, reasoning_tokens=3)))
    raw = openai_client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    completion = raw.parse()

    assert raw.headers["x-request-id"].startswith("req_")
    assert raw.headers["content-type"] == "application/json"
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "It shipped."
    assert choice.message.tool_calls is None
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (120, 8, 128)
    assert detail(usage, "prompt_tokens_details", "cached_tokens") == 100
    assert detail(usage, "completion_tokens_details", "reasoning_tokens") == 3


def test_json_usage_details_absent_unless_scripted(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.text("ok", usage=Usage(10, 2)))
    usage = openai_client.chat.completions.create(model="m", messages=MESSAGES).usage
    assert getattr(usage, "prompt_tokens_details", None) is None
    assert getattr(usage, "completion_tokens_details", None) is None


def test_json_tool_calls(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(
        reply.tool_calls(
            ("get_order", {"id": "ord_555"}), ToolCall("get_customer", {"id": "c_1"}, id="call_x")
        )
    )
    completion = openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES, tools=TOOLS)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls
    assert [c.id for c in calls] == ["call_000001", "call_x"]
    assert [c.function.name for c in calls] == ["get_order", "get_customer"]
    assert json.loads(calls[0].function.arguments) == {"id": "ord_555"}
    assert llm_server.last_request.tool_names == ["get_order"]


def test_model_from_request_unless_scripted(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.text("a"), reply.text("b", model="gpt-4o-2024-08-06"))
    assert openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES).model == "gpt-4o"
    scripted = openai_client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert scripted.model == "gpt-4o-2024-08-06"


@pytest.mark.parametrize(("scripted", "expected"), [("length", "length"), ("max_tokens", "length")])
def test_stop_reason_mapping(llm_server: LLMServer, openai_client: Any, scripted: str, expected: str) -> None:
    llm_server.script(reply.text("trunc", stop_reason=scripted))
    completion = openai_client.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].finish_reason == expected


def test_stream_without_include_usage(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.text("Your order has shipped today.", usage=Usage(30, 6)))
    chunks = list(openai_client.chat.completions.create(model="m", messages=MESSAGES, stream=True))

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert all(len(chunk.choices) == 1 for chunk in chunks), "no usage-only chunk unless asked for"
    assert all(chunk.usage is None for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "Your order has shipped today."
    assert len(chunks) > 3, "text arrives in several deltas"
    assert [c.choices[0].finish_reason for c in chunks][-1] == "stop"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_stream_with_include_usage(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.text("Shipped.", usage=Usage(30, 6, cached_tokens=20, reasoning_tokens=2)))
    raw = openai_client.chat.completions.with_raw_response.create(
        model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    chunks = list(raw.parse())

    *content, last = chunks
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (30, 6, 36)
    assert detail(last.usage, "prompt_tokens_details", "cached_tokens") == 20
    assert detail(last.usage, "completion_tokens_details", "reasoning_tokens") == 2
    assert all(chunk.usage is None for chunk in content)
    assert content[-1].choices[0].finish_reason == "stop"


def test_stream_tool_call_deltas(llm_server: LLMServer, openai_client: Any) -> None:
    arguments = {"id": "ord_555", "fields": ["status", "eta"], "verbose": True}
    llm_server.script(reply.tool_calls(("get_order", arguments), ("get_customer", {"id": "c_1"})))
    chunks = list(
        openai_client.chat.completions.create(model="m", messages=MESSAGES, tools=TOOLS, stream=True)
    )

    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    first = [d for d in deltas if d.index == 0]
    assert first[0].id == "call_000001" and first[0].type == "function"
    assert first[0].function.name == "get_order"
    assert all(d.id is None and d.function.name is None for d in first[1:])
    assert len(first) > 3, "arguments are split across chunks"
    assert json.loads("".join(d.function.arguments or "" for d in first)) == arguments
    second = "".join(d.function.arguments or "" for d in deltas if d.index == 1)
    assert json.loads(second) == {"id": "c_1"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_stream_helper_final_completion(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(
        reply.tool_call("get_order", {"id": "ord_555"}, text="Checking.", usage=Usage(50, 12)),
    )
    with stream_helper(openai_client)(
        model="gpt-4o", messages=MESSAGES, tools=TOOLS, stream_options={"include_usage": True}
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()

    assert "tool_calls.function.arguments.done" in kinds
    message = final.choices[0].message
    assert message.content == "Checking."
    assert message.tool_calls[0].function.name == "get_order"
    assert json.loads(message.tool_calls[0].function.arguments) == {"id": "ord_555"}
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage.total_tokens == 62


def test_chunk_size_controls_deltas(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.text("abcdefghij", chunk_size=3))
    chunks = list(openai_client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert pieces == ["abc", "def", "ghi", "j"]


async def test_async_json_and_stream(llm_server: LLMServer, async_openai_client: Any) -> None:
    llm_server.script(
        reply.text("first"),
        reply.tool_call("get_order", {"id": "ord_555"}, usage=Usage(9, 4)),
    )
    completion = await async_openai_client.chat.completions.create(model="m", messages=MESSAGES)
    assert completion.choices[0].message.content == "first"

    stream = await async_openai_client.chat.completions.create(
        model="m", messages=MESSAGES, tools=TOOLS, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    arguments = "".join(
        tc.function.arguments or "" for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []
    )
    assert json.loads(arguments) == {"id": "ord_555"}
    assert chunks[-1].usage.total_tokens == 13


async def test_async_stream_helper(llm_server: LLMServer, async_openai_client: Any) -> None:
    llm_server.script(reply.text("Hello from the helper."))
    async with stream_helper(async_openai_client)(model="m", messages=MESSAGES) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    assert final.choices[0].message.content == "Hello from the helper."
