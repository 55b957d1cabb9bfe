"""The collector's fast OTLP decoders against the protobuf parser, on generated encodings.

Every encoding here is valid protobuf, but many are unusual: a field written
twice (protobuf keeps the last scalar, the last oneof member, and merges
repeated occurrences of a singular message), fields out of order, unknown
fields of every wire type, a known field number with the wrong wire type,
non-minimal varints, empty values, sub-messages split across occurrences.
Whatever the encoding, the collector must read exactly what protobuf reads.
The generator is seeded, so a failure reproduces.
"""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from agentwatch.collector.otlp import (
    GroupTable,
    SpanView,
    StatusView,
    _from_message,
    anyvalue,
    decode_attributes,
    is_run_span,
    split_request,
)

SEED = 20261206


# --------------------------------------------------------------------------- wire writer


def varint(n: int, pad: int = 0) -> bytes:
    """``n`` as a varint; ``pad`` extra bytes make it non-minimal (still at most 10 bytes)."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            break
    pad = min(pad, 10 - len(out))
    if pad > 0:
        out[-1] |= 0x80
        out.extend(b"\x80" * (pad - 1))
        out.append(0)
    return bytes(out)


def tag(number: int, wire: int) -> bytes:
    return varint((number << 3) | wire)


class Writer:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pad(self) -> int:
        return self.rng.choice((1, 2)) if self.rng.random() < 0.08 else 0

    def ld(self, number: int, payload: bytes) -> bytes:
        return tag(number, 2) + varint(len(payload), self.pad()) + payload

    def vi(self, number: int, value: int) -> bytes:
        return tag(number, 0) + varint(value, self.pad())

    def fixed64(self, number: int, value: bytes) -> bytes:
        return tag(number, 1) + value

    def unknown(self) -> bytes:
        number = self.rng.choice((8, 9, 12, 17, 30, 99, 1000))
        wire = self.rng.choice((0, 1, 2, 5))
        if wire == 0:
            return self.vi(number, self.rng.choice((0, 1, 300, 2**63)))
        if wire == 1:
            return tag(number, 1) + self.rng.randbytes(8)
        if wire == 5:
            return tag(number, 5) + self.rng.randbytes(4)
        # a packed run of varints, or some bytes
        packed = b"".join(varint(self.rng.randrange(1000)) for _ in range(self.rng.randrange(4)))
        return self.ld(number, packed if self.rng.random() < 0.5 else self.rng.randbytes(5))

    def arrange(self, fields: list[bytes]) -> bytes:
        if self.rng.random() < 0.3:
            self.rng.shuffle(fields)
        if self.rng.random() < 0.15:
            fields.insert(self.rng.randrange(len(fields) + 1), self.unknown())
        return b"".join(fields)


STRINGS = ("", "a", "invoke_agent", "execute_tool", "AGENT", "agent", "workflow", "héllo ✓", "x" * 150)
KEYS = (
    "gen_ai.operation.name",
    "openinference.span.kind",
    "traceloop.span.kind",
    "gen_ai.tool.name",
    "k",
    "",
    "agentwatch.step",
    "a" * 140,
)
INTS = (0, 1, 5, 127, 128, 300, 16383, 16384, 2**31, 2**63 - 1, -1, -(2**63), -300)


def any_value(w: Writer, depth: int = 0) -> bytes:
    rng = w.rng
    roll = rng.random()
    count = 0 if roll < 0.05 else 1 if roll < 0.65 else rng.choice((2, 2, 3))
    kinds = ["string", "bool", "int", "double", "bytes", "wrong_wire"]
    if depth < 3:
        kinds += ["array", "array", "kvlist"]
    fields = []
    for _ in range(count):
        kind = rng.choice(kinds)
        if kind == "string":
            fields.append(w.ld(1, rng.choice(STRINGS).encode()))
        elif kind == "bool":
            fields.append(w.vi(2, rng.choice((0, 1, 1, 2))))
        elif kind == "int":
            fields.append(w.vi(3, rng.choice(INTS) & 0xFFFFFFFFFFFFFFFF))
        elif kind == "double":
            value = rng.choice((0.0, -0.0, 1.5, -2.25, 1e300, math.inf, math.nan, rng.random()))
            fields.append(w.fixed64(4, struct.pack("<d", value)))
        elif kind == "bytes":
            fields.append(w.ld(7, rng.randbytes(rng.randrange(6))))
        elif kind == "wrong_wire":  # a known number with another wire type: an unknown field to protobuf
            fields.append(w.ld(rng.choice((2, 3)), b"zz") if rng.random() < 0.5 else w.vi(1, 7))
        elif kind == "array":
            items = [w.ld(1, any_value(w, depth + 1)) for _ in range(rng.randrange(4))]
            if items and rng.random() < 0.2:  # the array split over two occurrences: merged
                cut = rng.randrange(len(items) + 1)
                fields.append(w.ld(5, b"".join(items[:cut])))
                fields.append(w.ld(5, b"".join(items[cut:])))
            else:
                fields.append(w.ld(5, w.arrange(items) if rng.random() < 0.1 else b"".join(items)))
        else:
            entries = [w.ld(1, key_value(w, depth + 1)) for _ in range(rng.randrange(3))]
            fields.append(w.ld(6, b"".join(entries)))
    return w.arrange(fields)


def key_value(w: Writer, depth: int = 0) -> bytes:
    rng = w.rng
    fields = []
    if rng.random() < 0.95:
        fields.append(w.ld(1, rng.choice(KEYS).encode()))
    if rng.random() < 0.95:
        fields.append(w.ld(2, any_value(w, depth)))
    if rng.random() < 0.1:
        fields.append(w.ld(1, rng.choice(KEYS).encode()))  # the key again: the last one wins
    if rng.random() < 0.1:
        fields.append(w.ld(2, any_value(w, depth)))  # the value again: merged with the first
    return w.arrange(fields)


def ident(rng: random.Random, size: int) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return bytes(size)
    if roll < 0.08:
        return rng.randbytes(rng.choice((0, size - 1, size + 1)))
    return rng.randbytes(size)


def status(w: Writer) -> bytes:
    fields = []
    if w.rng.random() < 0.5:
        fields.append(w.ld(2, w.rng.choice(STRINGS).encode()))
    if w.rng.random() < 0.7:
        fields.append(w.vi(3, w.rng.choice((0, 1, 2))))
    return w.arrange(fields)


def span(w: Writer) -> bytes:
    rng = w.rng
    fields = [w.ld(1, ident(rng, 16)), w.ld(2, ident(rng, 8))]
    if rng.random() < 0.3:
        fields.append(w.ld(3, b"vendor=x"))
    if rng.random() < 0.8:
        fields.append(w.ld(4, ident(rng, 8)))
    fields.append(w.ld(5, (rng.choice(("invoke_agent support", "chat m", "execute_tool t", "")).encode())))
    fields.append(w.vi(6, rng.randrange(6)))
    fields.append(w.fixed64(7, struct.pack("<Q", rng.randrange(2**62))))
    fields.append(w.fixed64(8, struct.pack("<Q", rng.randrange(2**62))))
    fields.extend(w.ld(9, key_value(w)) for _ in range(rng.randrange(6)))
    if rng.random() < 0.5:
        fields.append(w.ld(15, status(w)))
    # the unusual: ids, name and status written again (the last id wins, statuses merge)
    for _ in range(rng.choice((0, 0, 0, 1, 2))):
        choice = rng.randrange(5)
        if choice == 0:
            fields.append(w.ld(1, ident(rng, 16)))
        elif choice == 1:
            fields.append(w.ld(2, ident(rng, 8)))
        elif choice == 2:
            fields.append(w.ld(4, ident(rng, 8) if rng.random() < 0.8 else b""))
        elif choice == 3:
            fields.append(w.ld(15, status(w)))
        else:
            fields.append(w.ld(5, b"invoke_agent again"))
    return w.arrange(fields) if rng.random() < 0.3 else b"".join(fields)


def request(w: Writer) -> bytes:
    rng = w.rng
    out = []
    for _ in range(rng.randrange(1, 3)):
        rs = []
        for _ in range(rng.choice((0, 1, 1, 2))):
            attrs = b"".join(w.ld(1, key_value(w)) for _ in range(rng.randrange(3)))
            rs.append(w.ld(1, attrs))  # resource, maybe more than once: merged
        for _ in range(rng.randrange(1, 3)):
            ss = []
            for _ in range(rng.choice((0, 1, 1, 2))):
                ss.append(w.ld(1, w.ld(1, rng.choice(STRINGS).encode()) + w.ld(2, b"1.0")))
            ss.extend(w.ld(2, span(w)) for _ in range(rng.randrange(4)))
            if rng.random() < 0.2:
                ss.append(w.ld(3, b"https://schema/1"))
            rs.append(w.ld(2, w.arrange(ss)))
        if rng.random() < 0.2:
            rs.append(w.ld(3, b"https://schema/r"))
        out.append(w.ld(1, w.arrange(rs)))
    return b"".join(out)


# --------------------------------------------------------------------------- comparisons


def norm(value: Any) -> Any:
    """Floats by their bits (NaN == NaN, -0.0 != 0.0); tuples element-wise."""
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, tuple):
        return tuple(norm(v) for v in value)
    return value


def attributes_of(message: Span) -> dict[str, Any]:
    """A span's attributes as the collector defines them: in order, empty values left out."""
    out = {}
    for kv in message.attributes:
        value = _from_message(kv.value)
        if value is not None:
            out[kv.key] = norm(value)
    return out


