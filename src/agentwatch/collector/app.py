"""Wiring: build the collector's parts from a configuration, start them, drain them on shutdown.

:class:`Collector` is usable in-process (tests, benchmarks): endpoints with
port 0 bind ephemeral ports, exposed as :attr:`Collector.grpc_port`,
:attr:`Collector.http_port` and :attr:`Collector.health_port`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider

from ..engine import Engine
from ..otel.reporting import FindingReporter
from ..version import __version__
from .buffer import TraceBuffer
from .config import CollectorConfig
from .decision import Decider
from .forwarder import Forwarder
from .health import HealthServer
from .intake import Intake, opens_run
from .journal import Journal
from .otlp import DecodeError, split_request
from .receiver_grpc import GrpcReceiver
from .receiver_http import HttpReceiver
from .telemetry import Stats, start_otel_metrics
from .verdicts import VerdictCache

log = logging.getLogger("agentwatch.collector")


class Collector:
    def __init__(self, config: CollectorConfig, *, sender: Any | None = None) -> None:
        self.config = config
        self.stats = stats = Stats()
        self.engine = Engine(config.detection)
        decision = config.decision
        self.verdicts = VerdictCache(decision.verdict_cache_size, decision.retain_bytes)
        self.buffer = TraceBuffer(decision, config.limits, self.verdicts, stats)
        self.forwarder = Forwarder(config.exporter, stats, sender)
        self.meter_provider: Any = None
        if config.telemetry.metrics_exporter == "otlp":
            self.meter_provider = start_otel_metrics(stats, __version__)
        reporter = FindingReporter(
            self.meter_provider or NoOpMeterProvider(), log=config.detection.anomaly.log_findings
        )
        self.decider = Decider(
            self.engine,
            self.buffer,
            self.verdicts,
            self.forwarder,
            stats,
            max_batch_bytes=config.exporter.max_batch_bytes,
            reporter=reporter,
        )
        self.intake = Intake(self.buffer, self.decider, self.forwarder, stats)
        self.journal: Journal | None = None
        buf = config.buffer
        if buf.journal_dir is not None:
            self.journal = Journal(
                buf.journal_dir, buf.journal_max_bytes, buf.journal_segment_bytes, buf.journal_sync == "fsync"
            )
            journal = self.journal
            stats.gauge("journal_bytes", lambda: journal.bytes)
            stats.gauge("journal_pending_requests", journal.pending_requests)
        stats.gauge("verdicts_cached", lambda: len(self.verdicts))
        stats.gauge("retained_bytes", lambda: self.verdicts.retained_total)
        stats.degraded = lambda: (
            not self.forwarder.healthy or self.forwarder.full() or self.intake.journal_failing
        )
        stats.extra["engine"] = lambda: dict(self.engine.stats)
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None
        self.health: HealthServer | None = None
        self._shutdown_lock = threading.Lock()
        self._stopped = False

    # ------------------------------------------------------------------ ports

    @property
    def grpc_port(self) -> int | None:
        return self.grpc.port if self.grpc else None

    @property
    def http_port(self) -> int | None:
        return self.http.port if self.http else None

    @property
    def health_port(self) -> int | None:
        return self.health.port if self.health else None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Collector:
        """Open the journal, bind, replay the journal, start receiving.

        Raises OSError when a port cannot be bound or the journal directory cannot be used.
        """
        cfg = self.config
        log.info(
            "agentwatch-collector %s: configuration read from %s",
            __version__,
            ", ".join(cfg.files) if cfg.files else "no file (built-in defaults and the given mapping)",
        )
        if self.journal is not None:
            report = self.journal.open()
            self.stats.add("journal_corrupt_records", report.corrupt_records)
        try:
            if cfg.grpc is not None:
                self.grpc = GrpcReceiver(cfg.grpc, self.intake, self.stats)
            if cfg.http is not None:
                self.http = HttpReceiver(cfg.http, self.intake, self.stats)
            if cfg.health is not None:
                self.health = HealthServer(cfg.health, self.stats)
        except OSError:
            self._close_listeners()
            if self.journal is not None:
                self.journal.close()
            raise
        self.forwarder.start()
        self.decider.start()
        if self.health is not None:
            self.health.start()
        if self.journal is not None:
            self._replay(self.journal)
            self.forwarder.journal = self.journal
            self.intake.journal = self.journal
        for part in (self.grpc, self.http):
            if part is not None:
                part.start()
        self.stats.status = "ok"
        log.info(
            "agentwatch-collector %s listening: grpc=%s http=%s health=%s; forwarding to %s (%s)",
            __version__,
            f"{cfg.grpc.endpoint.host}:{self.grpc_port}" if cfg.grpc else "off",
            f"{cfg.http.endpoint.host}:{self.http_port}" if cfg.http else "off",
            f"{cfg.health.host}:{self.health_port}" if cfg.health else "off",
            cfg.exporter.endpoint,
            cfg.exporter.protocol,
        )
        return self

    def _replay(self, journal: Journal) -> None:
        """Put every journaled span not yet delivered or dropped back into the buffer (before receiving).

        Replay waits while the export queue is full or the buffer near its limits, so that a
        large journal is not evicted unevaluated or dropped by the queue.
        """
        started = time.monotonic()
        self.forwarder.journal = journal  # replayed pieces finish like any others
        counts = {"pending": 0, "in_flight": 0}
        unacknowledged = 0
        requests = 0
        for item in journal.replay():
            try:
                spans, _, _ = split_request(item.data, self.intake.groups)
            except DecodeError:  # the CRC held, the bytes were valid when written: not expected
                log.error("journal record %d is not a valid request; skipping it", item.seq)
                self.stats.add("journal_corrupt_records")
                journal.done([(item.seq, tid) for tid in item.traces])  # else replayed at every start
                continue
            keep = [s for s in spans if s[2] in item.traces]
            if not keep:  # not expected: the record listed these traces when it was written
                journal.done([(item.seq, tid) for tid in item.traces])
                continue
            requests += 1
            in_flight = sum(1 for s in keep if s[2] in item.begun)
            counts["in_flight"] += in_flight
            counts["pending"] += len(keep) - in_flight
            if not item.acked:
                unacknowledged += len(keep)
            self._wait_for_room()
            evicted = self.buffer.add(keep, [opens_run(raw) for _, raw, _, _, _ in keep], item.seq)
            if evicted:
                self.decider.forward_unevaluated(evicted, "overflow")
        for state, n in counts.items():
            self.stats.add("journal_replayed_spans", n, state)
        self.stats.add("journal_unacknowledged_spans", unacknowledged)
        if requests:
            log.warning(
                "replayed %d spans of %d requests from the journal in %s in %.1fs (%d had been handed to the "
                "exporter before the restart, %d were never acknowledged to their client: either may arrive "
                "twice)",
                counts["pending"] + counts["in_flight"],
                requests,
                journal.dir,
                time.monotonic() - started,
                counts["in_flight"],
                unacknowledged,
            )

    def _wait_for_room(self) -> None:
        limits = self.config.limits
        last_log = time.monotonic()
        while self.forwarder.full() or (
            self.buffer.spans >= limits.max_spans * 0.9
            or self.buffer.bytes >= limits.max_bytes * 0.9
            or len(self.buffer) >= limits.max_traces * 0.9
        ):
            if time.monotonic() - last_log > 30:
                last_log = time.monotonic()
                log.warning("journal replay is waiting for the export queue or the buffer to drain")
            time.sleep(0.05)

    def _close_listeners(self) -> None:
        if self.grpc is not None:
            self.grpc.stop(0)
        if self.http is not None:
            self.http.stop()
        if self.health is not None:
            self.health.stop()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop receiving, decide every pending trace, deliver within the drain timeout. Idempotent."""
        with self._shutdown_lock:
            if self._stopped:
                return
            self._stopped = True
        budget = self.config.exporter.drain_timeout_seconds if timeout is None else timeout
        deadline = time.monotonic() + budget
        self.stats.status = "draining"
        self.intake.accepting = False
        log.info("agentwatch-collector draining (up to %.1fs)", budget)
        if self.grpc is not None:
            self.grpc.stop(min(1.0, budget))
        if self.http is not None:
            self.http.stop()
        self.decider.stop()
        pending = self.buffer.pop_all()
        if pending:
            self.decider.process(pending)
        self.forwarder.drain(deadline)
        if self.journal is not None:
            self.journal.close()
        self.stats.status = "stopped"
        counters = self.stats.counters()
        log.info(
            "agentwatch-collector stopped: %d spans received, %d forwarded, %d dropped, %d kept in the journal "
            "for the next start (%d of them attempted: the downstream may have them), %d evicted, "
            "%d traces decided",
            sum(counters["spans_received"].values()),
            sum(counters["spans_forwarded"].values()),
            sum(counters["spans_dropped"].values()),
            sum(counters["spans_kept_for_replay"].values()),
            counters["spans_kept_for_replay"]["in_flight"],
            sum(counters["spans_evicted"].values()),
            sum(counters["traces_decided"].values()),
        )
        if self.health is not None:
            self.health.stop()
        if self.meter_provider is not None:
            try:
                self.meter_provider.shutdown()
            except Exception:
                log.debug("meter provider shutdown failed", exc_info=True)

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
