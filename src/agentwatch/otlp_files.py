"""Read OpenTelemetry trace files: the one reader for every command that takes a trace file.

Three encodings are recognised from the content (the file name is only a hint):

* OTLP protobuf: one serialized ``ExportTraceServiceRequest`` (what
  ``encode_spans(...).SerializeToString()`` or a proxy capturing OTLP/HTTP writes);
* OTLP/JSON: one ``ExportTraceServiceRequest`` object. Ids may be hex (the OTLP
  specification's JSON encoding) or base64 (what protobuf's generic JSON
  mapping, ``MessageToJson``, writes); each id field is decoded on its own and
  its length checked (trace ids 16 bytes, span ids 8);
* JSON Lines: one OTLP/JSON request per line, as the OpenTelemetry Collector's
  ``file`` exporter writes. Lines are read and converted one at a time.

Everything read is bounded: a file larger than ``max_bytes``
(:data:`DEFAULT_MAX_BYTES`, 256 MiB, unless the caller raises it) is refused
before it is read, as is a JSON Lines line over the same limit. Anything that
is not OTLP trace data (an empty file, JSON without ``resourceSpans``, bytes
that are not a trace request, an id of the wrong length or alphabet) raises
:class:`OtlpFileError` with a message naming the file, the line, the span and
the field, never a partial silent result.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from .collector.otlp import decode_attributes

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FileSpan",
    "OtlpFileError",
    "SpanEvent",
    "decode_id",
    "json_request",
    "read_requests",
    "request_spans",
    "read_spans",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Files (and JSON Lines lines) larger than this are refused unless the caller passes a larger limit."""

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8
STATUS_CODE_ERROR = 2
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")


class OtlpFileError(ValueError):
    """The file is missing, too large, or not OTLP trace data; the message says where and why."""