def reference_run(message: Span) -> bool:
    if message.name.startswith("invoke_agent"):
        return True
    attrs = attributes_of(message)
    if attrs.get("gen_ai.operation.name") == "invoke_agent":
        return True
    if str(attrs.get("openinference.span.kind", "")).upper() == "AGENT":
        return True
    return str(attrs.get("traceloop.span.kind", "")).lower() in ("agent", "workflow")


def test_anyvalue_and_keyvalue_match_protobuf() -> None:
    w = Writer(random.Random(SEED))
    compared = 0
    for _ in range(14_000):
        raw = any_value(w)
        try:
            expected = _from_message(AnyValue.FromString(raw))
        except DecodeError:
            continue
        assert norm(anyvalue(raw)) == norm(expected), raw.hex()
        compared += 1
    for _ in range(8_000):
        raw = key_value(w)
        try:
            message = KeyValue.FromString(raw)
        except DecodeError:
            continue
        value = _from_message(message.value)
        expected_attrs = {} if value is None else {message.key: norm(value)}
        got = {k: norm(v) for k, v in decode_attributes([raw]).items()}
        assert got == expected_attrs, raw.hex()
        # twice: the second answer comes from the attribute cache
        assert {k: norm(v) for k, v in decode_attributes([raw]).items()} == expected_attrs
        compared += 1
    assert compared >= 20_000


