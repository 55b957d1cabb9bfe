"""Stream proxies have exactly the protocols of the stream they wrap, and nothing more."""

from __future__ import annotations

from typing import Any

import pytest

from agentwatch.instrumentation import _stainless
from agentwatch.testing import reply
from tests.telemetry import Telemetry

openai = pytest.importorskip("openai")
MSGS = [{"role": "user", "content": "hi"}]


def test_a_sync_stream_gains_no_async_protocols(
    telemetry: Telemetry, llm_server: Any, openai_client: Any
) -> None:
    llm_server.script(reply.text("hello there"))
    stream = openai_client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
    bare = openai.Stream
    for name in ("__aenter__", "__aexit__", "__aiter__", "__anext__"):
        assert hasattr(stream, name) is hasattr(bare, name), name
    assert isinstance(stream, openai.Stream)

    async def use() -> None:
        async with stream:  # type: ignore[attr-defined]
            pass

    with pytest.raises(TypeError):  # as without agentwatch: not an async context manager
        import asyncio

        asyncio.run(use())
    with stream:
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "hello there"
    assert len(telemetry.llm()) == 1


async def test_an_async_stream_gains_no_sync_protocols(
    telemetry: Telemetry, llm_server: Any, async_openai_client: Any
) -> None:
    llm_server.script(reply.text("hello there"))
    stream = await async_openai_client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
    bare = openai.AsyncStream
    for name in ("__enter__", "__exit__", "__iter__", "__next__"):
        assert hasattr(stream, name) is hasattr(bare, name), name
    with pytest.raises(TypeError), stream:  # type: ignore[attr-defined]
        pass
    with pytest.raises(TypeError):
        iter(stream)
    async with stream:
        chunks = [c async for c in stream]
    assert chunks
    assert len(telemetry.llm()) == 1


def test_the_default_port_of_the_scheme_is_recorded() -> None:
    """``server.port`` is required whenever ``server.address`` is set; a URL leaves 443 out."""
    client = openai.OpenAI(api_key="test", base_url="https://api.openai.com/v1")
    assert _stainless._server(client) == ("api.openai.com", 443)
    plain = openai.OpenAI(api_key="test", base_url="http://llm.internal/v1")
    assert _stainless._server(plain) == ("llm.internal", 80)
    client.close()
    plain.close()
