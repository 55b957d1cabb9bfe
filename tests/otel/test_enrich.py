"""Enriched copies keep everything exporters read, and add only what was asked."""

from __future__ import annotations

import json

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from agentwatch import semconv as sc
from agentwatch.otel.enrich import EnrichedSpan, enrich


def _ended_span(limits: SpanLimits | None = None) -> ReadableSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}), span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("scope.name", "1.2.3")
    link = Link(SpanContext(0x1, 0x2, is_remote=True, trace_flags=TraceFlags(1)), {"why": "retry"})
    with (
        tracer.start_as_current_span("parent"),
        tracer.start_as_current_span(
            "execute_tool get_order",
            kind=SpanKind.CLIENT,
            links=[link],
            attributes={sc.GEN_AI_TOOL_NAME: "get_order", "keep": 1, "a1": 1, "a2": 2, "a3": 3},
        ) as span,
    ):
        span.add_event("earlier", {"n": 1})
        span.add_event("second", {"n": 2})
        span.set_status(Status(StatusCode.ERROR, "boom"))
    return exporter.get_finished_spans()[0]


def test_copy_keeps_every_field_and_merges_additions() -> None:
    span = _ended_span()
    copy = enrich(
        span,
        {sc.ANOMALY_FLAGS: ("LOOP_DETECTED",), "keep": 2},
        [(sc.ANOMALY_EVENT, {sc.ANOMALY_FLAG: "LOOP_DETECTED"})],
    )
    assert isinstance(copy, EnrichedSpan) and isinstance(copy, ReadableSpan)
    assert copy.name == span.name
    assert copy.get_span_context() == span.get_span_context()
    assert copy.parent == span.parent
    assert copy.kind is SpanKind.CLIENT
    assert copy.resource is span.resource
    assert copy.instrumentation_scope == span.instrumentation_scope
    assert copy.links == span.links
    assert copy.status.status_code is StatusCode.ERROR and copy.status.description == "boom"
    assert (copy.start_time, copy.end_time) == (span.start_time, span.end_time)
    attrs = copy.attributes or {}
    assert attrs["keep"] == 2 and attrs[sc.GEN_AI_TOOL_NAME] == "get_order"
    assert attrs[sc.ANOMALY_FLAGS] == ("LOOP_DETECTED",)
    assert [e.name for e in copy.events] == ["earlier", "second", sc.ANOMALY_EVENT]
    assert copy.events[-1].timestamp == span.end_time
    assert dict(copy.events[-1].attributes or {}) == {sc.ANOMALY_FLAG: "LOOP_DETECTED"}
    # the original is untouched
    assert sc.ANOMALY_FLAGS not in (span.attributes or {})
    assert (span.attributes or {})["keep"] == 1
    assert len(span.events) == 2
    json.loads(copy.to_json())


def test_dropped_counts_survive_the_copy() -> None:
    span = _ended_span(SpanLimits(max_span_attributes=3, max_events=1, max_links=0))
    assert (span.dropped_attributes, span.dropped_events, span.dropped_links) == (2, 1, 1)
    copy = enrich(span, {sc.ANOMALY_SEVERITY: "high"})
    assert (copy.dropped_attributes, copy.dropped_events, copy.dropped_links) == (2, 1, 1)


def test_the_copy_encodes_to_otlp_with_its_additions() -> None:
    span = _ended_span(SpanLimits(max_span_attributes=5))
    copy = enrich(
        span, {sc.ANOMALY_FLAGS: ("LOOP_DETECTED",)}, [(sc.ANOMALY_EVENT, {sc.ANOMALY_FLAG: "LOOP_DETECTED"})]
    )
    request = encode_spans([copy])
    (resource_spans,) = request.resource_spans
    (scope_spans,) = resource_spans.scope_spans
    assert scope_spans.scope.name == "scope.name" and scope_spans.scope.version == "1.2.3"
    (encoded,) = scope_spans.spans
    keys = {kv.key for kv in encoded.attributes}
    assert sc.ANOMALY_FLAGS in keys
    assert encoded.dropped_attributes_count == span.dropped_attributes
    assert [e.name for e in encoded.events][-1] == sc.ANOMALY_EVENT
    assert encoded.parent_span_id == span.parent.span_id.to_bytes(8, "big")  # type: ignore[union-attr]
    assert len(encoded.links) == 1


def test_no_additions_still_gives_an_equal_copy() -> None:
    span = _ended_span()
    copy = enrich(span)
    assert dict(copy.attributes or {}) == dict(span.attributes or {})
    assert [e.name for e in copy.events] == [e.name for e in span.events]
