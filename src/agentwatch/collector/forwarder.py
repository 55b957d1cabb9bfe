"""Forward decided spans downstream over OTLP, with a bounded retry queue.

Batches are serialized ``ExportTraceServiceRequest`` bytes. Retryable
failures (gRPC UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED...;
HTTP 429/502/503/504; connection errors) are retried with exponential backoff,
honouring ``Retry-After`` / ``RetryInfo``; while one batch backs off, no other
is attempted (the downstream is presumed down). A batch that cannot be
delivered — a permanent error (e.g. HTTP 400), retries past
``max_elapsed_seconds``, queue overflow, or shutdown — is counted under
``spans_dropped{reason}`` and logged. Nothing is dropped silently. With a
journal, what the drain timeout leaves undelivered at shutdown is not dropped
but kept in the journal for the next start (``spans_kept_for_replay``).
"""

from __future__ import annotations

import email.utils
import http.client
import logging
import random
import ssl
import threading
import time
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from .config import ExporterConfig, parse_endpoint
from .journal import Journal, Piece
from .telemetry import RateLimitedLog, Stats

log = logging.getLogger("agentwatch.collector")

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
USER_AGENT = "agentwatch-collector"
STATE_LOG_SECONDS = 30.0  # "forwarding is failing" is logged at most this often (a flapping downstream)


@dataclass
class Batch:
    payload: bytes  # serialized ExportTraceServiceRequest (uncompressed)
    spans: int
    created: float = field(default_factory=time.monotonic)
    attempts: int = 0
    not_before: float = 0.0
    pieces: Sequence[Piece] = ()  # journal pieces whose spans it carries
    settled: bool = False  # delivered or dropped (counted): its first outcome is the only one


@dataclass(frozen=True)
class SendResult:
    ok: bool
    retryable: bool = False
    retry_after: float | None = None
    message: str = ""
    rejected: int = 0  # spans the downstream refused in a partial success


def _partial(body: bytes) -> tuple[int, str]:
    if not body:
        return 0, ""
    try:
        response = ExportTraceServiceResponse.FromString(body)
    except Exception:
        return 0, ""
    return response.partial_success.rejected_spans, response.partial_success.error_message


# --------------------------------------------------------------------------- exporters


class GrpcSender:
    """OTLP/gRPC with a raw-bytes request serializer (no message objects are built)."""

    RETRYABLE = frozenset(
        {
            grpc.StatusCode.CANCELLED,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.ABORTED,
            grpc.StatusCode.OUT_OF_RANGE,
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DATA_LOSS,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        }
    )

    def __init__(self, config: ExporterConfig) -> None:
        raw = config.endpoint
        secure = not config.insecure or raw.startswith("https://")
        target = str(parse_endpoint(raw, ValueError))
        options = [("grpc.max_send_message_length", -1), ("grpc.primary_user_agent", USER_AGENT)]
        if secure:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._call = self._channel.unary_unary(
            EXPORT_METHOD, request_serializer=None, response_deserializer=None
        )
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._compression = (
            grpc.Compression.Gzip if config.compression == "gzip" else grpc.Compression.NoCompression
        )
        self._timeout = config.timeout_seconds

    def send(self, payload: bytes) -> SendResult:
        try:
            body = self._call(
                payload, timeout=self._timeout, metadata=self._metadata, compression=self._compression
            )
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            retry_after = _grpc_retry_delay(exc)
            retryable = code in self.RETRYABLE
            if code is grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after is None:
                # The OTLP spec retries RESOURCE_EXHAUSTED only with RetryInfo; we retry
                # it anyway (with backoff), since a full downstream queue usually drains.
                retryable = True
            name = code.name if code is not None else "UNKNOWN"
            return SendResult(False, retryable, retry_after, f"gRPC {name}: {details}")
        rejected, message = _partial(body if isinstance(body, bytes) else b"")
        return SendResult(True, rejected=rejected, message=message)

    def close(self) -> None:
        self._channel.close()


