"""Scripting, request recording, HTTP/1.1 behaviour and lifecycle of the scripted LLM server."""

from __future__ import annotations

import http.client
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from agentwatch.testing import Answer, LLMServer, RecordedRequest, ScriptedReply, reply

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def post(server: LLMServer, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[Any, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", path, payload, {"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("llm-server:")]


# -- scripting --------------------------------------------------------------------------------


def test_base_urls(llm_server: LLMServer) -> None:
    assert llm_server.url == f"http://127.0.0.1:{llm_server.port}"
    assert llm_server.openai_base_url == llm_server.url + "/v1"
    assert llm_server.anthropic_base_url == llm_server.url


def test_script_is_consumed_in_order_across_apis(
    llm_server: LLMServer, openai_client: Any, anthropic_client: Any
) -> None:
    llm_server.script(reply.text("first"), reply.text("second"), reply.text("third"))
    assert llm_server.pending == 3
    assert openai_client.chat.completions.create(**CHAT).choices[0].message.content == "first"
    message = anthropic_client.messages.create(model="c", max_tokens=5, messages=CHAT["messages"])
    assert message.content[0].text == "second"
    assert openai_client.chat.completions.create(**CHAT).choices[0].message.content == "third"
    assert llm_server.pending == 0


def test_default_echoes_last_user_message(llm_server: LLMServer, openai_client: Any) -> None:
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": [{"type": "text", "text": "follow-up"}]},
    ]
    completion = openai_client.chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content == "follow-up"


def test_configurable_default(openai_client: Any, llm_server: LLMServer) -> None:
    llm_server.default = reply.text("always this")
    assert openai_client.chat.completions.create(**CHAT).choices[0].message.content == "always this"
    llm_server.default = lambda request: reply.text(f"model was {request.model}")
    assert openai_client.chat.completions.create(**CHAT).choices[0].message.content == "model was gpt-4o"
    with LLMServer(default=reply.error(503)) as other:
        conn_response, _ = post(other, "/v1/chat/completions", CHAT)
        assert conn_response.status == 503


def test_scripting_function_in_queue_is_one_shot(llm_server: LLMServer, openai_client: Any) -> None:
    seen: list[RecordedRequest] = []

    def once(request: RecordedRequest) -> ScriptedReply:
        seen.append(request)
        return reply.text(f"saw {len(request.messages)} messages")

    llm_server.script(once, reply.text("next"))
    assert openai_client.chat.completions.create(**CHAT).choices[0].message.content == "saw 1 messages"
    assert openai_client.chat.completions.create(**CHAT).choices[0].message.content == "next"
    assert len(seen) == 1 and seen[0].endpoint == "chat.completions"


def test_script_rejects_non_replies(llm_server: LLMServer) -> None:
    with pytest.raises(TypeError):
        llm_server.script("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        llm_server.default = 42  # type: ignore[assignment]
    with pytest.raises(ValueError):
        reply.tool_calls()


def agent_script(request: RecordedRequest) -> Answer:
    """A deterministic 'model' for an order-status agent, driven by the conversation state."""
    if not request.tool_results:
        return reply.tool_call("get_order", {"id": "ord_555"})
    return reply.text(f"Order status: {request.tool_results[-1].content}")


def test_scripting_function_drives_openai_chat_agent(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.default = agent_script
    messages: list[Any] = [{"role": "user", "content": "Where is ord_555?"}]
    first = openai_client.chat.completions.create(model="m", messages=messages).choices[0].message
    call = first.tool_calls[0]
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "shipped"},
    ]
    second = openai_client.chat.completions.create(model="m", messages=messages).choices[0].message
    assert second.content == "Order status: shipped"
    assert llm_server.requests[1].tool_results[0].call_id == "call_000001"


