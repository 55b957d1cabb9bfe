"""AnomalyProcessor on real SDK providers: tags, summaries, zero-copy, merging, robustness."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from agentwatch import semconv as sc
from agentwatch.budget import Budget
from agentwatch.config import load_config
from agentwatch.engine.engine import Engine
from agentwatch.engine.record import Finding
from agentwatch.otel.enrich import EnrichedSpan
from agentwatch.otel.processor import AnomalyProcessor
from agentwatch.otel.reporting import AnomalyContext
from tests.otel.helpers import metric_points

RUN_ATTRS = {sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "support"}


def tool_attrs(args_hash: str = "a" * 16, result_hash: str = "r" * 16, **extra: Any) -> dict[str, Any]:
    return {
        sc.GEN_AI_OPERATION_NAME: "execute_tool",
        sc.GEN_AI_TOOL_NAME: "get_order",
        sc.TOOL_ARGS_HASH: args_hash,
        sc.TOOL_RESULT_HASH: result_hash,
        **extra,
    }


class Spy(SpanProcessor):
    """Records the very objects a processor is handed."""

    def __init__(self) -> None:
        self.ended: list[ReadableSpan] = []
        self.started = 0
        self.flushed = 0
        self.shut = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.started += 1

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        self.flushed += 1
        return True

    def shutdown(self) -> None:
        self.shut += 1


@dataclass
class Rig:
    provider: TracerProvider
    processor: AnomalyProcessor
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    seen: list[tuple[Finding, AnomalyContext]] = field(default_factory=list)
    before: Spy = field(default_factory=Spy)  # sees the SDK's own objects, before the processor

    @property
    def tracer(self) -> trace_api.Tracer:
        return self.provider.get_tracer("test")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]


def make_rig(config: Any = None, id_generator: IdGenerator | None = None, **kwargs: Any) -> Rig:
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    provider = TracerProvider(id_generator=id_generator or RandomIdGenerator())
    seen: list[tuple[Finding, AnomalyContext]] = []
    processor = AnomalyProcessor(
        SimpleSpanProcessor(exporter),
        config=config,
        on_anomaly=lambda f, c: seen.append((f, c)),
        meter_provider=meters,
        **kwargs,
    )
    before = Spy()
    provider.add_span_processor(before)
    provider.add_span_processor(processor)
    return Rig(provider, processor, exporter, reader, seen, before)


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = make_rig()
    yield r
    r.provider.shutdown()


def flags(span: ReadableSpan) -> tuple[str, ...]:
    value: Any = (span.attributes or {}).get(sc.ANOMALY_FLAGS, ())
    return tuple(value)


def anomaly_events(span: ReadableSpan) -> list[Mapping[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == sc.ANOMALY_EVENT]


def hex_id(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return format(ctx.span_id, "016x")


# --------------------------------------------------------------------------- flags, events, summaries


def test_loop_flags_the_third_identical_call_and_summarises_the_run(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agentwatch.anomaly")
    with rig.tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
        for _ in range(3):
            with rig.tracer.start_as_current_span("execute_tool get_order", attributes=tool_attrs()):
                pass
    tools = rig.named("execute_tool get_order")
    (run,) = rig.named("invoke_agent support")
    assert [flags(t) for t in tools] == [(), (), ("LOOP_DETECTED",)]
    third = tools[2]
    attrs = third.attributes or {}
    assert attrs[sc.ANOMALY_SEVERITY] == "high"
    (event,) = anomaly_events(third)
    assert event[sc.ANOMALY_FLAG] == "LOOP_DETECTED"
    assert event[sc.ANOMALY_SEVERITY] == "high"
    assert "get_order" in event[sc.ANOMALY_REASON]
    assert event[sc.ANOMALY_RELATED_SPAN_ID] == hex_id(tools[0])
    # the copy is faithful to the original apart from the additions
    assert isinstance(third, EnrichedSpan)
    assert third.parent is not None and third.parent.span_id == run.get_span_context().span_id  # type: ignore[union-attr]
    assert attrs[sc.GEN_AI_TOOL_NAME] == "get_order"
    assert third.start_time is not None and third.end_time is not None
    assert third.instrumentation_scope is not None and third.instrumentation_scope.name == "test"

    run_attrs = run.attributes or {}
    assert run_attrs[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED",)
    assert run_attrs[sc.RUN_ANOMALY_COUNT] == 1
    assert run_attrs[sc.RUN_FAULT_ORIGIN_SPAN_ID] == hex_id(tools[0])  # the loop's first call: its evidence
    assert run_attrs[sc.RUN_FAILURE_MODE] == "cost_blowup"
    assert not flags(run)

    # callback, metric and log: once each, with the context of the flagged span
    ((finding, context),) = rig.seen
    assert finding.flag == "LOOP_DETECTED"
    assert context.span_id == hex_id(third)
    assert context.run_key == hex_id(run)
    assert context.agent_name == "support"
    assert context.span_name == "execute_tool get_order"
    (point,) = metric_points(rig.reader, sc.METRIC_ANOMALIES)
    assert point.value == 1
    assert dict(point.attributes) == {
        sc.ANOMALY_FLAG: "LOOP_DETECTED",
        sc.ANOMALY_SEVERITY: "high",
        sc.GEN_AI_AGENT_NAME: "support",
    }
    (log,) = [r for r in caplog.records if r.name == "agentwatch.anomaly"]
    assert getattr(log, "agentwatch.anomaly.flag") == "LOOP_DETECTED"
    assert log.__dict__["span_id"] == hex_id(third)
    assert rig.processor.stats["spans_flagged"] == 1


def test_spans_without_findings_are_forwarded_as_the_same_object(rig: Rig) -> None:
    with rig.tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
        for i in range(3):
            attrs = tool_attrs(args_hash=f"{i:016x}", result_hash=f"{i + 100:016x}")
            with rig.tracer.start_as_current_span("execute_tool get_order", attributes=attrs):
                pass
        with rig.tracer.start_as_current_span("http GET"):
            pass
    children = [s for s in rig.spans() if not s.name.startswith("invoke_agent")]
    sdk_objects = {id(s) for s in rig.before.ended}
    assert len(children) == 4
    assert all(id(s) in sdk_objects for s in children)
    assert not any(flags(s) for s in rig.spans())


def test_non_agent_traces_never_reach_the_engine(rig: Rig) -> None:
    with rig.tracer.start_as_current_span("GET /health"), rig.tracer.start_as_current_span("SELECT 1"):
        pass
    stats = rig.processor.stats
    assert stats["spans_evaluated"] == 0 and stats["runs_opened"] == 0
    assert stats["engine.records_processed"] == 0
    assert [id(s) for s in rig.spans()] == [id(s) for s in rig.before.ended]


def test_existing_flags_merge_as_a_set(rig: Rig) -> None:
    """Our instrumentation may have flagged a span inline: no duplicate flag, no duplicate event."""
    with rig.tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
        for i in range(3):
            with rig.tracer.start_as_current_span("execute_tool get_order", attributes=tool_attrs()) as span:
                if i == 2:
                    span.set_attributes({sc.ANOMALY_FLAGS: ("LOOP_DETECTED",), sc.ANOMALY_SEVERITY: "high"})
                    span.add_event(sc.ANOMALY_EVENT, {sc.ANOMALY_FLAG: "LOOP_DETECTED"})
        for i in range(3):
            attrs = tool_attrs(args_hash="b" * 16, result_hash="s" * 16, **{sc.TOOL_SIDE_EFFECT: True})
            with rig.tracer.start_as_current_span("execute_tool get_order", attributes=attrs) as span:
                if i == 1:
                    span.set_attributes({sc.ANOMALY_FLAGS: ("TOKEN_SPIKE",), sc.ANOMALY_SEVERITY: "low"})
    tools = rig.named("execute_tool get_order")
    inline = tools[2]
    assert flags(inline) == ("LOOP_DETECTED",)
    assert len(anomaly_events(inline)) == 1
    assert not isinstance(inline, EnrichedSpan)  # nothing new: zero-copy
    merged = tools[4]  # second side-effect call: DUPLICATE_SIDE_EFFECT on top of TOKEN_SPIKE
    assert flags(merged) == ("TOKEN_SPIKE", "DUPLICATE_SIDE_EFFECT")
    assert (merged.attributes or {})[sc.ANOMALY_SEVERITY] == "critical"
    assert [e[sc.ANOMALY_FLAG] for e in anomaly_events(merged)] == ["DUPLICATE_SIDE_EFFECT"]
    # only new findings are reported
    assert {f.flag for f, _ in rig.seen} == {"DUPLICATE_SIDE_EFFECT", "LOOP_DETECTED"}
    assert len([f for f, _ in rig.seen if f.flag == "LOOP_DETECTED"]) == 1  # the 6th call, not the 3rd


def test_run_budget_and_entities_come_from_the_run_span(rig: Rig) -> None:
    budget = Budget(max_tool_calls=2)
    attrs = {**RUN_ATTRS, **budget.to_attributes(), sc.RUN_ENTITY_PREFIX + "customer": "cust_789"}
    with rig.tracer.start_as_current_span("invoke_agent support", attributes=attrs):
        for i in range(3):
            extra = {sc.GEN_AI_TOOL_CALL_RESULT: json.dumps({"customer_id": "cust_012"})} if i == 0 else {}
            with rig.tracer.start_as_current_span(
                "execute_tool get_order",
                attributes={
                    sc.GEN_AI_OPERATION_NAME: "execute_tool",
                    sc.GEN_AI_TOOL_NAME: "get_order",
                    sc.TOOL_ARGS_HASH: f"{i:016x}",
                    **extra,
                },
            ):
                pass
    tools = rig.named("execute_tool get_order")
    assert "ENTITY_MISMATCH" in flags(tools[0])
    assert "TOOL_BUDGET_EXCEEDED" in flags(tools[2])
    (run,) = rig.named("invoke_agent support")
    run_flags: Any = (run.attributes or {})[sc.RUN_ANOMALY_FLAGS]
    assert set(run_flags) == {"ENTITY_MISMATCH", "TOOL_BUDGET_EXCEEDED"}
    assert (run.attributes or {})[sc.RUN_FAULT_ORIGIN_SPAN_ID] == hex_id(tools[0])


def test_nested_runs_roll_up_into_the_outer_run(rig: Rig) -> None:
    inner_attrs = {sc.GEN_AI_OPERATION_NAME: "invoke_agent", sc.GEN_AI_AGENT_NAME: "inner"}
    with (
        rig.tracer.start_as_current_span("invoke_agent outer", attributes=RUN_ATTRS),
        rig.tracer.start_as_current_span("invoke_agent inner", attributes=inner_attrs),
    ):
        for _ in range(3):
            with rig.tracer.start_as_current_span("execute_tool get_order", attributes=tool_attrs()):
                pass
    inner = rig.named("invoke_agent inner")[0].attributes or {}
    outer = rig.named("invoke_agent outer")[0].attributes or {}
    assert inner[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED",)
    assert outer[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED",)
    assert outer[sc.RUN_ANOMALY_COUNT] == 1
    assert rig.seen[0][1].agent_name == "inner"


# --------------------------------------------------------------------------- other conventions


def test_openinference_agent_and_tool_spans(rig: Rig) -> None:
    with rig.tracer.start_as_current_span(
        "support-agent", attributes={sc.OPENINFERENCE_SPAN_KIND: "AGENT", "agent.name": "support"}
    ):
        for _ in range(3):
            with rig.tracer.start_as_current_span(
                "get_order",
                attributes={
                    sc.OPENINFERENCE_SPAN_KIND: "TOOL",
                    sc.OI_TOOL_NAME: "get_order",
                    sc.OI_INPUT_VALUE: json.dumps({"order_id": "ord_555"}),
                    sc.OI_OUTPUT_VALUE: "shipped",
                },
            ):
                pass
    assert [flags(s) for s in rig.named("get_order")] == [(), (), ("LOOP_DETECTED",)]
    (agent,) = rig.named("support-agent")
    assert (agent.attributes or {})[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED",)
    assert rig.seen[0][1].agent_name == "support"


def test_openllmetry_workflow_whose_kind_is_set_after_start(rig: Rig) -> None:
    """traceloop-sdk's decorators set traceloop.span.kind right after starting the span."""
    with rig.tracer.start_as_current_span("triage.workflow") as workflow:
        workflow.set_attributes({sc.TRACELOOP_SPAN_KIND: "workflow", sc.TRACELOOP_ENTITY_NAME: "triage"})
        for _ in range(3):
            with rig.tracer.start_as_current_span("get_order.tool") as tool:
                tool.set_attributes(
                    {
                        sc.TRACELOOP_SPAN_KIND: "tool",
                        sc.TRACELOOP_ENTITY_NAME: "get_order",
                        sc.TRACELOOP_ENTITY_INPUT: json.dumps({"args": [], "kwargs": {"order_id": "ord_555"}}),
                        sc.TRACELOOP_ENTITY_OUTPUT: json.dumps({"status": "shipped"}),
                    }
                )
    assert [flags(s) for s in rig.named("get_order.tool")] == [(), (), ("LOOP_DETECTED",)]
    (wf,) = rig.named("triage.workflow")
    assert (wf.attributes or {})[sc.RUN_ANOMALY_FLAGS] == ("LOOP_DETECTED",)
    assert rig.seen[0][1].run_key == hex_id(wf)
    assert rig.seen[0][1].agent_name == "triage"