def _grpc_retry_delay(exc: grpc.RpcError) -> float | None:
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in trailing or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
                return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


class HttpSender:
    """OTLP/HTTP protobuf over a kept-alive ``http.client`` connection (one per worker thread)."""

    RETRYABLE = frozenset({429, 502, 503, 504})

    def __init__(self, config: ExporterConfig) -> None:
        url = urlsplit(config.endpoint)
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port or (443 if self._https else 80)
        self._path = (url.path if url.path not in ("", "/") else "/v1/traces") + (
            f"?{url.query}" if url.query else ""
        )
        self._headers = {
            "Content-Type": "application/x-protobuf",
            "User-Agent": USER_AGENT,
            **config.headers,
        }
        self._gzip = config.compression == "gzip"
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._timeout = config.timeout_seconds
        self._local = threading.local()
        self._context = ssl.create_default_context() if self._https else None

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._https:
                conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._context
                )
            else:
                conn = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
            self._local.conn = conn
        return conn

    def _reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None

    def send(self, payload: bytes) -> SendResult:
        body = _gzip(payload) if self._gzip else payload
        try:
            conn = self._connection()
            conn.request("POST", self._path, body=body, headers=self._headers)
            response = conn.getresponse()
            data = response.read()
            status = response.status
            retry_after = _parse_retry_after(response.getheader("Retry-After"))
            if response.getheader("Connection", "").lower() == "close":
                self._reset()
        except (OSError, http.client.HTTPException) as exc:
            self._reset()
            return SendResult(False, True, None, f"HTTP connection error: {exc!r}")
        if 200 <= status < 300:
            rejected, message = _partial(data)
            return SendResult(True, rejected=rejected, message=message)
        message = _status_message(data) or http.client.responses.get(status, "")
        return SendResult(False, status in self.RETRYABLE, retry_after, f"HTTP {status}: {message}")

    def close(self) -> None:
        self._reset()


def _gzip(payload: bytes) -> bytes:
    # Level 1: ~5x faster than the default for OTLP payloads at a few % larger output.
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return compressor.compress(payload) + compressor.flush()


def _status_message(body: bytes) -> str:
    if not body:
        return ""
    try:
        return status_pb2.Status.FromString(body).message or body[:200].decode("utf-8", "replace")
    except Exception:
        return body[:200].decode("utf-8", "replace")


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def make_sender(config: ExporterConfig) -> Any:
    return GrpcSender(config) if config.protocol == "grpc" else HttpSender(config)


# --------------------------------------------------------------------------- queue + workers


