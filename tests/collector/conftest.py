from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agentwatch.collector import Collector

from .helpers import GrpcSink, HttpSink, start_collector


@pytest.fixture
def grpc_sink() -> Iterator[GrpcSink]:
    sink = GrpcSink()
    yield sink
    sink.stop()


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.stop()


@pytest.fixture
def collectors() -> Iterator[Callable[..., Collector]]:
    """Start collectors (127.0.0.1, ephemeral ports); all are shut down after the test."""
    started: list[Collector] = []

    def start(target: str, protocol: str = "grpc", **overrides: Any) -> Collector:
        collector = start_collector(target, protocol, **overrides)
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.shutdown(timeout=2)
