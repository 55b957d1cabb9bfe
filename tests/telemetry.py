"""Telemetry for tests: real SDK providers with in-memory span and metric readers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentwatch
from agentwatch import semconv as sc


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    provider: TracerProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith(prefix)]

    def llm(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if (s.attributes or {}).get(sc.GEN_AI_OPERATION_NAME) in sc.LLM_OPERATIONS]

    def tools(self) -> list[ReadableSpan]:
        return self.named("execute_tool")

    def runs(self) -> list[ReadableSpan]:
        return self.named("invoke_agent")

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


def make_telemetry(config: Any = None) -> Telemetry:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    agentwatch.instrument(tracer_provider=provider, meter_provider=meters, config=config)
    return Telemetry(exporter, reader, provider)


@pytest.fixture
def telemetry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    """agentwatch instrumented onto fresh in-memory providers; content capture off."""
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    monkeypatch.delenv("AGENTWATCH_CONFIG", raising=False)
    tel = make_telemetry()
    yield tel
    agentwatch.uninstrument()
