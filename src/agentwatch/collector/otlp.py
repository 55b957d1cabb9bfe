"""OTLP wire handling: split requests into per-span bytes, decode attributes, rebuild requests.

The collector never turns spans into SDK objects. A request is validated by
parsing it as ``ExportTraceServiceRequest`` once, then split with "view"
messages that share the wire format of the OTLP types but expose spans (and
resources, scopes, attribute values) as raw bytes. Spans are held as those
bytes; outgoing requests are assembled by concatenating them under their
original resource and scope. Only spans that receive flags are parsed into
full ``Span`` messages, edited and re-serialised.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

__all__ = [
    "DecodeError",
    "ExportTraceServiceRequest",
    "Group",
    "RequestBuilder",
    "Span",
    "SplitSpan",
    "anyvalue",
    "decode_attributes",
    "get_attribute",
    "json_request_to_protobuf",
    "response_body",
    "set_attributes",
    "split_request",
    "status_body",
]

STATUS_CODE_ERROR = 2
SPAN_KIND_NAMES = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


# --------------------------------------------------------------------------- view messages


def _build_views() -> dict[str, type[Message]]:
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="agentwatch/collector/otlp_views.proto", package="agentwatch.collector.views", syntax="proto3"
    )

    def message(name: str) -> descriptor_pb2.DescriptorProto:
        return fdp.message_type.add(name=name)

    def add(
        msg: Any, name: str, number: int, kind: int, *, repeated: bool = False, type_name: str = ""
    ) -> None:
        fd = msg.field.add(name=name, number=number, type=kind)
        fd.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
        if type_name:
            fd.type_name = f".agentwatch.collector.views.{type_name}"

    # Singular message fields (resource, scope) are read as *repeated* bytes: protobuf merges
    # repeated occurrences of a singular message field, which is what joining their payloads does.
    req = message("RequestView")
    add(req, "resource_spans", 1, F.TYPE_MESSAGE, repeated=True, type_name="ResourceSpansView")
    rs = message("ResourceSpansView")
    add(rs, "resource", 1, F.TYPE_BYTES, repeated=True)
    add(rs, "scope_spans", 2, F.TYPE_MESSAGE, repeated=True, type_name="ScopeSpansView")
    add(rs, "schema_url", 3, F.TYPE_STRING)
    ss = message("ScopeSpansView")
    add(ss, "scope", 1, F.TYPE_BYTES, repeated=True)
    add(ss, "spans", 2, F.TYPE_BYTES, repeated=True)
    add(ss, "schema_url", 3, F.TYPE_STRING)
    # The same request read for each span's ids, as protobuf reads them (the last occurrence
    # wins). Everything else is kept as unknown fields, re-serialized byte for byte, except the
    # span's status, an opaque message: repeated occurrences of it are merged when this view is
    # serialized, so its size shrinks exactly when some span carries its status more than once
    # (or a length was not written minimally): see split_request.
    message("OpaqueView")  # no fields: its payload stays unknown fields
    rid = message("RequestIdsView")
    add(rid, "resource_spans", 1, F.TYPE_MESSAGE, repeated=True, type_name="ResourceSpansIdsView")
    rsid = message("ResourceSpansIdsView")
    add(rsid, "scope_spans", 2, F.TYPE_MESSAGE, repeated=True, type_name="ScopeSpansIdsView")
    ssid = message("ScopeSpansIdsView")
    add(ssid, "spans", 2, F.TYPE_MESSAGE, repeated=True, type_name="SpanIdsView")
    spid = message("SpanIdsView")
    add(spid, "trace_id", 1, F.TYPE_BYTES)
    add(spid, "span_id", 2, F.TYPE_BYTES)
    add(spid, "parent_span_id", 4, F.TYPE_BYTES)
    add(spid, "status", 15, F.TYPE_MESSAGE, type_name="OpaqueView")
    statuses = message("StatusesView")
    add(statuses, "status", 15, F.TYPE_BYTES, repeated=True)
    ids = message("IdsView")
    add(ids, "trace_id", 1, F.TYPE_BYTES)
    add(ids, "span_id", 2, F.TYPE_BYTES)
    add(ids, "parent_span_id", 4, F.TYPE_BYTES)
    status = message("StatusView")
    add(status, "code", 3, F.TYPE_INT32)
    # Attributes stay serialized KeyValue messages: decoded (and cached) one by one.
    span = message("SpanView")
    add(span, "trace_id", 1, F.TYPE_BYTES)
    add(span, "span_id", 2, F.TYPE_BYTES)
    add(span, "parent_span_id", 4, F.TYPE_BYTES)
    add(span, "name", 5, F.TYPE_STRING)
    add(span, "kind", 6, F.TYPE_INT32)
    add(span, "start_time_unix_nano", 7, F.TYPE_FIXED64)
    add(span, "end_time_unix_nano", 8, F.TYPE_FIXED64)
    add(span, "attributes", 9, F.TYPE_BYTES, repeated=True)  # serialized KeyValue messages
    add(span, "status", 15, F.TYPE_BYTES)  # a serialized StatusView: empty (unset) on most spans

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    names = ("RequestView", "RequestIdsView", "StatusesView", "IdsView", "SpanView", "StatusView")
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"agentwatch.collector.views.{n}"))
        for n in names
    }


_VIEWS = _build_views()
RequestView: Any = _VIEWS["RequestView"]
RequestIdsView: Any = _VIEWS["RequestIdsView"]
StatusesView: Any = _VIEWS["StatusesView"]
IdsView: Any = _VIEWS["IdsView"]
SpanView: Any = _VIEWS["SpanView"]
StatusView: Any = _VIEWS["StatusView"]


# --------------------------------------------------------------------------- wire helpers


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_LEN = [varint(n) for n in range(16384)]


def length_prefix(n: int) -> bytes:
    return _SMALL_LEN[n] if n < 16384 else varint(n)


_FIELD_TAGS = [bytes(((number << 3) | 2,)) for number in range(16)]


def field_bytes(number: int, payload: bytes) -> bytes:
    """One length-delimited field: tag, length, payload."""
    tag = _FIELD_TAGS[number] if number < 16 else varint((number << 3) | 2)
    return tag + length_prefix(len(payload)) + payload


_SPAN_HEADERS = [b"\x12" + _SMALL_LEN[n] for n in range(16384)]


def _span_header(n: int) -> bytes:
    return _SPAN_HEADERS[n] if n < 16384 else b"\x12" + varint(n)


# --------------------------------------------------------------------------- splitting


class Group:
    """A resource + scope pair, held once and shared by every span that came under it.

    ``resource_head`` is the ResourceSpans' serialized ``resource`` field and
    ``resource_tail`` its ``schema_url`` field; likewise for the scope.
    """

    __slots__ = ("key", "resource_head", "resource_key", "resource_tail", "scope_head", "scope_tail")

    def __init__(self, resource: bytes, resource_schema: str, scope: bytes, scope_schema: str) -> None:
        self.resource_key = (resource, resource_schema)
        self.key = (resource, resource_schema, scope, scope_schema)
        self.resource_head = field_bytes(1, resource) if resource else b""
        self.resource_tail = field_bytes(3, resource_schema.encode()) if resource_schema else b""
        self.scope_head = field_bytes(1, scope) if scope else b""
        self.scope_tail = field_bytes(3, scope_schema.encode()) if scope_schema else b""


class GroupTable:
    """Interns groups so that spans from many requests share one object per resource/scope."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._table: dict[tuple[bytes, str, bytes, str], Group] = {}
        self._max = max_entries

    def get(self, resource: bytes, resource_schema: str, scope: bytes, scope_schema: str) -> Group:
        key = (resource, resource_schema, scope, scope_schema)
        group = self._table.get(key)
        if group is None:
            if len(self._table) >= self._max:
                self._table.clear()  # objects stay alive through the spans that use them
            group = self._table[key] = Group(resource, resource_schema, scope, scope_schema)
        return group


