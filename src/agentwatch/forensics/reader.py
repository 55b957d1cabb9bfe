"""Read a trace from where users keep it: a file, Jaeger's query API or Grafana Tempo's trace API.

SOURCE forms:

* a path: OTLP protobuf, OTLP/JSON (hex or base64 ids) or JSON Lines, read by
  :mod:`agentwatch.otlp_files` (the one file reader);
* ``jaeger:http://HOST:16686``: Jaeger v2's query API v3, which answers in
  OTLP/JSON: ``GET /api/v3/traces/{id}`` for one trace, and with
  ``search=(service, tags)`` ``GET /api/v3/traces?query.service_name=...``
  over the last ``lookback`` (Jaeger's classic ``/api/traces`` JSON is not
  OTLP and is not read);
* ``tempo:http://HOST:3200``: Tempo's ``GET /api/traces/{id}``, asked for OTLP
  protobuf (``Accept: application/protobuf``); a JSON answer (``batches`` or
  ``resourceSpans``) is read too.

HTTP uses httpx with a connect/read timeout and a byte limit on the body;
every failure (unreachable backend, missing trace, a body that is not OTLP) is
a :class:`SourceError` whose message names the URL and what to do.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ..otlp_files import DEFAULT_MAX_BYTES, FileSpan, OtlpFileError, json_request, read_spans, request_spans

__all__ = ["DEFAULT_TIMEOUT_S", "SourceError", "read_source"]

DEFAULT_TIMEOUT_S = 10.0
MAX_SEARCH_TRACES = 20
_TRACE_ID = re.compile(r"^[0-9a-fA-F]{1,32}$")


class SourceError(OtlpFileError):
    """A trace source could not be read; the message says which and why."""


def read_source(
    source: str,
    trace_id: str | None = None,
    *,
    service: str | None = None,
    tags: Mapping[str, str] | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Iterator[FileSpan]:
    """Every span SOURCE holds (only trace ``trace_id``'s when given)."""
    if source.startswith("jaeger:"):
        yield from _jaeger(source[len("jaeger:") :], trace_id, service, tags, max_bytes, timeout_s)
        return
    if source.startswith("tempo:"):
        if trace_id is None:
            raise SourceError(f"{source}: Tempo needs --trace TRACE_ID")
        yield from _tempo(source[len("tempo:") :], trace_id, max_bytes, timeout_s)
        return
    wanted = _normal_id(trace_id) if trace_id else None
    found = False
    for span in read_spans(source, max_bytes=max_bytes):
        if wanted is None or span.trace_hex == wanted:
            found = True
            yield span
    if wanted is not None and not found:
        raise SourceError(f"{source}: no trace {wanted} in the file")


def _normal_id(trace_id: str) -> str:
    text = trace_id.strip().lower()
    if not _TRACE_ID.match(text):
        raise SourceError(f"--trace {trace_id[:64]!r}: a trace id is up to 32 hex digits")
    return text.rjust(32, "0")


def _base(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise SourceError(f"{url[:100]!r}: expected http://HOST:PORT after the backend prefix")
    return url.rstrip("/")


def _get(
    url: str, params: Mapping[str, str] | None, accept: str, max_bytes: int, timeout_s: float
) -> tuple[int, str, bytes]:
    """GET with a timeout and a body limit: (status, content type, body)."""
    import httpx

    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False) as client,
            client.stream("GET", url, params=params, headers={"Accept": accept}) as response,
        ):
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise SourceError(f"{url}: the answer ({declared} bytes) is over the {max_bytes}-byte limit")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise SourceError(f"{url}: the answer is over the {max_bytes}-byte limit (raise --max-bytes)")
                chunks.append(chunk)
            return response.status_code, response.headers.get("content-type", ""), b"".join(chunks)
    except httpx.TimeoutException:
        raise SourceError(f"{url}: no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise SourceError(f"{url}: cannot reach the backend ({type(exc).__name__}: {exc})") from None


def _json_body(url: str, body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise SourceError(f"{url}: the answer is not JSON (is this the right port?)") from None


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:200]
        if isinstance(err, str):
            return err[:200]
    return body[:200].decode("utf-8", "replace")


def _jaeger(
    url: str,
    trace_id: str | None,
    service: str | None,
    tags: Mapping[str, str] | None,
    max_bytes: int,
    timeout_s: float,
    lookback: timedelta = timedelta(days=2),
) -> Iterator[FileSpan]:
    base = _base(url)
    if trace_id is not None:
        tid = _normal_id(trace_id)
        target = f"{base}/api/v3/traces/{tid}"
        status, _, body = _get(target, None, "application/json", max_bytes, timeout_s)
        if status == 404:
            raise SourceError(f"{target}: trace {tid} not found in Jaeger ({_error_text(body)})")
        params = None
    elif service:
        now = datetime.now(timezone.utc)
        params = {
            "query.service_name": service,
            "query.start_time_min": (now - lookback).isoformat().replace("+00:00", "Z"),
            "query.start_time_max": now.isoformat().replace("+00:00", "Z"),
            "query.num_traces": str(MAX_SEARCH_TRACES),
        }
        if tags:
            params["query.attributes"] = json.dumps(dict(tags), sort_keys=True)
        target = f"{base}/api/v3/traces"
        status, _, body = _get(target, params, "application/json", max_bytes, timeout_s)
        if status == 404:
            raise SourceError(f"{target}: no traces for service {service!r} in Jaeger")
    else:
        raise SourceError(f"jaeger:{url}: give --trace TRACE_ID or --service NAME")
    if status != 200:
        raise SourceError(f"{target}: Jaeger answered HTTP {status}: {_error_text(body)}")
    data = _json_body(target, body)
    # The v3 HTTP gateway wraps each OTLP TracesData chunk as {"result": {...}}.
    documents = data if isinstance(data, list) else [data]
    for n, doc in enumerate(documents):
        inner = doc.get("result", doc) if isinstance(doc, dict) else doc
        if isinstance(doc, dict) and "error" in doc and "result" not in doc:
            raise SourceError(f"{target}: Jaeger answered an error: {_error_text(json.dumps(doc).encode())}")
        yield from request_spans(json_request(inner, f"{target} [{n}]"), target)


def _tempo(url: str, trace_id: str, max_bytes: int, timeout_s: float) -> Iterator[FileSpan]:
    base = _base(url)
    tid = _normal_id(trace_id)
    target = f"{base}/api/traces/{tid}"
    status, ctype, body = _get(target, None, "application/protobuf", max_bytes, timeout_s)
    if status == 404:
        raise SourceError(f"{target}: trace {tid} not found in Tempo")
    if status != 200:
        raise SourceError(f"{target}: Tempo answered HTTP {status}: {_error_text(body)}")
    if "json" in ctype or body.lstrip()[:1] == b"{":
        data = _json_body(target, body)
        if isinstance(data, dict):
            if "trace" in data and isinstance(data["trace"], dict):  # /api/v2/traces
                data = data["trace"]
            if "batches" in data and "resourceSpans" not in data:  # Tempo's v1 JSON
                data = {"resourceSpans": data["batches"]}
        yield from request_spans(json_request(data, target), target)
        return
    # tempopb.Trace is ``repeated ResourceSpans batches = 1``: the same wire as an OTLP request.
    message = ExportTraceServiceRequest()
    try:
        message.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise SourceError(f"{target}: the answer is not an OTLP trace ({type(exc).__name__})") from None
    if not message.resource_spans:
        raise SourceError(f"{target}: the answer holds no spans (not an OTLP trace?)")
    yield from request_spans(message, target)
