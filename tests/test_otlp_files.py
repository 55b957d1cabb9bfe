"""The OTLP file reader: encodings, id forms, bounds and errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from agentwatch.otlp_files import OtlpFileError, decode_id, read_spans

TRACE = bytes(range(1, 17))
SPAN = bytes(range(101, 109))


def _spans() -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent", "1.2")
    with (
        tracer.start_as_current_span("invoke_agent shop", attributes={"gen_ai.operation.name": "invoke_agent"}) as run,
        tracer.start_as_current_span(
            "execute_tool refund",
            attributes={"gen_ai.tool.name": "refund", "tags": ("a", "b"), "n": 3},
            links=[Link(run.get_span_context())],
        ) as tool,
    ):
        tool.add_event("retry", {"attempt": 2})
        tool.set_status(Status(StatusCode.ERROR, "declined"))
    return list(exporter.get_finished_spans())


def test_decode_id_accepts_hex_and_base64_by_length() -> None:
    assert decode_id(TRACE.hex(), 16, "traceId", "x") == TRACE
    assert decode_id(TRACE.hex().upper(), 16, "traceId", "x") == TRACE
    assert decode_id(base64.b64encode(TRACE).decode(), 16, "traceId", "x") == TRACE
    assert decode_id(base64.b64encode(TRACE).decode().rstrip("="), 16, "traceId", "x") == TRACE
    assert decode_id(base64.urlsafe_b64encode(SPAN).decode(), 8, "spanId", "x") == SPAN
    assert decode_id("", 8, "parentSpanId", "x") == b""
    # 32 hex digits are hex even where they would also be base64; other 32 characters are 24 bytes
    assert decode_id("A" * 32, 16, "traceId", "x") == b"\xaa" * 16
    with pytest.raises(OtlpFileError, match="traceId"):
        decode_id(base64.b64encode(b"\xff" * 24).decode(), 16, "traceId", "here")
    with pytest.raises(OtlpFileError, match="here: spanId 'not an id!' is neither 16 hex digits"):
        decode_id("not an id!", 8, "spanId", "here")


def test_every_encoding_reads_to_the_same_spans(tmp_path: Path) -> None:
    spans = _spans()
    request = encode_spans(spans)
    protobuf = tmp_path / "t.pb"
    protobuf.write_bytes(request.SerializeToString())
    as_json = tmp_path / "t.json"
    as_json.write_text(json_format.MessageToJson(request))
    lines = tmp_path / "t.jsonl"
    lines.write_text(json_format.MessageToJson(request, indent=None) + "\n\n")
    read = [list(read_spans(p)) for p in (protobuf, as_json, lines)]
    assert [[(s.span_id, s.attributes, s.events, s.raw) for s in r] for r in read[1:]] == [
        [(s.span_id, s.attributes, s.events, s.raw) for s in read[0]]
    ] * 2
    tool, run = read[0]
    assert tool.name == "execute_tool refund" and tool.parent_span_id == run.span_id and run.parent_hex is None
    assert tool.attributes == {"gen_ai.tool.name": "refund", "tags": ("a", "b"), "n": 3}
    assert tool.is_error and tool.status_message == "declined"
    assert tool.events[0].name == "retry" and tool.events[0].attributes == {"attempt": 2}
    assert tool.resource["service.name"] == "shop" and (tool.scope_name, tool.scope_version) == ("agent", "1.2")
    assert tool.trace_hex == format(spans[0].context.trace_id, "032x")
    assert read[2][0].source == f"{lines}:1"


def test_concatenated_json_documents_are_requests(tmp_path: Path) -> None:
    request = encode_spans(_spans())
    path = tmp_path / "export.json"  # pretty-printed requests one after another, not .jsonl
    path.write_text(json_format.MessageToJson(request) + "\n" + json_format.MessageToJson(request) + "\n")
    spans = list(read_spans(path))
    assert len(spans) == 4 and spans[0].source == f"{path}:1" and spans[2].source.startswith(f"{path}:")
    assert spans[2].source != spans[0].source and spans[0].raw == spans[2].raw
    path.write_text(json_format.MessageToJson(request) + "\n{broken")
    with pytest.raises(OtlpFileError, match=r"export\.json:\d+: not JSON"):
        list(read_spans(path))


def test_legacy_and_snake_case_json_is_read(tmp_path: Path) -> None:
    body = {
        "resource_spans": [
            {
                "instrumentationLibrarySpans": [
                    {
                        "instrumentationLibrary": {"name": "old-lib"},
                        "spans": [{"trace_id": TRACE.hex(), "span_id": SPAN.hex(), "parent_span_id": "0" * 16,
                                   "name": "x", "kind": 1, "startTimeUnixNano": "5", "endTimeUnixNano": 6,
                                   "links": [{"traceId": TRACE.hex(), "spanId": SPAN.hex()}]}],
                    }
                ]
            }
        ]
    }  # fmt: skip
    path = tmp_path / "old.json"
    path.write_text(json.dumps(body))
    (span,) = read_spans(path)
    assert (span.trace_id, span.span_id, span.parent_span_id) == (TRACE, SPAN, b"")
    assert span.scope_name == "old-lib" and (span.start_ns, span.end_ns) == (5, 6)


def test_errors_name_the_line_span_and_field(tmp_path: Path) -> None:
    good = json_format.MessageToJson(encode_spans(_spans()), indent=None)
    bad = json.loads(good)
    bad["resourceSpans"][0]["scopeSpans"][0]["spans"][1]["spanId"] = "abc"
    path = tmp_path / "t.jsonl"
    path.write_text(good + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(OtlpFileError) as caught:
        list(read_spans(path))
    assert str(caught.value).startswith(f"{path}:2: resourceSpans[0].scopeSpans[0].spans[1] ('invoke_agent shop')")
    assert "spanId 'abc'" in str(caught.value)
    path.write_text(good + "\n{oops\n")
    with pytest.raises(OtlpFileError, match=r"t\.jsonl:2: not JSON"):
        list(read_spans(path))
    path.write_text(good + '\n{"resourceMetrics": []}\n')
    with pytest.raises(OtlpFileError, match=r":2: not OTLP trace data \(no resourceSpans; keys: resourceMetrics\)"):
        list(read_spans(path))


def test_protobuf_ids_are_length_checked(tmp_path: Path) -> None:
    request = encode_spans(_spans())
    request.resource_spans[0].scope_spans[0].spans[0].span_id = b"\x01\x02"
    path = tmp_path / "t.pb"
    path.write_bytes(request.SerializeToString())
    with pytest.raises(OtlpFileError, match=r"spans\[0\] \('execute_tool refund'\): spanId is 2 bytes, not 8"):
        list(read_spans(path))


def test_not_a_trace_request(tmp_path: Path) -> None:
    path = tmp_path / "t.pb"
    path.write_bytes(ExportTraceServiceRequest().SerializeToString() + b"\x0a\x00")  # one empty ResourceSpans
    assert list(read_spans(path)) == []  # valid, just empty
    path.write_bytes(b"\xff\xff\xff")
    with pytest.raises(OtlpFileError, match="neither OTLP/JSON nor OTLP protobuf"):
        list(read_spans(path))
    path.write_bytes(b"\x08\x01")  # a valid message of some other type
    with pytest.raises(OtlpFileError, match="no resourceSpans"):
        list(read_spans(path))
    nested = tmp_path / "deep.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(OtlpFileError, match=r"nested too deeply|expected a JSON object"):
        list(read_spans(nested))
    with pytest.raises(OtlpFileError, match="is a directory"):
        list(read_spans(tmp_path))


def test_size_limit_applies_to_files_and_lines(tmp_path: Path) -> None:
    line = json_format.MessageToJson(encode_spans(_spans()), indent=None)
    path = tmp_path / "t.jsonl"
    path.write_text(line + "\n")
    assert len(list(read_spans(path, max_bytes=len(line) + 1))) == 2
    with pytest.raises(OtlpFileError, match="over the 100-byte limit"):
        list(read_spans(path, max_bytes=100))