SplitSpan = tuple[Group, bytes, bytes, bytes, bytes]
"""``(group, span bytes, trace id, span id, parent span id)``; ids are raw bytes."""


_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


def _merged(occurrences: Sequence[bytes]) -> bytes:
    """A singular message field's payload as protobuf reads it: repeated occurrences merge."""
    return occurrences[0] if len(occurrences) == 1 else b"".join(occurrences)


def split_request(data: bytes, groups: GroupTable) -> tuple[list[SplitSpan], int, str]:
    """Validate an ``ExportTraceServiceRequest`` and split it into spans.

    Returns the spans, how many were rejected (invalid trace or span id), and
    why. Raises ``DecodeError`` when the bytes are not a valid request.

    Everything read here is what protobuf reads from the same bytes, whatever
    the encoding: ids come from a view parsed by protobuf (the last occurrence of
    a field wins), repeated occurrences of a resource or scope are merged, and
    the rare span that carries its status more than once is re-serialized by
    protobuf so that the decision path reads a single, merged status.
    """
    ExportTraceServiceRequest.FromString(data)  # full validation, nested messages included
    view = RequestView.FromString(data)
    ids = RequestIdsView.FromString(data)
    # Some span may hold its status twice (protobuf merges the two): look span by span then.
    careful = ids.ByteSize() != len(data)
    out: list[SplitSpan] = []
    rejected = 0
    reason = ""
    # ``[:]`` copies a upb container in one call (iterating it ends in a formatted IndexError).
    for rs, rs_ids in zip(view.resource_spans[:], ids.resource_spans[:], strict=True):
        resource = _merged(rs.resource[:]) if rs.resource else b""
        rschema = rs.schema_url
        for ss, ss_ids in zip(rs.scope_spans[:], rs_ids.scope_spans[:], strict=True):
            scope = _merged(ss.scope[:]) if ss.scope else b""
            group = groups.get(resource, rschema, scope, ss.schema_url)
            for raw, span_ids in zip(ss.spans[:], ss_ids.spans[:], strict=True):
                tid = span_ids.trace_id
                sid = span_ids.span_id
                pid = span_ids.parent_span_id
                if len(tid) != 16 or tid == _ZERO_TRACE:
                    rejected += 1
                    reason = "invalid trace_id (must be 16 bytes, not all zero)"
                    continue
                if len(sid) != 8 or sid == _ZERO_SPAN:
                    rejected += 1
                    reason = "invalid span_id (must be 8 bytes, not all zero)"
                    continue
                if pid and len(pid) != 8:
                    rejected += 1
                    reason = "invalid parent_span_id (must be empty or 8 bytes)"
                    continue
                if pid == _ZERO_SPAN:
                    pid = b""
                if careful and len(StatusesView.FromString(raw).status) > 1:
                    raw = Span.FromString(raw).SerializeToString()
                out.append((group, raw, tid, sid, pid))
    return out, rejected, reason


