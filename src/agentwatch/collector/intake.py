"""The path every OTLP request takes after its transport: validate, split, buffer.

Both receivers call :meth:`Intake.submit` with protobuf request bytes (the
HTTP receiver converts JSON first). Backpressure is decided here: while the
export queue is full, requests are refused with :class:`Throttled` so that
clients retry later, instead of being accepted and dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .buffer import TraceBuffer
from .decision import Decider
from .forwarder import Forwarder
from .otlp import DecodeError, GroupTable, is_run_span, maybe_run_span, split_request
from .telemetry import Stats

RETRY_AFTER_SECONDS = 5
log = logging.getLogger("agentwatch.collector")


def _opens_run(raw: bytes) -> bool:
    """Does this span open an agent run? A span that cannot be read is kept and treated as not."""
    try:
        return maybe_run_span(raw) and is_run_span(raw)
    except Exception:  # the request was validated; a failure here is agentwatch's, not the client's
        log.exception("reading a span's run attributes failed; buffering it as an ordinary span")
        return False


class Throttled(Exception):
    """The collector cannot take more data now; the client should retry after ``retry_after``."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Malformed(ValueError):
    """The request body is not a valid OTLP trace request."""


@dataclass(frozen=True)
class Accepted:
    spans: int
    rejected: int
    message: str


class Intake:
    def __init__(self, buffer: TraceBuffer, decider: Decider, forwarder: Forwarder, stats: Stats) -> None:
        self.buffer = buffer
        self.decider = decider
        self.forwarder = forwarder
        self.stats = stats
        self.groups = GroupTable()
        self.accepting = True

    def check_admission(self) -> None:
        if not self.accepting:
            raise Throttled("the collector is shutting down", retry_after=1)
        if self.forwarder.full():
            raise Throttled("the export queue is full (the downstream endpoint is slow or down)")

    def submit(self, data: bytes, protocol: str) -> Accepted:
        """Buffer the spans of one ``ExportTraceServiceRequest``. Raises Throttled or Malformed."""
        self.check_admission()
        try:
            spans, rejected, reason = split_request(data, self.groups)
        except DecodeError as exc:
            raise Malformed(f"the body is not a valid ExportTraceServiceRequest: {exc}") from None
        self.stats.add("spans_received", len(spans) + rejected, protocol)
        if rejected:
            self.stats.add("spans_rejected", rejected, "invalid_id")
        if spans:
            runs = [_opens_run(raw) for _, raw, _, _, _ in spans]
            evicted = self.buffer.add(spans, runs)
            if evicted:
                self.decider.forward_unevaluated(evicted, "overflow")
        message = f"{rejected} spans rejected: {reason}" if rejected else ""
        return Accepted(len(spans), rejected, message)
