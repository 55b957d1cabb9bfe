"""Recorded-shape API traffic for the fixture suite: a loopback server and independent readers.

``tests/fixtures/wire/<provider>/`` holds response bodies as the APIs send them:
``.json`` bodies and ``.sse`` event streams, written for this project in the
shapes of real OpenAI and Anthropic traffic. :class:`WireServer` serves a
fixture's bytes unchanged to the real clients; the ``expect_*`` readers parse
the same bytes with nothing but ``json``, so the span attributes they predict
do not come from agentwatch's own reading code.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from agentwatch.hashing import args_hash

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "wire"


@dataclass
class Fixture:
    name: str  # "<provider>/<file>"
    status: int = 200

    @property
    def path(self) -> Path:
        return FIXTURES / self.name

    @property
    def streamed(self) -> bool:
        return self.name.endswith(".sse")

    @property
    def body(self) -> bytes:
        return self.path.read_bytes()

    def events(self) -> list[dict[str, Any]]:
        """The ``data:`` payloads of an SSE fixture, in order (``[DONE]`` dropped)."""
        out = []
        for line in self.body.decode().splitlines():
            if line.startswith("data: ") and line[6:].strip() != "[DONE]":
                out.append(json.loads(line[6:]))
        return out

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class WireServer:
    """Serves one fixture's bytes to every POST; ``routes`` overrides it per path suffix."""

    fixture: Fixture
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                owner.requests.append((self.path, json.loads(raw) if raw else {}))
                status, body = owner.fixture.status, owner.fixture.body
                for suffix, (route_status, route_body) in owner.routes.items():
                    if self.path.split("?", 1)[0].endswith(suffix):
                        status, body = route_status, route_body
                streamed = body.startswith((b"data:", b"event:"))
                self.send_response(status)
                self.send_header("content-type", "text/event-stream; charset=utf-8" if streamed else "application/json")
                self.send_header("content-length", str(len(body)))
                self.send_header("x-request-id", "req_wire_fixture")
                self.send_header("request-id", "req_wire_fixture")
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


# --------------------------------------------------------------------------- expectations


@dataclass
class Expected:
    """What the LLM span must say about a response, read straight from the fixture bytes."""

    response_id: str | None = None
    model: str | None = None
    finish_reasons: tuple[str, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, parsed arguments)
    texts: dict[int, str] = field(default_factory=dict)  # choice index -> text (chat streams)

    @property
    def tool_call_hashes(self) -> tuple[str, ...]:
        return tuple(f"{name}:{args_hash(args)}" for name, args in self.tool_calls)


def _openai_usage(expected: Expected, usage: dict[str, Any] | None) -> None:
    if not usage:
        return
    if "prompt_tokens" in usage:
        expected.input_tokens = usage["prompt_tokens"]
        expected.output_tokens = usage.get("completion_tokens")
        details, out_details = usage.get("prompt_tokens_details"), usage.get("completion_tokens_details")
    else:
        expected.input_tokens = usage["input_tokens"]
        expected.output_tokens = usage.get("output_tokens")
        details, out_details = usage.get("input_tokens_details"), usage.get("output_tokens_details")
    if details and "cached_tokens" in details:
        expected.cache_read = details["cached_tokens"]
    if out_details and "reasoning_tokens" in out_details:
        expected.reasoning = out_details["reasoning_tokens"]


def expect_chat(fixture: Fixture) -> Expected:
    """Chat Completions or legacy Completions, JSON or streamed."""
    if not fixture.streamed:
        body = fixture.json()
        expected = Expected(body["id"], body["model"])
        _openai_usage(expected, body.get("usage"))
        for choice in body["choices"]:
            expected.finish_reasons += (choice["finish_reason"],)
            for tc in (choice.get("message") or {}).get("tool_calls") or ():
                expected.tool_calls.append((tc["function"]["name"], json.loads(tc["function"]["arguments"])))
        return expected
    chunks = fixture.events()
    expected = Expected(chunks[0]["id"], chunks[0]["model"])
    calls: dict[tuple[int, int], list[str]] = {}
    for chunk in chunks:
        _openai_usage(expected, chunk.get("usage"))
        for choice in chunk["choices"]:
            if choice.get("finish_reason"):
                expected.finish_reasons += (choice["finish_reason"],)
            delta = choice.get("delta") or {}
            if delta.get("content"):
                expected.texts[choice["index"]] = expected.texts.get(choice["index"], "") + delta["content"]
            for tc in delta.get("tool_calls") or ():
                slot = calls.setdefault((choice["index"], tc["index"]), ["", ""])
                slot[0] += (tc.get("function") or {}).get("name") or ""
                slot[1] += (tc.get("function") or {}).get("arguments") or ""
    expected.tool_calls = [(name, json.loads(args)) for name, args in calls.values()]
    return expected


def _responses_reason(response: dict[str, Any]) -> str:
    """The GenAI finish reason of a Responses object (the conventions' enum, as the peers record it)."""
    status = response["status"]
    if status == "completed":
        return "tool_call" if any(i["type"] == "function_call" for i in response["output"]) else "stop"
    if status == "incomplete":
        return {"max_output_tokens": "length", "content_filter": "content_filter"}[
            response["incomplete_details"]["reason"]
        ]
    return "error"


def expect_responses(fixture: Fixture) -> Expected:
    if fixture.streamed:
        terminal = ("response.completed", "response.incomplete", "response.failed")
        response = next(e["response"] for e in fixture.events() if e["type"] in terminal)
    else:
        response = fixture.json()
    expected = Expected(response["id"], response["model"], (_responses_reason(response),))
    _openai_usage(expected, response.get("usage"))
    for item in response["output"]:
        if item["type"] == "function_call":
            expected.tool_calls.append((item["name"], json.loads(item["arguments"])))
    return expected


def expect_messages(fixture: Fixture) -> Expected:
    """Anthropic Messages; ``input_tokens`` counts cache reads and writes too (GenAI rule)."""
    if fixture.streamed:
        events = fixture.events()
        start = events[0]["message"]
        expected = Expected(start["id"], start["model"])
        usage = dict(start["usage"])
        blocks: dict[int, list[Any]] = {}
        for event in events:
            if event["type"] == "content_block_start" and event["content_block"]["type"] == "tool_use":
                blocks[event["index"]] = [event["content_block"]["name"], ""]
            elif event["type"] == "content_block_delta" and event["delta"]["type"] == "input_json_delta":
                blocks[event["index"]][1] += event["delta"]["partial_json"]
            elif event["type"] == "message_delta":
                usage.update({k: v for k, v in event["usage"].items() if v is not None})
                if event["delta"].get("stop_reason"):
                    expected.finish_reasons = (event["delta"]["stop_reason"],)
        expected.tool_calls = [(name, json.loads(args or "{}")) for name, args in blocks.values()]
    else:
        body = fixture.json()
        expected = Expected(body["id"], body["model"], (body["stop_reason"],))
        usage = body["usage"]
        expected.tool_calls = [(b["name"], b["input"]) for b in body["content"] if b["type"] == "tool_use"]
    read = usage.get("cache_read_input_tokens")
    written = usage.get("cache_creation_input_tokens")
    expected.cache_read, expected.cache_write = read, written
    expected.input_tokens = usage["input_tokens"] + (read or 0) + (written or 0)
    expected.output_tokens = usage["output_tokens"]
    return expected


def dump(value: Any) -> Any:
    """What the user sees of a result, as plain data (pydantic models dumped, streams listed)."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value


def iterate(stream: Any) -> Iterator[Any]:
    yield from stream