def maybe_run_span(raw: bytes) -> bool:
    """Cheap pre-filter: could this span be an agent run? (confirmed by :func:`is_run_span`).

    Looks for ``invoke_agent`` and ``.span.kind`` (``openinference.span.kind``,
    ``traceloop.span.kind``) in the serialized span.
    """
    # find, not ``in``: ``bytes in bytes`` first tries the needle as an int and formats a TypeError.
    return raw.find(b"invoke_agent") >= 0 or raw.find(b".span.kind") >= 0


def is_run_span(raw: bytes) -> bool:
    """Does the span open an agent run (GenAI ``invoke_agent``, OpenInference AGENT, OpenLLMetry agent)?"""
    view = SpanView.FromString(raw)
    if view.name.startswith("invoke_agent"):
        return True
    attrs = decode_attributes(view.attributes[:])
    if attrs.get("gen_ai.operation.name") == "invoke_agent":
        return True
    if str(attrs.get("openinference.span.kind", "")).upper() == "AGENT":
        return True
    return str(attrs.get("traceloop.span.kind", "")).lower() in ("agent", "workflow")


# --------------------------------------------------------------------------- attribute values

_unpack_double = struct.Struct("<d").unpack_from


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _from_message(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_from_message(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return json.dumps(
            {kv.key: _from_message(kv.value) for kv in value.kvlist_value.values},
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return getattr(value, kind)


def anyvalue(raw: bytes) -> Any:
    """Decode serialized ``AnyValue`` bytes into a plain Python value.

    Scalars map to str/bool/int/float, arrays to tuples, key-value lists to
    canonical JSON text and bytes to base64 text; an empty value is ``None``.
    """
    if not raw:
        return None
    tag = raw[0]
    value: Any
    try:
        if tag == 0x0A:  # string_value
            n, pos = _read_varint(raw, 1)
            # a string that is not the whole message: let protobuf sort it out
            value = _from_message(AnyValue.FromString(raw)) if pos + n != len(raw) else raw[pos:].decode("utf-8")
        elif tag == 0x10 and len(raw) == 2:  # bool_value, alone (else: a later field may win)
            value = raw[1] != 0
        elif tag == 0x18:  # int_value
            n, pos = _read_varint(raw, 1)
            if pos != len(raw) or n >> 64:  # more fields follow, or a varint past 64 bits
                raise IndexError
            value = n - (1 << 64) if n >= 1 << 63 else n
        elif tag == 0x21 and len(raw) == 9:  # double_value
            value = _unpack_double(raw, 1)[0]
        elif tag == 0x2A:  # array_value: ArrayValue { repeated AnyValue values = 1 }
            n, pos = _read_varint(raw, 1)
            if pos + n != len(raw):
                raise IndexError
            items = []
            while pos < len(raw):
                if raw[pos] != 0x0A:
                    raise IndexError
                n, pos = _read_varint(raw, pos + 1)
                if pos + n > len(raw):
                    raise IndexError
                items.append(anyvalue(raw[pos : pos + n]))
                pos += n
            value = tuple(items)
        else:
            value = _from_message(AnyValue.FromString(raw))
    except (IndexError, UnicodeDecodeError):
        value = _from_message(AnyValue.FromString(raw))
    return value


_KV_CACHE: dict[bytes, tuple[str, Any]] = {}
_KV_CACHE_MAX = 32768
_KV_CACHE_ITEM = 64  # only short attributes are cached (operation names, models, tool names, steps...)
_EMPTY = ("", None)
# Attributes whose values are identifiers or fingerprints, new on (nearly) every span: never cached,
# so that the cache keeps the values that do repeat. Keys found to behave the same way in the
# traffic are added when the cache fills up (see _learn_uncached).
_UNCACHED: set[str] = {
    "gen_ai.response.id",
    "gen_ai.tool.call.id",
    "gen_ai.conversation.id",
    "agentwatch.run.id",
    "agentwatch.tool.args_hash",
    "agentwatch.tool.result_hash",
    "agentwatch.llm.tool_calls",
    "agentwatch.llm.system_hash",
    "agentwatch.llm.user_hash",
    "agentwatch.cost_usd",
    "agentwatch.run.cost_usd",
}
_UNCACHED_MAX = 256
_UNCACHED_SHARE = 8  # a key holding more than 1/8 of a full cache is not worth caching


def _learn_uncached(cache: dict[bytes, tuple[str, Any]]) -> None:
    """Stop caching keys whose values rarely repeat, judged on a full cache before it is cleared.

    Such values cost a cache entry each (and a pass of the cyclic GC over it) and
    crowd out the values that do repeat; which keys they are depends on the
    instrumentation (token counts, entity lists, ids under custom names).
    """
    # list(): a snapshot taken in one call, so other threads may keep decoding meanwhile
    items = list(cache.values())
    counts = Counter(item[0] for item in items)
    limit = len(items) // _UNCACHED_SHARE
    for key, n in counts.items():
        if n > limit and len(_UNCACHED) < _UNCACHED_MAX:
            _UNCACHED.add(key)


def _keyvalue(kv: bytes) -> tuple[str, Any]:
    """Decode one serialized ``KeyValue`` (key = 1, value = 2) by slicing; odd layouts use the parser."""
    try:
        # The common layout: short key, short value, one-byte lengths.
        if kv[0] == 0x0A and kv[1] < 0x80:
            end = 2 + kv[1]
            size = len(kv)
            if end + 2 < size and kv[end] == 0x12 and kv[end + 1] < 0x80 and end + 2 + kv[end + 1] == size:
                key = kv[2:end].decode()
                value = kv[end + 2 :]
                if value[0] == 0x0A and value[1] < 0x80 and len(value) == 2 + value[1]:
                    return key, value[2:].decode()
                return key, anyvalue(value)
        if kv[0] == 0x0A:
            klen, pos = _read_varint(kv, 1)
            end = pos + klen
            key = kv[pos:end].decode()
            if end == len(kv):
                return key, None
            if kv[end] == 0x12:
                vlen, vpos = _read_varint(kv, end + 1)
                if vpos + vlen == len(kv):
                    return key, anyvalue(kv[vpos:])
    except (IndexError, UnicodeDecodeError):
        pass
    message = KeyValue.FromString(kv)
    return message.key, _from_message(message.value)


def _string_array(kv: bytes, key: bytes, pos: int, size: int) -> tuple[str, Any]:
    """An array of short strings (entities, tool calls), or ``_EMPTY`` for any other layout."""
    items: list[str] = []
    append = items.append
    while pos + 4 <= size:
        n = kv[pos + 3]
        # element: 0x0A (n + 2) AnyValue{0x0A n string}, one-byte lengths
        if kv[pos] != 0x0A or kv[pos + 2] != 0x0A or kv[pos + 1] != n + 2 or n > 0x7D:
            return _EMPTY
        start = pos + 4
        pos = start + n
        append(kv[start:pos].decode())
    # anything left over (an empty or non-string element) goes to the general decoder
    return (key.decode(), tuple(items)) if pos == size else _EMPTY


def decode_attributes(attributes: Iterable[bytes]) -> dict[str, Any]:
    """Serialized ``KeyValue`` messages as a dict of plain Python values (empty values left out).

    The hot path of the collector: short keys with string, int, bool or double
    values are decoded inline by slicing; short attributes are cached by their
    bytes (operation names, models, tool names, steps repeat across spans).
    """
    out: dict[str, Any] = {}
    cache = _KV_CACHE
    if len(cache) >= _KV_CACHE_MAX:
        _learn_uncached(cache)
        cache.clear()
    uncached = _UNCACHED
    get = cache.get
    item_max = _KV_CACHE_ITEM
    for kv in attributes:
        size = len(kv)
        item = get(kv) if size <= item_max else None
        if item is None:
            item = _EMPTY
            if size > 4 and kv[0] == 0x0A and kv[1] < 0x80:
                end = 2 + kv[1]
                rest = size - end
                # value: tag 0x12, one-byte length (the rest), then AnyValue {tag, payload}
                if rest > 3 and kv[end] == 0x12 and kv[end + 1] == rest - 2:
                    tag = kv[end + 2]
                    if tag == 0x0A:
                        if kv[end + 3] == rest - 4:
                            item = (kv[2:end].decode(), kv[end + 4 :].decode())
                    elif tag == 0x18:
                        if rest == 4 and kv[end + 3] < 0x80:
                            item = (kv[2:end].decode(), kv[end + 3])
                        elif rest == 5 and kv[end + 3] >= 0x80 and kv[end + 4] < 0x80:
                            # two-byte varint: 128..16383 (token counts, durations)
                            item = (kv[2:end].decode(), (kv[end + 3] & 0x7F) | (kv[end + 4] << 7))
                    elif tag == 0x10:
                        if rest == 4:
                            item = (kv[2:end].decode(), kv[end + 3] != 0)
                    elif tag == 0x21:
                        if rest == 11:
                            item = (kv[2:end].decode(), _unpack_double(kv, end + 3)[0])
                    elif tag == 0x2A and kv[end + 3] == rest - 4:
                        item = _string_array(kv, kv[2:end], end + 4, size)
            if item is _EMPTY:
                item = _keyvalue(kv)
            if size <= item_max and item[0] not in uncached:
                cache[kv] = item
        key, value = item
        if value is not None:
            out[key] = value
    return out


def to_anyvalue(value: Any, target: AnyValue) -> None:
    """Write a Python attribute value into an ``AnyValue``."""
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, (list, tuple)):
        array = ArrayValue()
        for item in value:
            to_anyvalue(item, array.values.add())
        target.array_value.CopyFrom(array)
    elif isinstance(value, bytes):
        target.bytes_value = value
    else:
        target.string_value = str(value)


def get_attribute(attributes: Iterable[KeyValue], key: str) -> Any:
    for kv in attributes:
        if kv.key == key:
            return _from_message(kv.value)
    return None


def set_attributes(attributes: Any, values: Mapping[str, Any]) -> None:
    """Set (replace or append) attributes on a repeated ``KeyValue`` field."""
    remaining = dict(values)
    for kv in attributes:
        if kv.key in remaining:
            kv.ClearField("value")
            to_anyvalue(remaining.pop(kv.key), kv.value)
    for key, value in remaining.items():
        to_anyvalue(value, attributes.add(key=key).value)


def edit_span(
    raw: bytes,
    attrs: Mapping[str, Any],
    new_attrs: Mapping[str, Any],
    events: Sequence[tuple[str, Mapping[str, Any]]],
    stamp: int,
) -> bytes:
    """The span with ``new_attrs`` set and ``events`` (stamped ``stamp``) added.

    When none of the keys exists yet (``attrs`` holds the span's decoded
    attributes), the new attributes and events are appended as extra repeated
    fields: valid protobuf, and no re-encoding of the span. Otherwise the span
    is parsed, edited in place and re-serialised.
    """
    if not any(key in attrs for key in new_attrs):
        parts = [raw]
        for key, value in new_attrs.items():
            parts.append(keyvalue_field(key, value))
        for name, event_attrs in events:
            parts.append(field_bytes(11, encode_event(name, stamp, event_attrs)))
        return b"".join(parts)
    span = Span.FromString(raw)
    set_attributes(span.attributes, new_attrs)
    for name, event_attrs in events:
        set_attributes(span.events.add(name=name, time_unix_nano=stamp).attributes, event_attrs)
    return span.SerializeToString()


# Hand encoders for the few shapes the collector appends to spans (its tags), so a
# tagged span costs byte concatenation, not protobuf objects. They write exactly
# what the protobuf serializer writes (tests compare the bytes).

_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack


def encode_anyvalue(value: Any) -> bytes:
    """``AnyValue`` bytes for a str, bool, int, float, bytes or a sequence of those."""
    if value.__class__ is str:
        return field_bytes(1, value.encode("utf-8"))
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            raise ValueError(f"Value out of range: {value}")  # as protobuf says for int64
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, (list, tuple)):
        return field_bytes(5, b"".join(field_bytes(1, encode_anyvalue(item)) for item in value))
    if isinstance(value, bytes):
        return field_bytes(7, value)
    if isinstance(value, str):
        return field_bytes(1, value.encode("utf-8"))
    return field_bytes(1, str(value).encode("utf-8"))


def encode_keyvalue(key: str, value: Any) -> bytes:
    """Serialized ``KeyValue`` (key = 1, value = 2; an empty key is left out, as proto3 does)."""
    head = field_bytes(1, key.encode("utf-8")) if key else b""
    return head + field_bytes(2, encode_anyvalue(value))


def encode_event(name: str, stamp: int, attributes: Mapping[str, Any]) -> bytes:
    """Serialized ``Span.Event`` (time = 1, name = 2, attributes = 3)."""
    parts = [b"\x09" + _pack_fixed64(stamp)] if stamp else []
    if name:
        parts.append(field_bytes(2, name.encode("utf-8")))
    for key, value in attributes.items():
        parts.append(field_bytes(3, encode_keyvalue(key, value)))
    return b"".join(parts)


def keyvalue_field(key: str, value: Any) -> bytes:
    """A serialized ``attributes`` entry (Span field 9), ready to append to span bytes."""
    return field_bytes(9, encode_keyvalue(key, value))


# --------------------------------------------------------------------------- outgoing requests


class RequestBuilder:
    """Collects spans under their groups and emits ``ExportTraceServiceRequest`` bytes.

    Spans are kept as (header, bytes) pieces per group with running sizes, so
    the request is produced by one ``join`` with no intermediate copies.
    """

    def __init__(self) -> None:
        self._groups: dict[Group, tuple[list[bytes], list[int]]] = {}
        self.spans = 0
        self.size = 0

    def add(self, group: Group, raw: bytes) -> None:
        self.add_all(((group, raw),))

    def add_all(self, spans: Iterable[tuple[Group, bytes]]) -> None:
        """Add spans (a decided trace, usually under one group): the group is looked up once per run of it."""
        groups = self._groups
        last: Group | None = None
        pieces: list[bytes] = []
        sizes: list[int] = []
        count = total = 0
        for group, raw in spans:
            if group is not last:
                entry = groups.get(group)
                if entry is None:
                    entry = groups[group] = ([], [len(group.scope_head) + len(group.scope_tail)])
                    self.size += len(group.resource_head) + len(group.scope_head) + 16
                pieces, sizes = entry
                last = group
            n = len(raw)
            header = _span_header(n)
            pieces.append(header)
            pieces.append(raw)
            sizes[0] += len(header) + n
            count += 1
            total += n
        self.spans += count
        self.size += total + 4 * count

    def build(self) -> bytes:
        by_resource: dict[tuple[bytes, str], list[Group]] = {}
        for group in self._groups:
            by_resource.setdefault(group.resource_key, []).append(group)
        out: list[bytes] = []
        for groups in by_resource.values():
            first = groups[0]
            scope_sizes = [self._groups[g][1][0] for g in groups]
            rs_size = len(first.resource_head) + len(first.resource_tail)
            rs_size += sum(1 + len(length_prefix(n)) + n for n in scope_sizes)
            out.append(b"\x0a")
            out.append(length_prefix(rs_size))
            out.append(first.resource_head)
            for group, size in zip(groups, scope_sizes, strict=True):
                out.append(b"\x12")
                out.append(length_prefix(size))
                out.append(group.scope_head)
                out.extend(self._groups[group][0])
                out.append(group.scope_tail)
            out.append(first.resource_tail)
        return b"".join(out)


# --------------------------------------------------------------------------- JSON (OTLP/JSON encoding)

_ID_FIELDS = {
    "traceId": 16,
    "spanId": 8,
    "parentSpanId": 8,
    "trace_id": 16,
    "span_id": 8,
    "parent_span_id": 8,
}


def _hex_to_b64(value: Any, size: int) -> str:
    """An OTLP/JSON id as protobuf's JSON mapping wants it (base64).

    OTLP/JSON writes ids as hex; protobuf's own JSON mapping (which some SDKs and
    tools emit) writes base64. The two cannot be confused: ``size`` bytes are
    ``2*size`` hex digits but ``4*ceil(size/3)`` base64 characters.
    """
    if value in ("", None):
        return ""
    raw = b""
    if isinstance(value, str):
        try:
            if len(value) == 2 * size:
                raw = binascii.unhexlify(value)
            else:
                text = value.replace("-", "+").replace("_", "/")
                raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) != size:
        raw = b"\x00"  # wrong length: rejected by the id checks (partial success)
    return base64.b64encode(raw).decode("ascii")