def test_official_genai_spans_with_content_and_a_local_root(rig: Rig) -> None:
    """No run span at all: the local root stands in for the run; it gets no run summary."""
    with rig.tracer.start_as_current_span("POST /chat"):
        for _ in range(3):
            with rig.tracer.start_as_current_span(
                "execute_tool get_order",
                attributes={
                    sc.GEN_AI_OPERATION_NAME: "execute_tool",
                    sc.GEN_AI_TOOL_NAME: "get_order",
                    sc.GEN_AI_TOOL_CALL_ARGUMENTS: '{"order_id": "ord_555"}',
                    sc.GEN_AI_TOOL_CALL_RESULT: '{"status": "shipped"}',
                },
            ):
                pass
    assert [flags(s) for s in rig.named("execute_tool get_order")] == [(), (), ("LOOP_DETECTED",)]
    (root,) = rig.named("POST /chat")
    assert sc.RUN_ANOMALY_FLAGS not in (root.attributes or {})
    assert rig.processor.stats["engine.runs_open"] == 0  # closed with the root


def test_remote_parent_makes_a_local_root(rig: Rig) -> None:
    remote = SpanContext(trace_id=0xABC, span_id=0xDEF, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    ctx = trace_api.set_span_in_context(NonRecordingSpan(remote))
    for _ in range(3):
        with rig.tracer.start_as_current_span("execute_tool get_order", context=ctx, attributes=tool_attrs()):
            pass
    # three local roots: three implicit runs, no loop across them
    assert not any(flags(s) for s in rig.spans())
    with rig.tracer.start_as_current_span("handler", context=ctx):
        for _ in range(3):
            with rig.tracer.start_as_current_span("execute_tool get_order", attributes=tool_attrs()):
                pass
    assert [flags(s) for s in rig.named("execute_tool get_order")][-3:] == [(), (), ("LOOP_DETECTED",)]


# --------------------------------------------------------------------------- robustness


def test_malformed_spans_are_forwarded_unflagged(rig: Rig) -> None:
    with rig.tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
        with rig.tracer.start_as_current_span(
            "execute_tool x",
            attributes={
                sc.GEN_AI_OPERATION_NAME: "execute_tool",
                sc.GEN_AI_TOOL_NAME: 17,  # type: ignore[dict-item]
                sc.TOOL_ARGS_HASH: ("not", "a", "hash"),
                sc.GEN_AI_TOOL_CALL_ARGUMENTS: "{" * 100_000,
                sc.TOOL_SCHEMA: "[[[",
            },
        ):
            pass
        span = rig.tracer.start_span("chat m", attributes={sc.GEN_AI_OPERATION_NAME: "chat"})
        span.set_attribute(sc.GEN_AI_USAGE_INPUT_TOKENS, "lots")
        span.end(end_time=(span.start_time or 0) - 1_000)  # type: ignore[attr-defined]  # ends before it starts
    assert len(rig.spans()) == 3
    assert not any(flags(s) for s in rig.spans())
    stats = rig.processor.stats
    assert stats["errors"] == 0
    assert stats["clock_skew"] == 1


class RepeatingIds(IdGenerator):
    """Hands out the same span id twice: a child whose parent id is its own id."""

    def __init__(self) -> None:
        self._ids = iter([0x1111, 0x1111, 0x2222, 0x3333, 0x4444])

    def generate_span_id(self) -> int:
        return next(self._ids)

    def generate_trace_id(self) -> int:
        return 0xFEED


def test_cyclic_parent_link_is_counted_and_forwarded() -> None:
    rig = make_rig(id_generator=RepeatingIds())
    with (
        rig.tracer.start_as_current_span("invoke_agent a", attributes=RUN_ATTRS),
        rig.tracer.start_as_current_span("execute_tool get_order", attributes=tool_attrs()),
    ):
        pass
    assert len(rig.spans()) == 2
    assert rig.processor.stats["parent_cycles"] == 1
    assert rig.processor.stats["errors"] == 0


class Exploding(Engine):
    __slots__ = ()

    def process(self, record: Any) -> list[Finding]:
        raise RuntimeError("engine bug")


def test_internal_failures_forward_the_span_count_and_log_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="agentwatch.otel.processor")
    rig = make_rig(engine=Exploding(load_config()))
    with rig.tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
        for _ in range(4):
            with rig.tracer.start_as_current_span("execute_tool get_order", attributes=tool_attrs()):
                pass
    assert len(rig.spans()) == 5
    assert not any(flags(s) for s in rig.spans())
    assert rig.processor.stats["errors.on_end"] == 4
    assert len([r for r in caplog.records if "forwarded unflagged" in r.getMessage()]) == 1


