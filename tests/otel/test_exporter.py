"""AnomalyExporter: holds spans until their local root arrives, tags them, never loses one."""

from __future__ import annotations

import importlib.metadata
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext, TraceFlags

from agentwatch import semconv as sc
from agentwatch.engine.record import Finding
from agentwatch.otel.exporter import AnomalyExporter, otlp_exporter_from_env
from agentwatch.otel.reporting import AnomalyContext
from tests.otel.helpers import memory_provider, metric_points

RUN_ATTRS = {sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "support"}
TOOL_ATTRS = {
    sc.GEN_AI_OPERATION_NAME: "execute_tool",
    sc.GEN_AI_TOOL_NAME: "get_order",
    sc.TOOL_ARGS_HASH: "a" * 16,
    sc.TOOL_RESULT_HASH: "r" * 16,
}


class Recorder(SpanExporter):
    """A delegate that keeps every batch and answers what it is told to."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.batches: list[list[ReadableSpan]] = []
        self.result = result
        self.shut = False
        self.flushed = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(list(spans))
        return self.result

    def shutdown(self) -> None:
        self.shut = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushed += 1
        return True

    @property
    def spans(self) -> list[ReadableSpan]:
        return [s for batch in self.batches for s in batch]

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]


def flags(span: ReadableSpan) -> tuple[str, ...]:
    value: Any = (span.attributes or {}).get(sc.ANOMALY_FLAGS, ())
    return tuple(value)


def hex_id(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.span_id, "016x")


def finished_run(loops: int = 3, *, with_run: bool = True) -> list[ReadableSpan]:
    """A finished trace in end order (children first), made through the real tracer."""
    provider, exporter = memory_provider()
    tracer = provider.get_tracer("test")
    if with_run:
        with tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
            for _ in range(loops):
                with tracer.start_as_current_span("execute_tool get_order", attributes=TOOL_ATTRS):
                    pass
    else:
        for _ in range(loops):
            with tracer.start_as_current_span("execute_tool get_order", attributes=TOOL_ATTRS):
                pass
    return list(exporter.get_finished_spans())


@pytest.fixture
def delegate() -> Recorder:
    return Recorder()


def test_spans_are_held_until_the_run_arrives_then_tagged(delegate: Recorder) -> None:
    seen: list[tuple[Finding, AnomalyContext]] = []
    reader = InMemoryMetricReader()
    exporter = AnomalyExporter(
        delegate,
        on_anomaly=lambda f, c: seen.append((f, c)),
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
        for _ in range(3):
            with tracer.start_as_current_span("execute_tool get_order", attributes=TOOL_ATTRS):
                pass
        assert delegate.spans == []  # three ended children, all held
        assert exporter.stats["spans_held_now"] == 3
    assert len(delegate.spans) == 4
    tools = delegate.named("execute_tool get_order")
    assert [flags(t) for t in tools] == [(), (), ("LOOP_DETECTED",)]
    (run,) = delegate.named("invoke_agent support")
    attrs = run.attributes or {}
    assert attrs[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED",)
    assert attrs[sc.RUN_FAULT_ORIGIN_SPAN_ID] == hex_id(tools[0])  # the loop's first call: its evidence
    assert attrs[sc.RUN_FAILURE_MODE] == "cost_blowup"
    ((finding, context),) = seen
    assert (finding.flag, context.span_id, context.agent_name) == (
        "LOOP_DETECTED",
        hex_id(tools[2]),
        "support",
    )
    (point,) = metric_points(reader, sc.METRIC_ANOMALIES)
    assert point.value == 1
    assert exporter.stats["spans_held_now"] == 0
    provider.shutdown()
    assert delegate.shut


def test_a_run_split_across_batches(delegate: Recorder) -> None:
    spans = finished_run()
    exporter = AnomalyExporter(delegate)
    assert exporter.export(spans[:2]) is SpanExportResult.SUCCESS
    assert delegate.batches == []
    exporter.export(spans[2:])
    assert len(delegate.spans) == 4
    assert [flags(s) for s in delegate.named("execute_tool get_order")] == [(), (), ("LOOP_DETECTED",)]


def test_root_first_order_is_handled_too(delegate: Recorder) -> None:
    spans = finished_run()
    exporter = AnomalyExporter(delegate)
    exporter.export(list(reversed(spans)))
    tools = sorted(delegate.named("execute_tool get_order"), key=lambda s: s.start_time or 0)
    assert [flags(s) for s in tools] == [(), (), ("LOOP_DETECTED",)]


def test_export_returns_the_delegates_result() -> None:
    failing = Recorder(SpanExportResult.FAILURE)
    exporter = AnomalyExporter(failing)
    assert exporter.export(finished_run()) is SpanExportResult.FAILURE
    assert len(failing.spans) == 4


def test_local_roots_without_a_run_span_are_evaluated_when_they_arrive(delegate: Recorder) -> None:
    provider, memory = memory_provider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("POST /chat"):
        for _ in range(3):
            with tracer.start_as_current_span("execute_tool get_order", attributes=TOOL_ATTRS):
                pass
    exporter = AnomalyExporter(delegate)
    exporter.export(memory.get_finished_spans())
    assert [flags(s) for s in delegate.named("execute_tool get_order")] == [(), (), ("LOOP_DETECTED",)]
    assert sc.RUN_ANOMALY_FLAGS not in (delegate.named("POST /chat")[0].attributes or {})


def test_stragglers_are_released_after_the_deadline_evaluated_as_far_as_they_go(delegate: Recorder) -> None:
    spans = finished_run(loops=3)
    children, run = spans[:3], spans[3]
    exporter = AnomalyExporter(delegate, straggler_seconds=0.05)
    exporter.export(children)
    assert delegate.spans == []
    time.sleep(0.08)
    exporter.export([])  # any later export checks the deadline
    # the run has not arrived, but its children meet in one provisional run: the loop is found
    assert [flags(s) for s in delegate.spans] == [(), (), ("LOOP_DETECTED",)]
    assert exporter.stats["traces_expired"] == 1
    # the run span, arriving late, still counts the children released early
    exporter.export([run])
    (late_run,) = delegate.named("invoke_agent support")
    assert (late_run.attributes or {})[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED",)
    assert (late_run.attributes or {})[sc.RUN_ANOMALY_COUNT] == 1
    assert len(delegate.spans) == 4


def test_force_flush_releases_held_spans_and_keeps_their_records(delegate: Recorder) -> None:
    spans = finished_run(loops=3)
    exporter = AnomalyExporter(delegate)
    exporter.export(spans[:3])
    assert exporter.force_flush() is True
    assert [flags(s) for s in delegate.spans] == [(), (), ("LOOP_DETECTED",)]
    assert delegate.flushed == 1
    exporter.export(spans[3:])
    (run,) = delegate.named("invoke_agent support")
    assert (run.attributes or {})[sc.RUN_ANOMALY_COUNT] == 1


def test_shutdown_flushes_everything_held(delegate: Recorder) -> None:
    exporter = AnomalyExporter(delegate)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    run = tracer.start_span("invoke_agent support", attributes=RUN_ATTRS)
    from opentelemetry import trace

    with trace.use_span(run, end_on_exit=False):
        for _ in range(3):
            with tracer.start_as_current_span("execute_tool get_order", attributes=TOOL_ATTRS):
                pass
    assert delegate.spans == []
    provider.shutdown()  # the run never ended: its children must still go out
    assert len(delegate.spans) == 3
    assert [flags(s) for s in delegate.spans] == [(), (), ("LOOP_DETECTED",)]
    assert delegate.shut
    # after shutdown, spans go straight through
    exporter.export(finished_run(loops=1))
    assert len(delegate.spans) == 5


def test_overflow_evicts_the_oldest_trace_unevaluated(delegate: Recorder) -> None:
    exporter = AnomalyExporter(delegate, max_held_spans=5)
    held: list[ReadableSpan] = []
    for _ in range(4):
        held.extend(finished_run(loops=2)[:2])  # children only: their runs never come
    exporter.export(held)
    stats = exporter.stats
    assert stats["spans_evicted"] >= 3
    assert stats["spans_held_now"] <= 5
    out = delegate.spans
    assert len(out) == stats["spans_evicted"]
    assert all((s.attributes or {}).get(sc.ANOMALY_EVALUATED) is False for s in out)
    exporter.shutdown()
    assert len(delegate.spans) == 8  # nothing lost


def test_max_traces_bounds_the_buffer(delegate: Recorder) -> None:
    exporter = AnomalyExporter(delegate, max_traces=2)
    for _ in range(5):
        exporter.export(finished_run(loops=1)[:1])
    assert exporter.stats["traces_held_now"] <= 2
    assert exporter.stats["spans_evicted"] == 3


def _span(name: str, trace_id: int, span_id: int, parent_id: int | None, **kw: Any) -> ReadableSpan:
    ctx = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = (
        SpanContext(trace_id, parent_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        if parent_id is not None
        else None
    )
    return ReadableSpan(
        name=name,
        context=ctx,
        parent=parent,
        start_time=kw.pop("start", 10),
        end_time=kw.pop("end", 20),
        **kw,
    )


def test_cyclic_parents_malformed_spans_and_clock_skew_are_forwarded(delegate: Recorder) -> None:
    exporter = AnomalyExporter(delegate, straggler_seconds=0)
    cyclic = [
        _span("execute_tool a", 0xA, 1, 2, attributes=TOOL_ATTRS),
        _span("execute_tool b", 0xA, 2, 1, attributes=TOOL_ATTRS),
    ]
    no_context = ReadableSpan(name="broken")
    skewed = _span("invoke_agent x", 0xB, 3, None, attributes=RUN_ATTRS, start=50, end=10)
    weird = _span(
        "execute_tool w",
        0xC,
        4,
        None,
        attributes={sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_CALL_ARGUMENTS: "{" * 70_000},
    )
    exporter.export([*cyclic, no_context, skewed, weird])
    assert {s.name for s in delegate.spans} == {
        "execute_tool a",
        "execute_tool b",
        "broken",
        "invoke_agent x",
        "execute_tool w",
    }
    stats = exporter.stats
    assert stats["errors.span_context"] == 1
    assert stats["engine.parent_cycles"] >= 1
    assert stats["clock_skew"] == 1


def test_duplicate_span_ids_are_passed_on(delegate: Recorder) -> None:
    spans = finished_run(loops=1)
    exporter = AnomalyExporter(delegate)
    exporter.export(spans[:1])
    exporter.export(spans[:1])  # a retransmission
    exporter.export(spans[1:])
    assert len(delegate.spans) == 3


def test_content_of_foreign_spans_is_read(delegate: Recorder) -> None:
    """Official GenAI tool spans with captured arguments: hashed like ours, loop found."""
    provider, memory = memory_provider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "invoke_workflow triage", attributes={sc.GEN_AI_OPERATION_NAME: "invoke_workflow"}
    ):
        for _ in range(3):
            with tracer.start_as_current_span(
                "execute_tool get_order",
                attributes={
                    sc.GEN_AI_OPERATION_NAME: "execute_tool",
                    sc.GEN_AI_TOOL_NAME: "get_order",
                    sc.GEN_AI_TOOL_CALL_ARGUMENTS: json.dumps({"order_id": "ord_555"}),
                    sc.GEN_AI_TOOL_CALL_RESULT: "same",
                },
            ):
                pass
    AnomalyExporter(delegate).export(memory.get_finished_spans())
    assert [flags(s) for s in delegate.named("execute_tool get_order")] == [(), (), ("LOOP_DETECTED",)]


# --------------------------------------------------------------------------- entry point and OTLP


def test_entry_point_is_registered() -> None:
    (ep,) = [
        e for e in importlib.metadata.entry_points(group="opentelemetry_traces_exporter") if e.name == "agentwatch"
    ]
    assert ep.load() is AnomalyExporter


@pytest.mark.parametrize(
    ("env", "module"),
    [
        ({}, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        ),
    ],
)
def test_no_argument_construction_wraps_the_otlp_exporter_the_environment_names(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], module: str
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    (ep,) = [
        e for e in importlib.metadata.entry_points(group="opentelemetry_traces_exporter") if e.name == "agentwatch"
    ]
    exporter = ep.load()()  # exactly what the SDK's auto-configuration does
    try:
        inner = exporter._delegate
        assert type(inner).__module__ == module
        assert type(inner).__name__ == "OTLPSpanExporter"
    finally:
        exporter.shutdown()


def test_unknown_protocol_is_refused_with_the_variable_named() -> None:
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP"):
        otlp_exporter_from_env({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})


def test_in_memory_delegate_round_trip() -> None:
    memory = InMemorySpanExporter()
    exporter = AnomalyExporter(memory)
    exporter.export(finished_run())
    assert [flags(s) for s in memory.get_finished_spans() if s.name.startswith("execute_tool")] == [
        (),
        (),
        ("LOOP_DETECTED",),
    ]


def test_behind_a_batch_span_processor_as_auto_configuration_builds_it() -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import agentwatch

    assert agentwatch.AnomalyExporter is AnomalyExporter
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(agentwatch.AnomalyExporter(memory), schedule_delay_millis=60_000))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
        for _ in range(3):
            with tracer.start_as_current_span("execute_tool get_order", attributes=TOOL_ATTRS):
                pass
    provider.shutdown()
    tools = [s for s in memory.get_finished_spans() if s.name == "execute_tool get_order"]
    assert [flags(s) for s in tools] == [(), (), ("LOOP_DETECTED",)]
