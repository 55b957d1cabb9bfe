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
from .intake import Intake
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
        stats.gauge("verdicts_cached", lambda: len(self.verdicts))
        stats.gauge("retained_bytes", lambda: self.verdicts.retained_total)
        stats.degraded = lambda: not self.forwarder.healthy or self.forwarder.full()
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
        """Bind and start everything; raises OSError when a port cannot be bound."""
        cfg = self.config
        log.info(
            "agentwatch-collector %s: configuration read from %s",
            __version__,
            ", ".join(cfg.files) if cfg.files else "no file (built-in defaults and the given mapping)",
        )
        try:
            if cfg.grpc is not None:
                self.grpc = GrpcReceiver(cfg.grpc, self.intake, self.stats)
            if cfg.http is not None:
                self.http = HttpReceiver(cfg.http, self.intake, self.stats)
            if cfg.health is not None:
                self.health = HealthServer(cfg.health, self.stats)
        except OSError:
            self._close_listeners()
            raise
        self.forwarder.start()
        self.decider.start()
        for part in (self.grpc, self.http, self.health):
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
        self.stats.status = "stopped"
        counters = self.stats.counters()
        log.info(
            "agentwatch-collector stopped: %d spans received, %d forwarded, %d dropped, %d evicted, "
            "%d traces decided",
            sum(counters["spans_received"].values()),
            sum(counters["spans_forwarded"].values()),
            sum(counters["spans_dropped"].values()),
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