def test_callback_errors_are_swallowed_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="agentwatch.otel.reporting")

    def bad(finding: Finding, context: AnomalyContext) -> None:
        raise ValueError("user bug")

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    processor = AnomalyProcessor(SimpleSpanProcessor(exporter), on_anomaly=bad)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
        for _ in range(5):
            with tracer.start_as_current_span("execute_tool get_order", attributes=tool_attrs()):
                pass
    assert [bool(flags(s)) for s in exporter.get_finished_spans()] == [False, False, True, True, True, False]
    assert processor.stats["callback_errors"] == 3
    assert len([r for r in caplog.records if "on_anomaly" in r.getMessage()]) == 1


def test_open_span_table_is_bounded_and_evictions_counted() -> None:
    rig = make_rig(max_open_spans=10)
    spans = [rig.tracer.start_span(f"leak {i}", attributes=RUN_ATTRS) for i in range(25)]
    assert rig.processor.stats["spans_open"] == 10
    assert rig.processor.stats["spans_evicted"] == 15
    for span in spans:
        span.end()
    assert len(rig.spans()) == 25  # forwarded all the same
    assert rig.processor.stats["spans_untracked"] == 15
    unevaluated = [s for s in rig.spans() if (s.attributes or {}).get(sc.ANOMALY_EVALUATED) is False]
    assert len(unevaluated) == 15