class Forwarder:
    """The retry queue and its sender threads."""

    WORKERS = 2

    def __init__(self, config: ExporterConfig, stats: Stats, sender: Any | None = None) -> None:
        self.config = config
        self.stats = stats
        self.sender = sender if sender is not None else make_sender(config)
        self._queue: deque[Batch] = deque()
        self._bytes = 0
        self._inflight = 0
        self._active: dict[int, Batch] = {}  # batches being attempted, by id()
        self.journal: Journal | None = None  # told when batches begin and finish
        self._cond = threading.Condition()
        self._resume_at = 0.0  # no attempt before this (a batch is backing off)
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._warn = RateLimitedLog()
        self.healthy = True  # False while the downstream fails
        self._state_lock = threading.Lock()
        self._state_logged = -STATE_LOG_SECONDS  # when "failing" was last logged (monotonic)
        self._failing_since = 0.0
        self._failed_attempts = 0
        self._announced = False  # a "failing" line was logged: its recovery will be too
        stats.gauge("queue_batches", lambda: len(self._queue) + self._inflight)
        stats.gauge("queue_bytes", lambda: self._bytes)

    # ---------------------------------------------------------------- producer side

    def full(self) -> bool:
        """At or over the configured queue limits: receivers refuse new data (backpressure)."""
        q = self.config.queue
        return len(self._queue) + self._inflight >= q.max_batches or self._bytes >= q.max_bytes

    def put(self, payload: bytes, spans: int, pieces: Sequence[Piece] = ()) -> None:
        """Enqueue one request. Never blocks and never refuses: admission is the receivers' job.

        The queue may exceed its limits by what was buffered when it filled up;
        past twice its limits the oldest batches are dropped (counted, logged).
        """
        if spans <= 0:
            if pieces and self.journal is not None:
                self.journal.done(pieces)
            return
        dropped: list[Batch] = []
        with self._cond:
            self._queue.append(Batch(payload, spans, pieces=pieces))
            self._bytes += len(payload)
            q = self.config.queue
            while len(self._queue) > 1 and (
                len(self._queue) > 2 * q.max_batches or self._bytes > 2 * q.max_bytes
            ):
                old = self._queue.popleft()
                self._bytes -= len(old.payload)
                dropped.append(old)
            self._cond.notify()
        for batch in dropped:
            self._drop(batch, "queue_overflow", "the export queue overflowed (downstream too slow or down)")

    # ---------------------------------------------------------------- workers

    def start(self) -> None:
        for i in range(self.WORKERS):
            thread = threading.Thread(target=self._run, name=f"agentwatch-forwarder-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take(self) -> Batch | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                now = time.monotonic()
                if self._queue and now >= self._resume_at:
                    batch = self._queue.popleft()
                    self._bytes -= len(batch.payload)
                    self._inflight += 1
                    self._active[id(batch)] = batch
                    return batch
                timeout = max(0.001, self._resume_at - now) if self._queue else None
                self._cond.wait(timeout)

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._attempt(batch)
            except Exception:  # never let a worker die
                log.exception("unexpected error while exporting a batch")
                self._drop(batch, "internal_error", "unexpected exporter error")
            finally:
                with self._cond:
                    self._inflight -= 1
                    self._active.pop(id(batch), None)
                    self._cond.notify_all()

    def _attempt(self, batch: Batch) -> None:
        now = time.monotonic()
        max_elapsed = self.config.retry.max_elapsed_seconds
        if batch.attempts and now - batch.created > max_elapsed:
            self._drop(batch, "retries_exhausted", f"retries exhausted after {max_elapsed:g}s")
            return
        if not batch.attempts and batch.pieces and self.journal is not None:
            self.journal.begin(batch.pieces)
        batch.attempts += 1
        result: SendResult = self.sender.send(batch.payload)
        if result.ok:
            if not self._settle(batch):
                return  # given up at the drain deadline while this attempt ran: counted then
            self._recovered()
            with self._cond:
                self._resume_at = 0.0
            self.stats.add("export_requests", 1, "success")
            # The downstream's count is an int64 it chose: never more than we sent, never negative.
            rejected = min(max(result.rejected, 0), batch.spans)
            self.stats.add("spans_forwarded", batch.spans - rejected)
            if result.rejected:
                claimed = "" if rejected == result.rejected else f" (it claimed {result.rejected})"
                self.stats.add("spans_dropped", rejected, "rejected_downstream")
                self._warn.warn(
                    "rejected_downstream",
                    rejected,
                    f"downstream rejected {rejected} of {batch.spans} spans{claimed}: {result.message}",
                )
            return
        self._failing(result.message)
        if not result.retryable:
            self.stats.add("export_requests", 1, "failed")
            self._drop(batch, "export_failed", f"permanent export error: {result.message}")
            return
        self.stats.add("export_requests", 1, "retry")
        retry = self.config.retry
        backoff = min(retry.max_backoff_ms, retry.initial_backoff_ms * 2 ** (batch.attempts - 1)) / 1000.0
        delay = result.retry_after if result.retry_after is not None else backoff * random.uniform(0.8, 1.2)
        if now + delay - batch.created > max_elapsed:
            self._drop(
                batch, "retries_exhausted", f"giving up after {batch.attempts} attempts ({result.message})"
            )
            return
        log.debug("export failed (%s); retrying in %.2fs", result.message, delay)
        with self._cond:
            if not self._stopping:
                batch.not_before = time.monotonic() + delay
                self._resume_at = batch.not_before
                self._queue.appendleft(batch)
                self._bytes += len(batch.payload)
                self._cond.notify_all()
                return
        self._stop_with(batch, f"the drain timeout expired while retrying ({result.message})")

    def _failing(self, message: str) -> None:
        """Note a failed attempt; the first one after a success is logged (at most once a ``STATE_LOG_SECONDS``)."""
        now = time.monotonic()
        with self._state_lock:
            self._failed_attempts += 1
            if not self.healthy:
                return
            self.healthy = False
            self._failing_since = now
            self._failed_attempts = 1
            if now - self._state_logged < STATE_LOG_SECONDS:
                return
            self._state_logged = now
            self._announced = True
        log.warning("forwarding to %s is failing (%s); retrying with backoff", self.config.endpoint, message)

    def _recovered(self) -> None:
        """Note a delivery; after failures that were logged, say that forwarding works again."""
        with self._state_lock:
            if self.healthy:
                return
            self.healthy = True
            announced, self._announced = self._announced, False
            seconds = time.monotonic() - self._failing_since
            attempts = self._failed_attempts
        if announced:
            log.info(
                "forwarding to %s recovered after %.1fs (%d failed attempts)",
                self.config.endpoint,
                seconds,
                attempts,
            )

    def _settle(self, batch: Batch) -> bool:
        """Record a batch's outcome once: True the first time (then its journal pieces are done)."""
        with self._cond:
            if batch.settled:
                return False
            batch.settled = True
        if batch.pieces and self.journal is not None:
            self.journal.done(batch.pieces)
        return True

    def _stop_with(self, batch: Batch, message: str) -> None:
        """A batch undelivered at the drain deadline: kept in the journal for the next start, or dropped.

        Its journal pieces get no done marker: the next start replays them. ``in_flight``: attempted at
        least once, so the downstream may have it (the replay counts it as in flight too).
        """
        if not batch.pieces or self.journal is None:
            self._drop(batch, "shutdown", message)
            return
        with self._cond:
            if batch.settled:
                return
            batch.settled = True  # a late answer is ignored; the replay delivers it
        self._warn.warn(
            "kept_for_replay",
            batch.spans,
            f"kept {batch.spans} undelivered spans in the journal for the next start ({message})",
        )
        self.stats.add("spans_kept_for_replay", batch.spans, "in_flight" if batch.attempts else "queued")

    def _drop(self, batch: Batch, reason: str, message: str) -> None:
        if not self._settle(batch):
            return
        # logged first: whoever sees the counter move finds the log line already written
        self._warn.warn(reason, batch.spans, f"dropped {batch.spans} spans ({reason}): {message}")
        self.stats.add("spans_dropped", batch.spans, reason)

    # ---------------------------------------------------------------- shutdown

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + self._inflight

    def drain(self, deadline: float) -> None:
        """Deliver what is queued until ``deadline`` (monotonic); count and log the rest (kept or dropped)."""
        with self._cond:
            while (self._queue or self._inflight) and time.monotonic() < deadline:
                self._cond.wait(min(0.05, max(0.0, deadline - time.monotonic())))
            self._stopping = True
            leftover = list(self._queue)
            self._queue.clear()
            self._bytes = 0
            self._cond.notify_all()
        for batch in leftover:
            self._stop_with(batch, "the drain timeout expired before delivery")
        for thread in self._threads:
            thread.join(timeout=max(0.1, self.config.timeout_seconds))
        with self._cond:
            stuck = list(self._active.values())
        for batch in stuck:  # an attempt still running: count it now (a late answer is ignored)
            self._stop_with(batch, "still being sent at the drain deadline (the downstream may have it)")
        self._warn.flush()
        try:
            self.sender.close()
        except Exception:
            log.debug("closing the exporter failed", exc_info=True)

    def flush_logs(self) -> None:
        self._warn.flush()
