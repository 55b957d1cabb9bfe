"""The gateway tests' one fixture: instrument with a given ``agent:`` config, and clean up after."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

import agentwatch
from agentwatch import semconv as sc
from agentwatch.gateway.safe_mode import SWITCH
from tests.telemetry import Telemetry, make_telemetry


@pytest.fixture
def instrument(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[dict[str, Any]], Telemetry]]:
    """``instrument(agent)`` instruments with that ``agent:`` config; uninstruments and resets safe mode after."""
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    monkeypatch.delenv("AGENTWATCH_CONFIG", raising=False)

    def make(agent: dict[str, Any]) -> Telemetry:
        return make_telemetry(config={"agent": agent})

    yield make
    agentwatch.uninstrument()
    SWITCH.set(None)
    SWITCH.configure(False, None)


@pytest.fixture
def gateway(instrument: Callable[[dict[str, Any]], Telemetry]) -> Callable[[dict[str, Any]], Telemetry]:
    return instrument