def test_threads_ending_spans_of_one_run_concurrently(rig: Rig) -> None:
    with rig.tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS) as run:
        ctx = trace_api.set_span_in_context(run)

        def work(n: int) -> None:
            for i in range(50):
                attrs = tool_attrs(args_hash=f"{n:08x}{i:08x}", result_hash=f"{n:08x}{i:08x}")
                with rig.tracer.start_as_current_span("execute_tool get_order", context=ctx, attributes=attrs):
                    pass

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(rig.spans()) == 201
    assert rig.processor.stats["errors"] == 0
    assert (rig.named("invoke_agent support")[0].attributes or {})[sc.RUN_ANOMALY_COUNT] == 0


def test_flush_and_shutdown_delegate() -> None:
    spy = Spy()
    processor = AnomalyProcessor(spy)
    assert processor.force_flush(1000) is True
    processor.shutdown()
    assert (spy.flushed, spy.shut) == (1, 1)


def test_batch_processor_delegate_and_public_name() -> None:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import agentwatch

    assert agentwatch.AnomalyProcessor is AnomalyProcessor
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(agentwatch.AnomalyProcessor(BatchSpanProcessor(exporter), config={}))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("invoke_agent support", attributes=RUN_ATTRS):
        for _ in range(3):
            with tracer.start_as_current_span("execute_tool get_order", attributes=tool_attrs()):
                pass
    assert provider.force_flush()
    spans = exporter.get_finished_spans()
    assert [flags(s) for s in spans if s.name.startswith("execute_tool")] == [(), (), ("LOOP_DETECTED",)]
    provider.shutdown()