@dataclass(frozen=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class FileSpan:
    """One span read from a file, with ids as bytes and attributes decoded as the collector decodes them.

    ``raw`` is the span's protobuf encoding (ids already decoded), for callers
    that work on OTLP bytes (the collector's record path); ``source`` says where
    it came from (``file``, ``file:line``) for error messages.
    """

    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    attributes: Mapping[str, Any]
    events: tuple[SpanEvent, ...]
    resource: Mapping[str, Any]
    scope_name: str
    scope_version: str
    source: str
    raw: bytes

    @property
    def trace_hex(self) -> str:
        return self.trace_id.hex()

    @property
    def span_hex(self) -> str:
        return self.span_id.hex()

    @property
    def parent_hex(self) -> str | None:
        return self.parent_span_id.hex() if self.parent_span_id else None

    @property
    def is_error(self) -> bool:
        return self.status_code == STATUS_CODE_ERROR


# --------------------------------------------------------------------------- ids


def decode_id(value: Any, size: int, field: str, where: str) -> bytes:
    """One OTLP/JSON id: ``2*size`` hex digits, else base64 (standard or URL-safe) of ``size`` bytes.

    The two cannot be confused: 16 bytes are 32 hex digits but 24 base64
    characters (22 unpadded), 8 bytes 16 hex digits but 12 (11). An empty value
    is ``b""`` (no parent); anything else raises :class:`OtlpFileError`.
    """
    if value is None or value == "":
        return b""
    if not isinstance(value, str):
        raise OtlpFileError(f"{where}: {field} must be a string, not {type(value).__name__}")
    if len(value) == 2 * size and _HEX_DIGITS.issuperset(value):
        return bytes.fromhex(value)
    text = value.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != size:
        shown = value if len(value) <= 64 else value[:64] + "..."
        raise OtlpFileError(f"{where}: {field} {shown!r} is neither {2 * size} hex digits nor base64 of {size} bytes")
    return raw


def _check_ids(span: Span, where: str) -> None:
    for field, value, size, required in (
        ("traceId", span.trace_id, TRACE_ID_BYTES, True),
        ("spanId", span.span_id, SPAN_ID_BYTES, True),
        ("parentSpanId", span.parent_span_id, SPAN_ID_BYTES, False),
    ):
        if not value:
            if required:
                raise OtlpFileError(f"{where}: {field} is missing")
            continue
        if len(value) != size:
            raise OtlpFileError(f"{where}: {field} is {len(value)} bytes, not {size}")
        if required and value == bytes(size):
            raise OtlpFileError(f"{where}: {field} is all zeros (an invalid id)")


# --------------------------------------------------------------------------- JSON


def _items(container: Mapping[str, Any], where: str, *names: str) -> list[Any]:
    for name in names:
        value = container.get(name)
        if value is not None:
            if not isinstance(value, list):
                raise OtlpFileError(f"{where}: {name} must be an array")
            return value
    return []


def _span_label(span: Mapping[str, Any]) -> str:
    name = span.get("name")
    return f" ({name[:80]!r})" if isinstance(name, str) else ""


def _json_request(data: Any, where: str) -> ExportTraceServiceRequest:
    """An OTLP/JSON request object as a protobuf message, ids decoded per field."""
    if not isinstance(data, dict):
        raise OtlpFileError(f"{where}: not OTLP trace data (expected a JSON object, got {type(data).__name__})")
    if "resourceSpans" not in data and "resource_spans" not in data:
        keys = ", ".join(sorted(map(str, data))[:5]) or "none"
        raise OtlpFileError(f"{where}: not OTLP trace data (no resourceSpans; keys: {keys})")
    fixed_rs = []
    for i, rs in enumerate(_items(data, where, "resourceSpans", "resource_spans")):
        if not isinstance(rs, dict):
            raise OtlpFileError(f"{where}: resourceSpans[{i}] must be an object")
        rs = dict(rs)
        fixed_ss = []
        for j, ss in enumerate(_items(rs, where, "scopeSpans", "scope_spans", "instrumentationLibrarySpans")):
            if not isinstance(ss, dict):
                raise OtlpFileError(f"{where}: resourceSpans[{i}].scopeSpans[{j}] must be an object")
            ss = dict(ss)
            if "instrumentationLibrary" in ss and "scope" not in ss:  # OTLP before 0.15
                ss["scope"] = ss.pop("instrumentationLibrary")
            spans = []
            for k, span in enumerate(_items(ss, where, "spans")):
                at = f"{where}: resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                if not isinstance(span, dict):
                    raise OtlpFileError(f"{at} must be an object")
                at += _span_label(span)
                spans.append(_fix_span_ids(span, at))
            ss["spans"] = spans
            ss.pop("scope_spans", None)
            ss.pop("instrumentationLibrarySpans", None)
            fixed_ss.append(ss)
        for name in ("scope_spans", "instrumentationLibrarySpans"):
            rs.pop(name, None)
        rs["scopeSpans"] = fixed_ss
        fixed_rs.append(rs)
    message = ExportTraceServiceRequest()
    try:
        json_format.ParseDict({"resourceSpans": fixed_rs}, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError, RecursionError) as exc:
        raise OtlpFileError(f"{where}: not an OTLP trace request ({exc})") from None
    return message


_LINK_IDS = (("traceId", "trace_id", TRACE_ID_BYTES), ("spanId", "span_id", SPAN_ID_BYTES))


def _fix_span_ids(span: Mapping[str, Any], where: str) -> dict[str, Any]:
    out = dict(span)
    for camel, snake, size in (
        ("traceId", "trace_id", TRACE_ID_BYTES),
        ("spanId", "span_id", SPAN_ID_BYTES),
        ("parentSpanId", "parent_span_id", SPAN_ID_BYTES),
    ):
        value = out.pop(camel, None)
        snake_value = out.pop(snake, None)
        if value is None:
            value = snake_value
        raw = decode_id(value, size, camel, where)
        if raw:
            out[camel] = base64.b64encode(raw).decode("ascii")
    links = out.get("links")
    if isinstance(links, list):
        fixed = []
        for n, link in enumerate(links):
            if isinstance(link, dict):
                link = dict(link)
                for camel, snake, size in _LINK_IDS:
                    value = link.pop(camel, link.pop(snake, None))
                    raw = decode_id(value, size, f"links[{n}].{camel}", where)
                    if raw:
                        link[camel] = base64.b64encode(raw).decode("ascii")
            fixed.append(link)
        out["links"] = fixed
    return out


def _loads(text: bytes | str, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise OtlpFileError(f"{where}: JSON nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise OtlpFileError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


# --------------------------------------------------------------------------- files


def _open_checked(path: Path, max_bytes: int) -> int:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise OtlpFileError(f"{path}: no such file") from None
    except OSError as exc:
        raise OtlpFileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if path.is_dir():
        raise OtlpFileError(f"{path}: is a directory, not a trace file")
    if size > max_bytes:
        raise OtlpFileError(
            f"{path}: {size} bytes is over the {max_bytes}-byte limit for trace files (raise it with --max-bytes)"
        )
    return size


def _json_lines(path: Path, max_bytes: int) -> Iterator[tuple[str, ExportTraceServiceRequest]]:
    with path.open("rb") as handle:
        for number, line in enumerate(iter(lambda: handle.readline(max_bytes + 1), b""), start=1):
            where = f"{path}:{number}"
            if len(line) > max_bytes:
                raise OtlpFileError(f"{where}: a line over the {max_bytes}-byte limit")
            if not line.strip():
                continue
            try:
                data = _loads(line, where)
            except json.JSONDecodeError as exc:
                raise OtlpFileError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
            yield where, _json_request(data, where)


def _json_documents(data: bytes, where: str) -> Iterator[tuple[str, ExportTraceServiceRequest]]:
    """Consecutive JSON documents (one per line, or pretty-printed one after another)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OtlpFileError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos].isspace():
            pos += 1
        if pos >= end:
            return
        at = f"{where}:{text.count(chr(10), 0, pos) + 1}"
        try:
            document, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise OtlpFileError(f"{where}:{exc.lineno}: not JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise OtlpFileError(f"{at}: JSON nested too deeply") from None
        yield at, _json_request(document, at)


def read_requests(
    path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Iterator[tuple[str, ExportTraceServiceRequest]]:
    """The file's OTLP trace requests, each with where it came from (``file`` or ``file:line``).

    Raises :class:`OtlpFileError` for a missing, oversized, empty or
    unrecognised file; a JSON Lines file is checked line by line as it is read.
    """
    path = Path(path)
    size = _open_checked(path, max_bytes)
    where = str(path)
    if size == 0:
        raise OtlpFileError(f"{where}: empty file (no trace data)")
    if path.suffix.lower() in _JSON_LINES_SUFFIXES:
        yield from _json_lines(path, max_bytes)
        return
    data = path.read_bytes()
    head = data.lstrip()[:1]
    if not head:
        raise OtlpFileError(f"{where}: empty file (no trace data)")
    if head in (b"{", b"["):
        try:
            parsed = _loads(data, where)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # more than one document: JSON Lines under another name
                yield from _json_documents(data, where)
                return
            raise OtlpFileError(f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        yield where, _json_request(parsed, where)
        return
    message = ExportTraceServiceRequest()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise OtlpFileError(f"{where}: neither OTLP/JSON nor OTLP protobuf ({exc})") from None
    if not message.resource_spans:
        raise OtlpFileError(f"{where}: not OTLP trace data (no resourceSpans in the protobuf message)")
    yield where, message


def read_spans(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[FileSpan]:
    """Every span in the file, in file order, ids checked; see :func:`read_requests` for errors."""
    for where, request in read_requests(path, max_bytes=max_bytes):
        yield from request_spans(request, where)


def json_request(data: Any, where: str) -> ExportTraceServiceRequest:
    """A decoded OTLP/JSON document (hex or base64 ids) as a request; for readers of HTTP bodies."""
    return _json_request(data, where)


def request_spans(request: ExportTraceServiceRequest, where: str) -> Iterator[FileSpan]:
    """The spans of one OTLP request (from a file or a trace backend), ids checked."""
    for i, rs in enumerate(request.resource_spans):
        resource = decode_attributes(kv.SerializeToString() for kv in rs.resource.attributes)
        for j, ss in enumerate(rs.scope_spans):
            scope_name, scope_version = ss.scope.name, ss.scope.version
            for k, span in enumerate(ss.spans):
                at = f"{where}: resourceSpans[{i}].scopeSpans[{j}].spans[{k}] ({span.name[:80]!r})"
                _check_ids(span, at)
                parent = span.parent_span_id
                if parent == bytes(SPAN_ID_BYTES):
                    parent = b""  # some exporters write zeros for "no parent"
                yield FileSpan(
                    trace_id=span.trace_id,
                    span_id=span.span_id,
                    parent_span_id=parent,
                    name=span.name,
                    kind=span.kind,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    status_code=span.status.code,
                    status_message=span.status.message,
                    attributes=decode_attributes(kv.SerializeToString() for kv in span.attributes),
                    events=tuple(
                        SpanEvent(
                            event.name,
                            event.time_unix_nano,
                            decode_attributes(kv.SerializeToString() for kv in event.attributes),
                        )
                        for event in span.events
                    ),
                    resource=resource,
                    scope_name=scope_name,
                    scope_version=scope_version,
                    source=where,
                    raw=span.SerializeToString(),
                )
