"""Captured content in the GenAI conventions' message shape, shared by every provider.

A message is ``{"role", "parts": [...]}`` (plus ``finish_reason`` on output);
parts are ``text``, ``tool_call`` and ``tool_call_response``, with any other
part kept by its type only. Providers convert their own formats with these
builders, so ``gen_ai.input.messages`` reads the same for OpenAI and Anthropic.
"""

from __future__ import annotations

from typing import Any

from ..hashing import parse_arguments

Message = dict[str, Any]

# The event that carries content in EVENT_ONLY / SPAN_AND_EVENT modes (GenAI conventions).
CONTENT_EVENT = "gen_ai.client.inference.operation.details"


def plain_text(content: Any) -> str:
    """The text of a message's content, in any provider's shape: a string, or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                value = part.get("text")
                if isinstance(value, str):
                    parts.append(value)
            elif isinstance(part, str):
                parts.append(part)
        return "\n".join(parts)
    return ""


def text(content: str) -> dict[str, Any]:
    return {"type": "text", "content": content}


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "tool_call", "name": name, "arguments": parse_arguments(arguments)}
    if call_id:
        part["id"] = call_id
    return part


def tool_response(call_id: Any, response: Any) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "tool_call_response", "response": response}
    if call_id:
        part["id"] = call_id
    return part


def reasoning(content: str) -> dict[str, Any]:
    """The model's reasoning (its summary where the provider only returns that)."""
    return {"type": "reasoning", "content": content}


def other(kind: Any) -> dict[str, Any]:
    """A part agentwatch does not copy (images, audio, files): only its type is kept."""
    return {"type": str(kind or "unknown")}


def message(role: Any, parts: list[dict[str, Any]], finish_reason: Any = None) -> Message:
    out: Message = {"role": str(role or "user"), "parts": parts}
    if finish_reason:
        out["finish_reason"] = str(finish_reason)
    return out


def assistant_output(text_content: str | None, calls: list[tuple[str, Any, str | None]],
                     finish_reason: str | None) -> list[Message]:
    """The output message of a streamed call, from accumulated text and tool calls."""
    parts = [text(text_content)] if text_content else []
    parts.extend(tool_call(call_id, name, args) for name, args, call_id in calls)
    return [message("assistant", parts, finish_reason)]
