"""Unit checks of the wire helpers and the OTel self-metrics export."""

from __future__ import annotations

import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from agentwatch.collector.otlp import (
    Group,
    GroupTable,
    RequestBuilder,
    decode_attributes,
    edit_span,
    encode_event,
    encode_keyvalue,
    json_request_to_protobuf,
    split_request,
    to_anyvalue,
)
from agentwatch.collector.telemetry import Stats, start_otel_metrics

VALUES = [
    "",
    "x",
    "é" * 100,
    "a" * 300,
    0,
    1,
    127,
    128,
    300,
    16383,
    16384,
    -1,
    2**62,
    -(2**63),
    True,
    False,
    0.0,
    1.5,
    -2.25e300,
    ("a", "b"),
    ("customer:cust_1", "order:ord_2"),
    (1, 2),
    ("a", 3),
    (),
]


def _kv(key, value) -> bytes:
    kv = KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, str):
        kv.value.string_value = value
    else:
        kv.value.array_value.SetInParent()
        for item in value:
            if isinstance(item, str):
                kv.value.array_value.values.add(string_value=item)
            else:
                kv.value.array_value.values.add(int_value=item)
    return kv.SerializeToString()


@pytest.mark.parametrize("key", ["k", "gen_ai.operation.name", "k" * 200])
def test_attribute_values_decode_exactly(key):
    for value in VALUES:
        for _ in range(2):  # cold, then from the cache
            assert decode_attributes([_kv(key, value)]) == {key: value}
    empty = KeyValue(key=key).SerializeToString()
    assert decode_attributes([empty]) == {}
    blob = KeyValue(key=key)
    blob.value.bytes_value = b"\x00\xff"
    assert decode_attributes([blob.SerializeToString()]) == {key: base64.b64encode(b"\x00\xff").decode()}
    kvlist = KeyValue(key=key)
    kvlist.value.kvlist_value.values.add(key="b").value.int_value = 2
    assert json.loads(decode_attributes([kvlist.SerializeToString()])[key]) == {"b": 2}


def test_arrays_with_empty_or_odd_elements_decode_without_error():
    from agentwatch.collector.otlp import is_run_span

    def array_kv(*elements: str | None) -> KeyValue:
        kv = KeyValue(key="agentwatch.tool.result_entities")
        for element in elements:
            value = kv.value.array_value.values.add()
            if element is not None:
                value.string_value = element
        return kv

    cases = [(("a", None), ("a", None)), ((None,), (None,)), ((None, "b"), (None, "b")), (("x" * 200,), ("x" * 200,))]
    for elements, expected in cases:
        kv = array_kv(*elements)
        assert decode_attributes([kv.SerializeToString()]) == {kv.key: expected}
        # the intake decodes run spans' attributes too: such a span must not fail the request
        span = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="invoke_agent support")
        span.attributes.append(kv)
        assert is_run_span(span.SerializeToString())


def test_inline_decoding_matches_the_protobuf_parser_on_random_values():
    import random

    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    from agentwatch.collector import otlp

    rng = random.Random(7)

    def fill(value: AnyValue, depth: int = 0) -> None:
        kind = rng.randrange(8 if depth < 2 else 6)
        if kind == 0:
            size = rng.choice([0, 1, 5, 60, 126, 127, 200])
            value.string_value = "".join(rng.choice("ab:é_\n\x12") for _ in range(size))
        elif kind == 1:
            value.int_value = rng.choice([0, 1, 127, 128, 16383, 16384, -1, 2**40, -(2**63)])
        elif kind == 2:
            value.bool_value = rng.random() < 0.5
        elif kind == 3:
            value.double_value = rng.choice([0.0, -1.5, 1e300])
        elif kind == 4:
            value.bytes_value = bytes(rng.randrange(256) for _ in range(rng.randrange(4)))
        elif kind == 5:
            pass  # empty AnyValue
        elif kind == 6:
            value.array_value.SetInParent()
            for _ in range(rng.randrange(4)):
                fill(value.array_value.values.add(), depth + 1)
        else:
            value.kvlist_value.SetInParent()
            for i in range(rng.randrange(3)):
                fill(value.kvlist_value.values.add(key=f"k{i}").value, depth + 1)

    for i in range(3000):
        kv = KeyValue(key=rng.choice(["k", "gen_ai.usage.input_tokens", "x" * 130, f"key{i}"]))
        fill(kv.value)
        raw = kv.SerializeToString()
        expected = otlp._from_message(KeyValue.FromString(raw).value)
        got = decode_attributes([raw])
        assert got == ({} if expected is None else {kv.key: expected}), raw