def test_split_request_matches_protobuf() -> None:
    w = Writer(random.Random(SEED + 1))
    spans_compared = 0
    unusual = 0
    for _ in range(3_000):
        data = request(w)
        try:
            reference = ExportTraceServiceRequest.FromString(data)
        except DecodeError:
            with pytest.raises(DecodeError):
                split_request(data, GroupTable())
            continue
        out, rejected, reason = split_request(data, GroupTable())
        expected = []
        expected_rejected = 0
        for rs in reference.resource_spans:
            for ss in rs.scope_spans:
                for message in ss.spans:
                    tid, sid, pid = message.trace_id, message.span_id, message.parent_span_id
                    if (
                        len(tid) != 16
                        or tid == bytes(16)
                        or len(sid) != 8
                        or sid == bytes(8)
                        or (pid and len(pid) != 8)
                    ):
                        expected_rejected += 1
                        continue
                    expected.append((rs, ss, message))
        assert rejected == expected_rejected
        assert bool(reason) == bool(rejected)
        assert len(out) == len(expected)
        for (group, raw, tid, sid, pid), (rs, ss, message) in zip(out, expected, strict=True):
            assert Span.FromString(raw) == message
            assert (tid, sid) == (message.trace_id, message.span_id)
            assert pid == (b"" if message.parent_span_id == bytes(8) else message.parent_span_id)
            resource, resource_schema, scope, scope_schema = group.key
            assert Resource.FromString(resource) == rs.resource and resource_schema == rs.schema_url
            assert InstrumentationScope.FromString(scope) == ss.scope and scope_schema == ss.schema_url
            # what the decision path reads from the span bytes
            view = SpanView.FromString(raw)
            code = StatusView.FromString(view.status).code if view.status else 0
            assert code == message.status.code
            assert (view.name, view.kind, view.start_time_unix_nano) == (
                message.name,
                message.kind,
                message.start_time_unix_nano,
            )
            expected_attrs = attributes_of(message)
            got = {k: norm(v) for k, v in decode_attributes(view.attributes[:]).items()}
            assert got == expected_attrs
            assert is_run_span(raw) == reference_run(message)
            spans_compared += 1
            unusual += raw.count(b"invoke_agent again") > 0
    assert spans_compared >= 2_000 and unusual > 50


