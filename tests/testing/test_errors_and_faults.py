"""Scripted HTTP errors and transport faults surface as each real client's own exceptions."""

from __future__ import annotations

import importlib
import json
import time
from typing import Any

import pytest

from agentwatch.testing import ErrorReply, LLMServer, reply

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES = {"model": "claude", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def transport_errors(client: Any, api_connection_error: type[Exception]) -> tuple[type[Exception], ...]:
    """The client's connection error, plus its HTTP library's (some clients let those escape streams)."""
    library = next(c.__module__ for c in type(client._client).__mro__ if c.__module__.startswith("httpx"))
    return (api_connection_error, importlib.import_module(library.split(".")[0]).TransportError)


def anthropic_stream(client: Any) -> Any:
    with client.messages.stream(**MESSAGES) as stream:
        return stream.get_final_message()


@pytest.mark.parametrize(
    ("status", "openai_error", "anthropic_error"),
    [
        (400, "BadRequestError", "BadRequestError"),
        (401, "AuthenticationError", "AuthenticationError"),
        (403, "PermissionDeniedError", "PermissionDeniedError"),
        (429, "RateLimitError", "RateLimitError"),
        (500, "InternalServerError", "InternalServerError"),
        (529, "InternalServerError", "OverloadedError"),
    ],
)
def test_status_errors(
    llm_server: LLMServer,
    openai_client: Any,
    anthropic_client: Any,
    status: int,
    openai_error: str,
    anthropic_error: str,
) -> None:
    llm_server.script(reply.error(status), reply.error(status), reply.error(status))

    with pytest.raises(getattr(openai, openai_error)) as openai_raised:
        openai_client.chat.completions.create(**CHAT)
    assert openai_raised.value.status_code == status
    body = openai_raised.value.body
    assert set(body) == {"message", "type", "param", "code"}  # the client unwraps {"error": ...}

    # Older anthropic releases have no OverloadedError: 529 is then a plain InternalServerError.
    expected = getattr(anthropic, anthropic_error, anthropic.InternalServerError)
    with pytest.raises(expected) as anthropic_raised:
        anthropic_client.messages.create(**MESSAGES)
    assert anthropic_raised.value.status_code == status
    assert anthropic_raised.value.body["type"] == "error"
    assert anthropic_raised.value.body["error"]["type"]
    assert anthropic_raised.value.response.headers["request-id"].startswith("req_")

    # Errors come back as HTTP statuses even when a stream was asked for.
    with pytest.raises(getattr(openai, openai_error)):
        openai_client.chat.completions.create(**CHAT, stream=True)


def test_rate_limit_shapes_and_retry_after(
    llm_server: LLMServer, openai_client: Any, anthropic_client: Any
) -> None:
    llm_server.script(reply.error(429), reply.error(429, retry_after=7, code="insufficient_quota"))
    with pytest.raises(openai.RateLimitError) as default:
        openai_client.chat.completions.create(**CHAT)
    assert default.value.response.headers["retry-after"] == "1"
    assert default.value.body["code"] == "rate_limit_exceeded"
    with pytest.raises(anthropic.RateLimitError) as scripted:
        anthropic_client.messages.create(**MESSAGES)
    assert scripted.value.response.headers["retry-after"] == "7"
    assert scripted.value.body["error"] == {
        "type": "insufficient_quota",
        "message": "Number of requests has exceeded your rate limit.",
    }


def test_client_retries_then_succeeds(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(
        reply.error(429, retry_after=0.01), reply.error(500, retry_after=0.01), reply.text("third time")
    )
    client = openai_client.with_options(max_retries=2)
    completion = client.chat.completions.create(**CHAT)
    assert completion.choices[0].message.content == "third time"
    assert len(llm_server.requests) == 3
    retry_counts = [r.header("x-stainless-retry-count") for r in llm_server.requests]
    assert retry_counts in (["0", "1", "2"], [None, None, None])  # older clients do not send it


def test_timeout(llm_server: LLMServer, openai_client: Any, anthropic_client: Any) -> None:
    llm_server.script(reply.delay(5.0, then=reply.text("too late")), reply.delay(5.0))
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        openai_client.with_options(timeout=0.1).chat.completions.create(**CHAT)
    with pytest.raises(anthropic.APITimeoutError):
        anthropic_client.with_options(timeout=0.1).messages.create(**MESSAGES)
    assert time.monotonic() - started < 2.0


def test_delay_then_answers(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.delay(0.1, then=reply.text("patience")))
    started = time.monotonic()
    completion = openai_client.chat.completions.create(**CHAT)
    assert time.monotonic() - started >= 0.1
    assert completion.choices[0].message.content == "patience"


async def test_async_timeout(llm_server: LLMServer, async_anthropic_client: Any) -> None:
    llm_server.script(reply.delay(5.0))
    with pytest.raises(anthropic.APITimeoutError):
        await async_anthropic_client.with_options(timeout=0.1).messages.create(**MESSAGES)


def test_openai_stream_cut(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.cut_after(3, then=reply.text("one two three four five six")))
    received = []
    with pytest.raises(transport_errors(openai_client, openai.APIConnectionError)):
        for chunk in openai_client.chat.completions.create(**CHAT, stream=True):
            received.append(chunk)
    assert len(received) == 3
    # The connection pool recovers: the next request is served normally.
    assert openai_client.chat.completions.create(**CHAT).choices[0].message.content == "hi"


def test_anthropic_stream_cut(llm_server: LLMServer, anthropic_client: Any) -> None:
    llm_server.script(reply.cut_after(4, then=reply.tool_call("get_order", {"id": "ord_555"})))
    with pytest.raises(transport_errors(anthropic_client, anthropic.APIConnectionError)):
        anthropic_stream(anthropic_client)


def test_responses_stream_cut(llm_server: LLMServer, openai_client: Any) -> None:
    if not hasattr(openai_client, "responses"):
        pytest.skip("this openai client has no Responses API")
    llm_server.script(reply.cut_after(5))
    with pytest.raises(transport_errors(openai_client, openai.APIConnectionError)):
        list(openai_client.responses.create(model="m", input="hi", stream=True))


def test_json_body_cut(llm_server: LLMServer, openai_client: Any, anthropic_client: Any) -> None:
    llm_server.script(reply.cut_after(20), reply.cut_after(20))
    with pytest.raises(openai.APIConnectionError):
        openai_client.chat.completions.create(**CHAT)
    with pytest.raises(anthropic.APIConnectionError):
        anthropic_client.messages.create(**MESSAGES)


def test_disconnect(llm_server: LLMServer, openai_client: Any, anthropic_client: Any) -> None:
    llm_server.script(reply.disconnect(), reply.disconnect())
    with pytest.raises(openai.APIConnectionError):
        openai_client.chat.completions.create(**CHAT)
    with pytest.raises(anthropic.APIConnectionError):
        anthropic_client.messages.create(**MESSAGES)


def test_anthropic_error_event_mid_stream(llm_server: LLMServer, anthropic_client: Any) -> None:
    llm_server.script(reply.stream_error(3, then=reply.text("one two three four")))
    with pytest.raises(anthropic.APIStatusError) as raised:
        anthropic_stream(anthropic_client)
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


async def test_async_anthropic_error_event(llm_server: LLMServer, async_anthropic_client: Any) -> None:
    llm_server.script(reply.stream_error(2, error=ErrorReply(500, "boom")))
    with pytest.raises(anthropic.APIStatusError) as raised:
        async with async_anthropic_client.messages.stream(**MESSAGES) as stream:
            await stream.get_final_message()
    assert raised.value.body["error"] == {"type": "api_error", "message": "boom"}


def test_openai_error_event_mid_stream(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.stream_error(2, error=500))
    received = []
    with pytest.raises(openai.APIError) as raised:
        for chunk in openai_client.chat.completions.create(**CHAT, stream=True):
            received.append(chunk)
    assert len(received) == 2
    assert raised.value.body["type"] == "server_error"


def test_responses_error_event_mid_stream(llm_server: LLMServer, openai_client: Any) -> None:
    if not hasattr(openai_client, "responses"):
        pytest.skip("this openai client has no Responses API")
    llm_server.script(reply.stream_error(3, error=ErrorReply(500, "The model failed.", code="server_error")))
    # The client hands the Responses `error` event to the caller rather than raising.
    events = list(openai_client.responses.create(model="m", input="hi", stream=True))
    assert [e.type for e in events][:3] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
    ]
    error = events[-1]
    assert error.type == "error"
    assert (error.code, error.message, error.sequence_number) == ("server_error", "The model failed.", 3)


def test_stream_error_on_plain_request_is_http_error(llm_server: LLMServer, anthropic_client: Any) -> None:
    llm_server.script(reply.stream_error(2))
    with pytest.raises(anthropic.APIStatusError) as raised:
        anthropic_client.messages.create(**MESSAGES)
    assert raised.value.status_code == 529


def test_malformed_json(llm_server: LLMServer, openai_client: Any, anthropic_client: Any) -> None:
    llm_server.script(reply.malformed(), reply.malformed(), reply.malformed("not json at all"))
    with pytest.raises((ValueError, openai.APIResponseValidationError)):
        openai_client.chat.completions.create(**CHAT)
    with pytest.raises((ValueError, anthropic.APIResponseValidationError)):
        anthropic_client.messages.create(**MESSAGES)
    raw = openai_client.chat.completions.with_raw_response.create(**CHAT)
    assert raw.http_response.text == "not json at all"


def test_malformed_stream_event(llm_server: LLMServer, openai_client: Any, anthropic_client: Any) -> None:
    llm_server.script(reply.malformed(), reply.malformed())
    with pytest.raises(ValueError):
        list(openai_client.chat.completions.create(**CHAT, stream=True))
    with pytest.raises(ValueError):
        anthropic_stream(anthropic_client)


def test_malformed_tool_arguments_reach_the_client(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.tool_call("get_order", '{"id": "ord_5'))
    call = openai_client.chat.completions.create(**CHAT).choices[0].message.tool_calls[0]
    assert call.function.arguments == '{"id": "ord_5'
    with pytest.raises(ValueError):
        json.loads(call.function.arguments)