def test_scripting_function_drives_responses_agent(llm_server: LLMServer, openai_client: Any) -> None:
    if not hasattr(openai_client, "responses"):
        pytest.skip("this openai client has no Responses API")
    llm_server.default = agent_script
    first = openai_client.responses.create(model="m", input="Where is ord_555?")
    call = first.output[0]
    follow_up = [
        {"role": "user", "content": "Where is ord_555?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "in transit"},
    ]
    second = openai_client.responses.create(model="m", input=follow_up)
    assert second.output_text == "Order status: in transit"


def test_scripting_function_drives_anthropic_agent(llm_server: LLMServer, anthropic_client: Any) -> None:
    llm_server.default = agent_script
    messages: list[Any] = [{"role": "user", "content": "Where is ord_555?"}]
    first = anthropic_client.messages.create(model="c", max_tokens=100, messages=messages)
    tool_use = first.content[0]
    messages += [
        {"role": "assistant", "content": [tool_use.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": tool_use.id,
                    "content": [{"type": "text", "text": "lost"}],
                }
            ],
        },
    ]
    second = anthropic_client.messages.create(model="c", max_tokens=100, messages=messages)
    assert second.content[0].text == "Order status: lost"
    assert llm_server.last_request.tool_results[0].call_id == "toolu_000001"


def test_failing_scripting_function_is_reported(llm_server: LLMServer, openai_client: Any) -> None:
    openai = pytest.importorskip("openai")

    def broken(request: RecordedRequest) -> Answer:
        raise RuntimeError("script bug")

    llm_server.script(broken)
    with pytest.raises(openai.InternalServerError, match="script bug"):
        openai_client.chat.completions.create(**CHAT)
    assert [type(e) for e in llm_server.errors] == [RuntimeError]


# -- recording --------------------------------------------------------------------------------


def test_requests_are_recorded(llm_server: LLMServer, openai_client: Any, anthropic_client: Any) -> None:
    openai_client.chat.completions.create(**CHAT, temperature=0.2)
    anthropic_client.messages.create(
        model="claude", max_tokens=7, system="be nice", messages=CHAT["messages"]
    )

    chat, messages = llm_server.requests
    assert (chat.method, chat.path, chat.endpoint) == ("POST", "/v1/chat/completions", "chat.completions")
    assert chat.body["temperature"] == 0.2 and chat.model == "gpt-4o" and chat.stream is False
    assert chat.header("Authorization") == "Bearer test"
    assert json.loads(chat.raw_body) == chat.body
    assert (messages.path, messages.endpoint, messages.body["system"]) == (
        "/v1/messages",
        "messages",
        "be nice",
    )
    assert messages.last_user_text == "hi"
    assert llm_server.last_request is messages


def test_reset_forgets_everything(llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.tool_call("a"), reply.text("unused"))
    llm_server.default = reply.text("custom")
    openai_client.chat.completions.create(**CHAT)
    llm_server.reset()
    assert (llm_server.pending, llm_server.requests, llm_server.errors) == (0, [], [])
    with pytest.raises(LookupError):
        _ = llm_server.last_request
    llm_server.script(reply.tool_call("b"))
    completion = openai_client.chat.completions.create(**CHAT)
    assert completion.choices[0].message.tool_calls[0].id == "call_000001", "ids restart"
    assert openai_client.chat.completions.create(**CHAT).choices[0].message.content == "hi", "echo is back"


def test_concurrent_requests_each_get_one_reply(llm_server: LLMServer, openai_client: Any) -> None:
    texts = [f"reply {i}" for i in range(20)]
    llm_server.script(*(reply.text(t) for t in texts))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda _: openai_client.chat.completions.create(**CHAT).choices[0].message.content, range(20)
            )
        )
    assert sorted(results) == sorted(texts)
    assert len(llm_server.requests) == 20


# -- HTTP behaviour ---------------------------------------------------------------------------


def test_json_reply_headers(llm_server: LLMServer) -> None:
    response, body = post(llm_server, "/v1/chat/completions", CHAT)
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert int(response.getheader("Content-Length")) == len(body)
    assert response.getheader("x-request-id") == response.getheader("request-id") == "req_000001"
    assert json.loads(body)["object"] == "chat.completion"