def test_keys_whose_values_never_repeat_stop_being_cached(monkeypatch):
    from agentwatch.collector import otlp

    monkeypatch.setattr(otlp, "_KV_CACHE", {})
    monkeypatch.setattr(otlp, "_KV_CACHE_MAX", 400)
    monkeypatch.setattr(otlp, "_UNCACHED", set(otlp._UNCACHED))
    model = _kv("gen_ai.request.model", "gpt-4o-mini")
    for i in range(1000):  # a new token count on every span, as real usage looks
        decoded = decode_attributes([model, _kv("gen_ai.usage.input_tokens", 10_000 + i)])
        assert decoded == {"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 10_000 + i}
    assert "gen_ai.usage.input_tokens" in otlp._UNCACHED
    assert "gen_ai.request.model" not in otlp._UNCACHED
    assert model in otlp._KV_CACHE  # the repeating value is still served from the cache
    assert not any(item[0] == "gen_ai.usage.input_tokens" for item in otlp._KV_CACHE.values())


def test_attribute_cache_is_safe_to_fill_and_learn_from_several_threads(monkeypatch):
    import sys

    from agentwatch.collector import otlp

    monkeypatch.setattr(otlp, "_KV_CACHE", {})
    monkeypatch.setattr(otlp, "_KV_CACHE_MAX", 300)
    monkeypatch.setattr(otlp, "_UNCACHED", set(otlp._UNCACHED))
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(3000):
                kvs = [_kv(f"k{offset}.{i % 7}", i), _kv("gen_ai.request.model", "m"), _kv(f"u{offset}", i * 7919)]
                assert decode_attributes(kvs)["gen_ai.request.model"] == "m"
        except BaseException as exc:  # any failure is the finding
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []


def test_builder_add_all_equals_one_add_per_span():
    table = GroupTable()
    a = table.get(b"\x0a\x05\x0a\x01a\x12\x00", "", b"\x0a\x01x", "")
    b = table.get(b"", "", b"\x0a\x01y", "s")
    def raw(i: int) -> bytes:  # names up to ~19 KB: three-byte length prefixes too
        return Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="n" * (i * 97)).SerializeToString()

    spans = [((a, b)[i % 3 == 0], raw(i)) for i in range(200)]
    one, many = RequestBuilder(), RequestBuilder()
    for group, raw in spans:
        one.add(group, raw)
    many.add_all(spans[:50])
    many.add_all(spans[50:])
    assert (many.spans, many.size) == (one.spans, one.size)
    assert many.build() == one.build()


def test_builder_keeps_resource_and_scope_grouping():
    table = GroupTable()
    a = table.get(b"\x0a\x05\x0a\x01a\x12\x00", "https://schema/1", b"\x0a\x01x", "")
    b = table.get(b"\x0a\x05\x0a\x01a\x12\x00", "https://schema/1", b"\x0a\x01y", "s")
    c = table.get(b"", "", b"", "")
    assert table.get(b"\x0a\x05\x0a\x01a\x12\x00", "https://schema/1", b"\x0a\x01x", "") is a
    builder = RequestBuilder()
    sent = []
    for i in range(300):
        raw = Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="n" * i).SerializeToString()
        group: Group = (a, b, c)[i % 3]
        builder.add(group, raw)
        sent.append((group.key, raw))
    request = ExportTraceServiceRequest.FromString(builder.build())
    assert len(request.resource_spans) == 2
    first = request.resource_spans[0]
    assert first.schema_url == "https://schema/1" and [s.scope.name for s in first.scope_spans] == ["x", "y"]
    assert first.scope_spans[1].schema_url == "s"
    spans, rejected, _ = split_request(builder.build(), GroupTable())
    assert rejected == 0 and sorted((g.key, raw) for g, raw, *_ in spans) == sorted(sent)


def test_edit_span_appends_or_rewrites():
    span = Span(trace_id=os.urandom(16), span_id=os.urandom(8), name="s")
    span.attributes.add(key="keep").value.string_value = "v"
    raw = span.SerializeToString()
    appended = Span.FromString(edit_span(raw, {"keep": "v"}, {"new": ("A",)}, [("ev", {"x": 1})], 5))
    assert [kv.key for kv in appended.attributes] == ["keep", "new"]
    assert appended.events[0].name == "ev" and appended.events[0].time_unix_nano == 5
    replaced = Span.FromString(edit_span(raw, {"keep": "v"}, {"keep": "w"}, [], 5))
    assert [(kv.key, kv.value.string_value) for kv in replaced.attributes] == [("keep", "w")]