# --------------------------------------------------------------------------- the reviewed cases


def test_last_oneof_member_wins() -> None:
    # bool_value = true, then string_value = "x": protobuf reads "x"
    raw = b"\x10\x01" + b"\x0a\x01x"
    assert anyvalue(raw) == _from_message(AnyValue.FromString(raw)) == "x"
    # int_value = 5, then bool_value = false
    raw = b"\x18\x05\x10\x00"
    assert anyvalue(raw) is False
    kv = b"\x0a\x01k\x12" + bytes([len(raw)]) + raw
    assert decode_attributes([kv]) == {"k": False}


def _one_span_request(span_bytes: bytes) -> bytes:
    scope_spans = b"\x12" + varint(len(span_bytes)) + span_bytes
    resource_spans = b"\x12" + varint(len(scope_spans)) + scope_spans
    return b"\x0a" + varint(len(resource_spans)) + resource_spans


def test_last_trace_id_wins_and_all_zero_is_rejected() -> None:
    good = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, parent_span_id=b"\x04" * 8).SerializeToString()
    data = _one_span_request(good + b"\x0a\x10" + bytes(16))  # trace_id again: all zero
    out, rejected, reason = split_request(data, GroupTable())
    assert out == [] and rejected == 1 and "trace_id" in reason

    data = _one_span_request(good + b"\x0a\x10" + b"\x03" * 16)
    ((_, _, tid, sid, _),) = split_request(data, GroupTable())[0]
    assert tid == b"\x03" * 16 and sid == b"\x02" * 8


def test_repeated_resource_and_status_are_merged() -> None:
    span_bytes = (
        Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="s").SerializeToString()
        + b"\x7a\x02\x18\x02"  # status { code: ERROR }
        + b"\x7a\x03\x12\x01m"  # status { message: "m" }: merged, the code stays ERROR
    )
    scope_spans = b"\x12" + varint(len(span_bytes)) + span_bytes
    scope_spans = b"\x12" + varint(len(scope_spans)) + scope_spans
    first = Resource(attributes=[KeyValue(key="service.name")]).SerializeToString()
    second = Resource(dropped_attributes_count=3).SerializeToString()
    resource_spans = b"\x0a" + varint(len(first)) + first + b"\x0a" + varint(len(second)) + second + scope_spans
    data = b"\x0a" + varint(len(resource_spans)) + resource_spans
    ((group, raw, _, _, _),) = split_request(data, GroupTable())[0]
    resource = Resource.FromString(group.key[0])
    assert resource.dropped_attributes_count == 3 and resource.attributes[0].key == "service.name"
    view = SpanView.FromString(raw)
    assert StatusView.FromString(view.status).code == 2


def test_what_sdks_send_takes_the_fast_path() -> None:
    """Canonical encodings (the OTel SDK's exporter, the collector's own batches) are not re-checked
    span by span: the ids view re-serializes to exactly their size."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from agentwatch.collector.otlp import RequestIdsView

    from .helpers import agent_run, capture

    data = encode_spans(capture(agent_run)).SerializeToString()
    assert RequestIdsView.FromString(data).ByteSize() == len(data)
    unusual = data + b"\x0a\x80\x00"  # one more (empty) resource_spans, its length in two bytes
    assert RequestIdsView.FromString(unusual).ByteSize() != len(unusual)