def test_scripted_response_headers(llm_server: LLMServer, anthropic_client: Any) -> None:
    limits = {"anthropic-ratelimit-tokens-remaining": "9000"}
    llm_server.script(reply.text("ok", headers=limits), reply.text("ok", headers=limits))
    raw = anthropic_client.messages.with_raw_response.create(
        model="c", max_tokens=5, messages=CHAT["messages"]
    )
    assert raw.headers["anthropic-ratelimit-tokens-remaining"] == "9000"
    response, _ = post(llm_server, "/v1/messages", {**CHAT, "max_tokens": 5, "stream": True})
    assert response.getheader("anthropic-ratelimit-tokens-remaining") == "9000"


def test_sse_reply_is_chunked(llm_server: LLMServer) -> None:
    response, body = post(llm_server, "/v1/chat/completions", {**CHAT, "stream": True})
    assert response.getheader("Content-Type").startswith("text/event-stream")
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.getheader("Content-Length") is None
    events = body.decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(e.startswith("data: ") for e in events[:-1])


def test_keep_alive_reuses_one_connection(llm_server: LLMServer) -> None:
    llm_server.script(reply.text("a"), reply.text("b"), reply.text("c"))
    conn = http.client.HTTPConnection("127.0.0.1", llm_server.port, timeout=5)
    try:
        bodies, sockets = [], []
        for stream in (False, True, False):
            conn.request("POST", "/v1/chat/completions", json.dumps({**CHAT, "stream": stream}))
            response = conn.getresponse()
            bodies.append(response.read())
            assert not response.will_close
            sockets.append(conn.sock)
    finally:
        conn.close()
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3, "one connection served all three"
    assert b'"content":"a"' in bodies[0] and b"[DONE]" in bodies[1] and b'"content":"c"' in bodies[2]


def test_chunked_request_body(llm_server: LLMServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", llm_server.port, timeout=5)
    try:
        conn.request("POST", "/v1/chat/completions", iter([json.dumps(CHAT).encode()]), encode_chunked=True)
        assert conn.getresponse().status == 200
    finally:
        conn.close()
    assert llm_server.last_request.body == CHAT


def test_unknown_path_and_bad_body(llm_server: LLMServer) -> None:
    response, body = post(llm_server, "/v1/embeddings", {"model": "m", "input": "x"})
    assert response.status == 404 and json.loads(body)["error"]["type"] == "invalid_request_error"
    response, body = post(llm_server, "/v1/complete", {}, {"anthropic-version": "2023-06-01"})
    assert response.status == 404 and json.loads(body)["error"]["type"] == "not_found_error"
    response, body = post(llm_server, "/v1/messages", b"{not json")
    assert response.status == 400 and json.loads(body)["type"] == "error"
    assert llm_server.pending == 0 and len(llm_server.requests) == 3


def test_event_delay_paces_the_stream(llm_server: LLMServer) -> None:
    llm_server.script(reply.text("a b c", event_delay=0.02))
    started = time.monotonic()
    post(llm_server, "/v1/chat/completions", {**CHAT, "stream": True})
    assert time.monotonic() - started >= 0.02 * 5  # role, three words, finish, [DONE]


# -- lifecycle --------------------------------------------------------------------------------


def test_close_joins_threads_and_is_idempotent() -> None:
    before = set(server_threads())
    server = LLMServer().start()
    post(server, "/v1/chat/completions", CHAT)
    assert set(server_threads()) - before
    server.close()
    server.close()
    assert set(server_threads()) <= before


def test_close_interrupts_pending_delay() -> None:
    server = LLMServer().start()
    server.script(reply.delay(30))
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    conn.request("POST", "/v1/chat/completions", json.dumps(CHAT))
    time.sleep(0.1)  # the handler is now waiting
    started = time.monotonic()
    server.close()
    assert time.monotonic() - started < 2
    with pytest.raises((http.client.HTTPException, OSError)):
        conn.getresponse()
    conn.close()


def test_close_drops_idle_keep_alive_connections() -> None:
    with LLMServer() as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        conn.request("POST", "/v1/chat/completions", json.dumps(CHAT))
        conn.getresponse().read()  # the connection stays open, its handler waits for more
    conn.close()
    assert not [t for t in server_threads() if str(server.port) in t.name]


def test_start_twice_is_an_error() -> None:
    with LLMServer() as server, pytest.raises(RuntimeError):
        server.start()
    with pytest.raises(RuntimeError):
        _ = LLMServer().url