TAG_VALUES = [
    "", "flag", "é" * 200, True, False, 0, 7, -1, 2**63 - 1, -(2**63), 0.0, -2.5, float("inf"),
    (), ("LOOP_DETECTED", "TOKEN_SPIKE"), (1, 2), b"\x00\xff",
]


@pytest.mark.parametrize("value", TAG_VALUES, ids=repr)
def test_hand_encoded_tags_are_the_protobuf_bytes(value):
    # Tags are appended to spans by hand-written encoders; they must write what protobuf writes.
    kv = KeyValue(key="agentwatch.anomaly.flags")
    to_anyvalue(value, kv.value)
    assert encode_keyvalue("agentwatch.anomaly.flags", value) == kv.SerializeToString()
    event = Span.Event(name="agentwatch.anomaly", time_unix_nano=1_700_000_000_123_456_789)
    event.attributes.append(kv)
    event.attributes.add(key="agentwatch.anomaly.reason").value.string_value = "why"
    mine = encode_event(
        "agentwatch.anomaly", 1_700_000_000_123_456_789,
        {"agentwatch.anomaly.flags": value, "agentwatch.anomaly.reason": "why"},
    )
    assert mine == event.SerializeToString()


def test_hand_encoders_keep_protobuf_rules_at_the_edges():
    kv = KeyValue(key="")
    kv.value.string_value = "v"
    assert encode_keyvalue("", "v") == kv.SerializeToString()  # proto3 leaves an empty key out
    for out_of_range in (2**63, -(2**63) - 1):
        with pytest.raises(ValueError):
            to_anyvalue(out_of_range, KeyValue().value)
        with pytest.raises(ValueError):
            encode_keyvalue("k", out_of_range)


def test_json_conversion_handles_otlp_json_specifics():
    body = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "",
                                "name": "x",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": 1,
                                "endTimeUnixNano": "2",
                                "links": [
                                    {
                                        "traceId": "5b8efff798038103d269b633813fc60c",
                                        "spanId": "eee19b7ec3c1b175",
                                    }
                                ],
                                "status": {"code": 2},
                            }
                        ]
                    }
                ]
            }
        ]
    }
    request = ExportTraceServiceRequest.FromString(json_request_to_protobuf(json.dumps(body).encode()))
    span = request.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == "5b8efff798038103d269b633813fc60c" and span.kind == 2
    assert span.links[0].span_id.hex() == "eee19b7ec3c1b175" and span.status.code == 2
    with pytest.raises(ValueError):
        json_request_to_protobuf(b'{"resourceSpans": {"not": "a list"}}')
    with pytest.raises(ValueError):
        json_request_to_protobuf(b"[1, 2]")


def test_self_metrics_are_exported_over_otlp(monkeypatch):
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf")
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/v1/metrics"
    )
    stats = Stats()
    stats.add("spans_received", 7, "grpc")
    stats.add("findings", 2, "LOOP_DETECTED")
    stats.gauge("queue_batches", lambda: 3)
    provider = start_otel_metrics(stats, "test")
    try:
        assert provider.force_flush(10_000)
    finally:
        provider.shutdown()
        server.shutdown()
        server.server_close()
    names = {}
    for body in received:
        for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points = metric.sum.data_points or metric.gauge.data_points
                    names[metric.name] = [
                        (p.as_int, {a.key: a.value.string_value for a in p.attributes}) for p in points
                    ]
    # every known series is there from start-up, at 0 until counted
    received = names["agentwatch.collector.spans.received"]
    assert sorted(received, key=lambda p: p[1]["protocol"]) == [(7, {"protocol": "grpc"}), (0, {"protocol": "http"})]
    findings = {labels["flag"]: n for n, labels in names["agentwatch.collector.findings"]}
    assert findings["LOOP_DETECTED"] == 2 and set(findings.values()) == {0, 2}
    assert names["agentwatch.collector.queue.batches"][0][0] == 3


def test_span_status_error_marks_the_record_failed():
    from opentelemetry.proto.trace.v1.trace_pb2 import Status

    from agentwatch.collector.decision import otlp_records

    def view(status: Status | None) -> bytes:
        span = Span(trace_id=b"\x01" * 16, span_id=os.urandom(8), name="execute_tool get_order")
        if status is not None:
            span.status.CopyFrom(status)
        return span.SerializeToString()

    records, _ = otlp_records(
        "01" * 16,
        [
            view(Status(code=Status.STATUS_CODE_ERROR, message="timeout")),
            view(Status(code=Status.STATUS_CODE_ERROR)),
            view(Status(code=Status.STATUS_CODE_OK)),
            view(Status(message="no code")),
            view(None),
        ],
        None,
    )
    assert [r.is_error for r in records] == [True, True, False, False, False]
