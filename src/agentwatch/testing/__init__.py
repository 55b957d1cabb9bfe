"""Offline testing tools: a scripted local LLM server speaking the OpenAI and Anthropic APIs.

Use it to test your own agents without an API key or network: point the real ``openai``
or ``anthropic`` client at :class:`LLMServer`, script the model's turns (text, tool calls,
token usage, HTTP errors, timeouts, broken streams) with :mod:`~agentwatch.testing.reply`,
and assert on the requests your agent sent::

    import anthropic
    from agentwatch.testing import LLMServer, reply

    with LLMServer() as llm:
        llm.script(reply.tool_call("get_order", {"id": "ord_555"}), reply.text("It shipped."))
        client = anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="test")
        run_my_agent(client)
        assert llm.requests[1].tool_results[0].call_id == "toolu_000001"

The same script serves OpenAI Chat Completions (``/v1/chat/completions``), OpenAI
Responses (``/v1/responses``) and Anthropic Messages (``/v1/messages``), JSON or streamed.
Standard library only, so it adds no dependency.
"""

from . import reply
from .reply import (
    Answer,
    CutStream,
    Delayed,
    Disconnect,
    ErrorReply,
    Malformed,
    Responder,
    ScriptedReply,
    ScriptItem,
    StreamError,
    ToolCall,
    Usage,
)
from .request import Endpoint, RecordedRequest, ToolResult
from .server import LLMServer

__all__ = [
    "Answer",
    "CutStream",
    "Delayed",
    "Disconnect",
    "Endpoint",
    "ErrorReply",
    "LLMServer",
    "Malformed",
    "RecordedRequest",
    "Responder",
    "ScriptItem",
    "ScriptedReply",
    "StreamError",
    "ToolCall",
    "ToolResult",
    "Usage",
    "reply",
]