def test_spans_evaluated_inline_are_forwarded_untouched() -> None:
    """agentwatch's own spans carry evaluated=true: the processor must not evaluate them twice."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentwatch import semconv as sc
    from agentwatch.otel.processor import AnomalyProcessor

    exporter = InMemorySpanExporter()
    processor = AnomalyProcessor(SimpleSpanProcessor(exporter))
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("invoke_agent a", attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent"}) as run:
        for _ in range(3):
            with tracer.start_as_current_span(
                "execute_tool search",
                attributes={sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_NAME: "search",
                            sc.TOOL_ARGS_HASH: "0123456789abcdef", sc.ANOMALY_EVALUATED: True},
            ):
                pass
        run.set_attribute(sc.ANOMALY_EVALUATED, True)
    spans = exporter.get_finished_spans()
    assert all(sc.ANOMALY_FLAGS not in s.attributes for s in spans)  # the live guard's word stands
    assert processor.stats["spans_evaluated_inline"] == 4
    assert processor.stats["errors"] == 0


def test_foreign_llm_spans_are_priced_for_cost_budgets() -> None:
    """openai-v2/OpenLLMetry spans carry tokens but no cost: the engine prices them."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentwatch import semconv as sc
    from agentwatch.config import load_config
    from agentwatch.otel.processor import AnomalyProcessor

    exporter = InMemorySpanExporter()
    config = load_config({"agent": {"budgets": {"max_usd": 0.01}, "anomaly": {"log_findings": False}}})
    provider = TracerProvider()
    provider.add_span_processor(AnomalyProcessor(SimpleSpanProcessor(exporter), config=config))
    tracer = provider.get_tracer("foreign")
    with tracer.start_as_current_span("invoke_agent a", attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent"}):
        for _ in range(3):  # gpt-4o: 1000 in + 1000 out = 0.0125 USD per call
            with tracer.start_as_current_span(
                "chat gpt-4o",
                attributes={sc.GEN_AI_OPERATION_NAME: "chat", sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
                            sc.GEN_AI_USAGE_INPUT_TOKENS: 1000, sc.GEN_AI_USAGE_OUTPUT_TOKENS: 1000},
            ):
                pass
    chats = sorted((s for s in exporter.get_finished_spans() if s.name == "chat gpt-4o"), key=lambda s: s.start_time)
    assert chats[0].attributes.get(sc.ANOMALY_FLAGS) == ("COST_BUDGET_EXCEEDED",)  # 0.0125 > 0.01
    assert all(sc.ANOMALY_FLAGS not in s.attributes for s in chats[1:])  # once per run
