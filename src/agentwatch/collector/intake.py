"""The path every OTLP request takes after its transport: validate, split, journal, buffer.

Both receivers call :meth:`Intake.submit` with protobuf request bytes (the
HTTP receiver converts JSON first). Backpressure is decided here: while the
export queue is full, requests are refused with :class:`Throttled` so that
clients retry later, instead of being accepted and dropped. With a journal,
the request is written to it before :meth:`Intake.submit` returns (before the
receiver acknowledges it); when it cannot be, the request is refused the same way.
Once the receiver has handed the success answer to its transport, it calls
:meth:`Intake.acknowledged`, which marks the request in the journal: a request
replayed without that mark may have been sent again by its client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .buffer import TraceBuffer
from .decision import Decider
from .forwarder import Forwarder
from .journal import Journal, JournalError, JournalFull, JournalTooLarge
from .otlp import DecodeError, GroupTable, SplitSpan, is_run_span, maybe_run_span, split_request
from .telemetry import Stats

RETRY_AFTER_SECONDS = 5
log = logging.getLogger("agentwatch.collector")


def opens_run(raw: bytes) -> bool:
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


class TooLarge(Exception):
    """The request can never be taken (larger than the journal): refuse it for good, not retryably."""


class Malformed(ValueError):
    """The request body is not a valid OTLP trace request."""


@dataclass(frozen=True)
class Accepted:
    spans: int
    rejected: int
    message: str
    record: int | None = None  # its journal sequence number (with a journal and spans to keep)


class Intake:
    def __init__(self, buffer: TraceBuffer, decider: Decider, forwarder: Forwarder, stats: Stats) -> None:
        self.buffer = buffer
        self.decider = decider
        self.forwarder = forwarder
        self.stats = stats
        self.groups = GroupTable()
        self.accepting = True
        self.journal: Journal | None = None
        self.journal_failing = False  # an I/O error was logged; logged again once it recovers

    def check_admission(self) -> None:
        if not self.accepting:
            raise Throttled("the collector is shutting down", retry_after=1)
        if self.forwarder.full():
            raise Throttled("the export queue is full (the downstream endpoint is slow or down)")

    def submit(self, data: bytes, protocol: str) -> Accepted:
        """Buffer the spans of one ``ExportTraceServiceRequest``. Raises Throttled, Malformed or TooLarge."""
        self.check_admission()
        try:
            spans, rejected, reason = split_request(data, self.groups)
        except DecodeError as exc:
            raise Malformed(f"the body is not a valid ExportTraceServiceRequest: {exc}") from None
        # Journaled first: a request the journal refuses is sent again, and counted when it is taken.
        record = self._journal(data, spans) if spans and self.journal is not None else None
        self.stats.add("spans_received", len(spans) + rejected, protocol)
        if rejected:
            self.stats.add("spans_rejected", rejected, "invalid_id")
        if spans:
            runs = [opens_run(raw) for _, raw, _, _, _ in spans]
            try:
                evicted = self.buffer.add(spans, runs, record)
            except BaseException:
                if record is not None and self.journal is not None:  # not acknowledged: not replayed either
                    self.journal.done([(record, tid) for tid in {span[2] for span in spans}])
                raise
            if evicted:
                self.decider.forward_unevaluated(evicted, "overflow")
        message = f"{rejected} spans rejected: {reason}" if rejected else ""
        return Accepted(len(spans), rejected, message, record)

    def acknowledged(self, accepted: Accepted) -> None:
        """The success answer for ``accepted`` was handed to the transport: mark it in the journal."""
        if accepted.record is None or self.journal is None:
            return
        try:
            self.journal.ack(accepted.record)
        except Exception:  # never fail a request over its ack marker: a replay counts it as possibly resent
            log.exception("writing a journal ack marker failed")

    def _journal(self, data: bytes, spans: list[SplitSpan]) -> int:
        """Write the request to the journal before it is acknowledged; Throttled when it cannot be."""
        assert self.journal is not None
        try:
            record = self.journal.append(data, {span[2] for span in spans})
        except JournalTooLarge as exc:
            self.stats.add("journal_refused_requests", 1, "too_large")
            raise TooLarge(exc.strerror) from None
        except JournalFull as exc:
            self.stats.add("journal_refused_requests", 1, "full")
            raise Throttled(f"the journal is full ({exc.strerror}); retry later") from None
        except JournalError as exc:
            self.stats.add("journal_refused_requests", 1, "io_error")
            if not self.journal_failing:
                self.journal_failing = True
                log.error("%s; refusing requests (retryable) until the journal can be written", exc.strerror)
            raise Throttled("the collector cannot write its journal; retry later") from None
        if self.journal_failing:
            self.journal_failing = False
            log.warning("the journal can be written again; accepting requests")
        return record
