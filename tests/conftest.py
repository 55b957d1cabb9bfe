"""Shared fixtures: a scripted local LLM server and real OpenAI / Anthropic clients pointed at it.

Every test gets a fresh server (start-up is a socket bind and a thread, about a millisecond),
so scripts, recorded requests and generated ids never leak between tests. Clients have
``max_retries=0`` and a short timeout so error and timeout tests fail fast; use
``client.with_options(max_retries=..., timeout=...)`` to change that per test.

No OpenTelemetry fixtures here: those live in ``tests/instrumentation/conftest.py``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentwatch.testing import LLMServer

CLIENT_TIMEOUT = 5.0
"""Seconds; long enough for any scripted reply that is not a deliberate delay."""

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def llm_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LLMServer]:
    """A started :class:`LLMServer`; closed (threads joined) after the test."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        # A proxy from the environment must not swallow loopback traffic to the server.
        for name in ("NO_PROXY", "no_proxy"):
            current = os.environ.get(name, "")
            monkeypatch.setenv(name, ",".join(filter(None, [current, "127.0.0.1", "localhost"])))
    with LLMServer() as server:
        yield server


@pytest.fixture
def openai_client(llm_server: LLMServer) -> Iterator[Any]:
    """``openai.OpenAI`` talking to ``llm_server``."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(
        base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    yield client
    client.close()


@pytest.fixture
async def async_openai_client(llm_server: LLMServer) -> AsyncIterator[Any]:
    """``openai.AsyncOpenAI`` talking to ``llm_server``."""
    openai = pytest.importorskip("openai")
    client = openai.AsyncOpenAI(
        base_url=llm_server.openai_base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    yield client
    await client.close()


@pytest.fixture
def anthropic_client(llm_server: LLMServer) -> Iterator[Any]:
    """``anthropic.Anthropic`` talking to ``llm_server``."""
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(
        base_url=llm_server.anthropic_base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    yield client
    client.close()


@pytest.fixture
async def async_anthropic_client(llm_server: LLMServer) -> AsyncIterator[Any]:
    """``anthropic.AsyncAnthropic`` talking to ``llm_server``."""
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.AsyncAnthropic(
        base_url=llm_server.anthropic_base_url, api_key="test", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    yield client
    await client.close()

@pytest.fixture
def restore_openai_classes() -> Iterator[None]:
    """Put every ``openai`` class attribute back as it was.

    The others' ``uninstrument()`` is not complete (OpenLLMetry 0.62 leaves a wrapper on
    ``Completions.create``; OpenInference leaves ``request`` set on ``OpenAI``), and a stale
    foreign wrapper would open spans on a provider no later test reads.
    """
    saved: dict[type, dict[str, Any]] = {}
    for cls in _openai_classes():
        saved[cls] = dict(vars(cls))
    yield
    for cls, before in saved.items():
        for attr, value in list(vars(cls).items()):
            if attr.startswith("__"):
                continue
            if attr not in before:
                delattr(cls, attr)
            elif before[attr] is not value:
                setattr(cls, attr, before[attr])


def _openai_classes() -> list[type]:
    classes = []
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "openai" or name.startswith("openai.")):
            continue
        for value in list(vars(module).values()):
            try:  # lazy proxies (openai's optional numpy) raise on any inspection
                is_class = isinstance(value, type) and value.__module__ == name
            except Exception:
                continue
            if is_class:
                classes.append(value)
    return classes


# The agentwatch telemetry fixture (fresh in-memory providers, instrumented) for every test directory.
from tests.telemetry import telemetry  # noqa: E402, F401
