"""The real ``openai`` client against the scripted server's Responses endpoint.

Skipped, by feature detection, on clients that predate the Responses API.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agentwatch.testing import LLMServer, Usage, reply

openai = pytest.importorskip("openai")

TOOLS = [{"type": "function", "name": "get_order", "parameters": {"type": "object", "properties": {}}}]


@pytest.fixture(autouse=True)
def _needs_responses(openai_client: Any) -> None:
    if not hasattr(openai_client, "responses"):
        pytest.skip("this openai client has no Responses API")


def test_json_text_and_function_call(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(
        reply.tool_call(
            "get_order",
            {"id": "ord_555"},
            text="Let me look that up.",
            usage=Usage(200, 20, cached_tokens=150, reasoning_tokens=5),
        )
    )
    response = openai_client.responses.create(
        model="gpt-4.1", input="Where is ord_555?", tools=TOOLS, instructions="Be brief."
    )

    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "gpt-4.1"
    assert response.instructions == "Be brief."
    message, call = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text == "Let me look that up."
    assert call.type == "function_call"
    assert (call.name, call.call_id, call.id) == ("get_order", "call_000001", "fc_000001")
    assert json.loads(call.arguments) == {"id": "ord_555"}
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (200, 20, 220)
    assert usage.input_tokens_details.cached_tokens == 150
    assert usage.output_tokens_details.reasoning_tokens == 5
    assert llm_server.last_request.endpoint == "responses"
    assert llm_server.last_request.last_user_text == "Where is ord_555?"


def test_length_stop_is_incomplete(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.text("cut sh", stop_reason="length"), reply.text("cut sh", stop_reason="length"))
    response = openai_client.responses.create(model="m", input="hi")
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    events = list(openai_client.responses.create(model="m", input="hi", stream=True))
    assert events[-1].type == "response.incomplete"


def test_stream_event_sequence(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(
        reply.tool_call("get_order", {"id": "ord_555"}, text="Checking now.", usage=Usage(40, 9))
    )
    raw = openai_client.responses.with_raw_response.create(model="m", input="hi", tools=TOOLS, stream=True)
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = list(raw.parse())

    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    arg_deltas = kinds.count("response.function_call_arguments.delta")
    assert deltas >= 2 and arg_deltas >= 2
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        *["response.function_call_arguments.delta"] * arg_deltas,
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[0].response.status == "in_progress" and events[0].response.usage is None
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Checking now."
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(arguments) == {"id": "ord_555"}
    completed = events[-1].response
    assert completed.status == "completed"
    assert completed.usage.total_tokens == 49


def test_stream_sends_event_lines(llm_server: LLMServer) -> None:
    """The wire carries ``event:`` lines matching each payload's ``type``, as the real API does."""
    import http.client

    llm_server.script(reply.text("hi"))
    conn = http.client.HTTPConnection("127.0.0.1", llm_server.port, timeout=5)
    conn.request("POST", "/v1/responses", json.dumps({"model": "m", "input": "x", "stream": True}))
    body = conn.getresponse().read().decode()
    conn.close()
    blocks = [b for b in body.split("\n\n") if b]
    assert blocks and all(b.startswith("event: ") for b in blocks)
    for block in blocks:
        event_line, data_line = block.split("\n")
        assert json.loads(data_line.removeprefix("data: "))["type"] == event_line.removeprefix("event: ")


def test_stream_helper_final_response(llm_server: LLMServer, openai_client: Any) -> None:
    if not hasattr(openai_client.responses, "stream"):
        pytest.skip("this openai client has no responses.stream helper")
    llm_server.script(reply.tool_calls(("get_order", {"id": "a"}), ("get_order", {"id": "b"}), text="Both."))
    with openai_client.responses.stream(model="m", input="hi", tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "Both."
    calls = [item for item in final.output if item.type == "function_call"]
    assert [json.loads(c.arguments) for c in calls] == [{"id": "a"}, {"id": "b"}]
    assert [c.call_id for c in calls] == ["call_000001", "call_000002"]


async def test_async_stream(llm_server: LLMServer, async_openai_client: Any) -> None:
    llm_server.script(reply.text("async hello", usage=Usage(3, 2)))
    stream = await async_openai_client.responses.create(model="m", input="hi", stream=True)
    events = [event async for event in stream]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "async hello"
    assert events[-1].response.usage.total_tokens == 5