def _fix_ids(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    for key, size in _ID_FIELDS.items():
        if key in out:
            out[key] = _hex_to_b64(out[key], size)
    return out


def _items(container: Any, *names: str) -> list[Any]:
    for name in names:
        value = container.get(name) if isinstance(container, Mapping) else None
        if value is not None:
            if not isinstance(value, list):
                raise ValueError(f"{name} must be an array")
            return value
    return []


MAX_NESTING = 100
"""Nested messages allowed in a request, JSON or protobuf (protobuf's own parser limit)."""


def json_request_to_protobuf(body: bytes) -> bytes:
    """OTLP/JSON (hex ids, lowerCamelCase, int64 as strings) to protobuf request bytes.

    Raises ``ValueError`` on invalid JSON or a structure that does not match.
    Unknown fields are ignored, as the OTLP specification requires.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"invalid JSON: nested deeper than {MAX_NESTING} levels") from None
    if not isinstance(data, dict):
        raise ValueError("the JSON body must be an object")
    for rs in _items(data, "resourceSpans", "resource_spans"):
        if not isinstance(rs, dict):
            raise ValueError("resourceSpans entries must be objects")
        for ss in _items(rs, "scopeSpans", "scope_spans", "instrumentationLibrarySpans"):
            if not isinstance(ss, dict):
                raise ValueError("scopeSpans entries must be objects")
            key = "spans"
            spans = _items(ss, key)
            fixed = []
            for span in spans:
                if not isinstance(span, dict):
                    raise ValueError("spans entries must be objects")
                span = _fix_ids(span)
                if "links" in span and isinstance(span["links"], list):
                    span["links"] = [
                        _fix_ids(link) if isinstance(link, dict) else link for link in span["links"]
                    ]
                fixed.append(span)
            ss[key] = fixed
    message = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True, max_recursion_depth=MAX_NESTING)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise ValueError(f"not an OTLP trace request: {exc}") from None
    except RecursionError:
        raise ValueError(f"not an OTLP trace request: nested deeper than {MAX_NESTING} levels") from None
    return message.SerializeToString()


# --------------------------------------------------------------------------- responses

GRPC_INVALID_ARGUMENT = 3
GRPC_RESOURCE_EXHAUSTED = 8
GRPC_UNAVAILABLE = 14


def response_body(rejected: int, message: str, *, as_json: bool) -> bytes:
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if as_json:
        return json_format.MessageToJson(response, indent=None).encode()
    return response.SerializeToString()


def status_body(code: int, message: str, *, as_json: bool, details: Sequence[Message] = ()) -> bytes:
    """A ``google.rpc.Status`` error body in the request's encoding."""
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        status.details.add().Pack(detail)
    if as_json:
        return json.dumps({"code": code, "message": message}).encode()
    return status.SerializeToString()


def collector_group(resource_key: tuple[bytes, str], version: str) -> Group:
    """The group for spans the collector itself writes: the app's resource, our scope."""
    scope = InstrumentationScope(name="agentwatch.collector", version=version).SerializeToString()
    return Group(resource_key[0], resource_key[1], scope, "")
