"""What the scripted server records about each request, with protocol-neutral accessors.

Scripting functions and test assertions read the same object, so a demo agent can be
driven by conversation state (``request.tool_results``) whichever client API it uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Endpoint", "RecordedRequest", "ToolResult", "endpoint_for"]

Endpoint = Literal["chat.completions", "responses", "messages"]
"""Which provider API a request hit: OpenAI Chat Completions, OpenAI Responses, Anthropic Messages."""

_ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat.completions",
    "/v1/responses": "responses",
    "/v1/messages": "messages",
}


def endpoint_for(path: str) -> Endpoint | None:
    """The API served at ``path`` (query string excluded), or ``None`` if none is."""
    return _ROUTES.get(path.rstrip("/"))


@dataclass(frozen=True)
class ToolResult:
    """A tool's output the client sent back to the model, in any of the three APIs."""

    call_id: str
    content: str


def _text_of(content: Any) -> str:
    """Join the text parts of a message content in any of the three APIs' shapes."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, Mapping) and part.get("type") in ("text", "input_text", "output_text")
        ]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server received it.

    ``headers`` has lower-cased names; ``body`` is the parsed JSON (``None`` if the body was
    empty or not JSON; ``raw_body`` keeps the bytes).
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any
    raw_body: bytes = field(repr=False)
    received_at: float = 0.0

    @property
    def endpoint(self) -> Endpoint | None:
        """The API this request hit, or ``None`` for an unknown path."""
        return endpoint_for(self.path)

    def header(self, name: str) -> str | None:
        """A header value, looked up case-insensitively."""
        return self.headers.get(name.lower())

    @property
    def model(self) -> str | None:
        """The ``model`` the client asked for."""
        model = self._get("model")
        return model if isinstance(model, str) else None

    @property
    def stream(self) -> bool:
        """Whether the client asked for a server-sent-event stream."""
        return self._get("stream") is True

    @property
    def messages(self) -> list[Any]:
        """The conversation: ``messages`` (chat, Anthropic) or the ``input`` items (Responses)."""
        if self.endpoint == "responses":
            items = self._get("input")
            if isinstance(items, str):
                return [{"role": "user", "content": items}]
            return list(items) if isinstance(items, list) else []
        messages = self._get("messages")
        return list(messages) if isinstance(messages, list) else []

    @property
    def last_user_text(self) -> str:
        """Text of the latest user message that has any (tool results are skipped)."""
        for message in reversed(self.messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                text = _text_of(message.get("content"))
                if text:
                    return text
        return ""

    @property
    def tool_results(self) -> list[ToolResult]:
        """Tool outputs in the conversation, oldest first."""
        results: list[ToolResult] = []
        for message in self.messages:
            if not isinstance(message, Mapping):
                continue
            if message.get("role") == "tool":  # chat completions
                results.append(
                    ToolResult(str(message.get("tool_call_id", "")), _text_of(message.get("content")))
                )
            elif message.get("type") == "function_call_output":  # responses
                output = message.get("output")
                results.append(ToolResult(str(message.get("call_id", "")), _text_of(output)))
            elif message.get("role") == "user" and isinstance(message.get("content"), list):  # anthropic
                for block in message["content"]:
                    if isinstance(block, Mapping) and block.get("type") == "tool_result":
                        results.append(
                            ToolResult(str(block.get("tool_use_id", "")), _text_of(block.get("content")))
                        )
        return results

    @property
    def tool_names(self) -> list[str]:
        """Names of the function tools the client offered the model."""
        tools = self._get("tools")
        names: list[str] = []
        for tool in tools if isinstance(tools, list) else []:
            if not isinstance(tool, Mapping):
                continue
            function = tool.get("function")
            name = function.get("name") if isinstance(function, Mapping) else tool.get("name")
            if isinstance(name, str):
                names.append(name)
        return names

    def _get(self, key: str) -> Any:
        return self.body.get(key) if isinstance(self.body, Mapping) else None
