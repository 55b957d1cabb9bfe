"""Self-observability: counters and gauges, as JSON, Prometheus text and OTel metrics.

One :class:`Stats` object is shared by every component. Counters are plain
integers under a lock (updated per request or batch, never per span in a hot
loop); gauges are read from callbacks when a snapshot is taken.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..semconv import Flag

log = logging.getLogger("agentwatch.collector")


@dataclass(frozen=True)
class MetricDef:
    name: str  # snake_case, as in /healthz and (prefixed) in /metrics
    otel_name: str
    description: str
    unit: str
    label: str | None = None  # at most one label per metric
    labels: tuple[str, ...] = ()  # the label values known in advance: exposed (as 0) from start-up


REQUEST_FAILURES = (
    "malformed",
    "too_large",
    "unsupported_media_type",
    "throttled",
    "not_found",
    "method_not_allowed",
    "timeout",
    "too_many_connections",
    "internal_error",
)

COUNTERS: tuple[MetricDef, ...] = (
    MetricDef(
        "requests_received",
        "agentwatch.collector.requests",
        "OTLP export requests received",
        "{request}",
        "protocol",
        ("grpc", "http"),
    ),
    MetricDef(
        "requests_failed",
        "agentwatch.collector.requests.failed",
        "Requests answered with an error, by reason",
        "{request}",
        "reason",
        REQUEST_FAILURES,
    ),
    MetricDef(
        "spans_received",
        "agentwatch.collector.spans.received",
        "Spans in well-formed requests (accepted + rejected)",
        "{span}",
        "protocol",
        ("grpc", "http"),
    ),
    MetricDef(
        "spans_rejected",
        "agentwatch.collector.spans.rejected",
        "Spans refused in a partial success, by reason",
        "{span}",
        "reason",
        ("invalid_id",),
    ),
    MetricDef(
        "spans_forwarded",
        "agentwatch.collector.spans.forwarded",
        "Spans delivered downstream (synthetic summary spans included)",
        "{span}",
    ),
    MetricDef(
        "spans_evicted",
        "agentwatch.collector.spans.evicted",
        "Spans forwarded unevaluated because the buffer overflowed",
        "{span}",
    ),
    MetricDef(
        "spans_dropped",
        "agentwatch.collector.spans.dropped",
        "Spans that could not be delivered, by reason",
        "{span}",
        "reason",
        (
            "export_failed",
            "retries_exhausted",
            "queue_overflow",
            "rejected_downstream",
            "shutdown",
            "internal_error",
        ),
    ),
    MetricDef(
        "spans_kept_for_replay",
        "agentwatch.collector.spans.kept_for_replay",
        "With a journal: spans undelivered when the drain timeout expired at shutdown, left in the journal "
        "for the next start (not dropped); in_flight: attempted at least once, so possibly delivered twice",
        "{span}",
        "state",
        ("queued", "in_flight"),
    ),
    MetricDef(
        "traces_decided",
        "agentwatch.collector.traces.decided",
        "Traces decided, by what triggered the decision",
        "{trace}",
        "reason",
        ("root", "run", "idle", "hard_timeout", "overflow", "shutdown", "late"),
    ),
    MetricDef(
        "findings",
        "agentwatch.collector.findings",
        "Anomaly findings added to spans, by flag",
        "{finding}",
        "flag",
        tuple(flag.value for flag in Flag),
    ),
    MetricDef(
        "late_spans",
        "agentwatch.collector.spans.late",
        "Spans that arrived after their trace was decided, by handling",
        "{span}",
        "mode",
        ("cached", "reevaluated", "unevaluated"),
    ),
    MetricDef(
        "summary_spans",
        "agentwatch.collector.summary_spans",
        "Synthetic agentwatch.anomaly.summary spans emitted",
        "{span}",
    ),
    MetricDef(
        "export_requests",
        "agentwatch.collector.export.requests",
        "Export attempts downstream, by outcome",
        "{request}",
        "outcome",
        ("success", "retry", "failed"),
    ),
    MetricDef(
        "journal_replayed_spans",
        "agentwatch.collector.journal.replayed_spans",
        "Spans replayed from the journal at start-up; in_flight: handed to the exporter before the "
        "restart, so possibly delivered twice",
        "{span}",
        "state",
        ("pending", "in_flight"),
    ),
    MetricDef(
        "journal_unacknowledged_spans",
        "agentwatch.collector.journal.unacknowledged_spans",
        "Spans replayed from the journal whose request's success answer had not been handed to the "
        "client before the stop: the client may have sent them again, so possibly delivered twice",
        "{span}",
    ),
    MetricDef(
        "journal_corrupt_records",
        "agentwatch.collector.journal.corrupt_records",
        "Torn or corrupt journal records found at start-up (truncated, not replayed)",
        "{record}",
    ),
    MetricDef(
        "journal_refused_requests",
        "agentwatch.collector.journal.refused_requests",
        "Requests refused because the journal could not take them, by reason (too_large: for good; others retryable)",
        "{request}",
        "reason",
        ("full", "io_error", "too_large"),
    ),
    MetricDef(
        "evaluation_errors",
        "agentwatch.collector.evaluation.errors",
        "Traces whose evaluation raised (forwarded with evaluated=false)",
        "{trace}",
    ),
)

GAUGES: tuple[MetricDef, ...] = (
    MetricDef(
        "buffer_traces", "agentwatch.collector.buffer.traces", "Traces waiting for a decision", "{trace}"
    ),
    MetricDef("buffer_spans", "agentwatch.collector.buffer.spans", "Spans waiting for a decision", "{span}"),
    MetricDef(
        "buffer_bytes", "agentwatch.collector.buffer.bytes", "Serialized bytes of buffered spans", "By"
    ),
    MetricDef(
        "queue_batches", "agentwatch.collector.queue.batches", "Export batches waiting or retrying", "{batch}"
    ),
    MetricDef(
        "queue_bytes", "agentwatch.collector.queue.bytes", "Bytes of export batches in the queue", "By"
    ),
    MetricDef("journal_bytes", "agentwatch.collector.journal.bytes", "Bytes of journal segments on disk", "By"),
    MetricDef(
        "journal_pending_requests",
        "agentwatch.collector.journal.pending_requests",
        "Journaled requests with spans not yet delivered or dropped",
        "{request}",
    ),
    MetricDef(
        "verdicts_cached",
        "agentwatch.collector.verdicts.cached",
        "Decided traces remembered for late spans",
        "{trace}",
    ),
    MetricDef(
        "retained_bytes",
        "agentwatch.collector.verdicts.retained_bytes",
        "Span bytes of decided traces kept to re-evaluate late spans",
        "By",
    ),
)

_COUNTER_DEFS = {d.name: d for d in COUNTERS}


class Stats:
    """Thread-safe counters plus gauge callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Every series known in advance exists from start-up, at 0: dashboards and alerts
        # (rate(), absent()) see it before the first span.
        self._counters: dict[str, dict[str, int]] = {
            d.name: dict.fromkeys(d.labels, 0) if d.label else {"": 0} for d in COUNTERS
        }
        self._gauges: dict[str, Callable[[], float]] = {}
        self.started = time.time()
        self.status = "starting"  # starting | ok | draining | stopped
        self.degraded: Callable[[], bool] | None = None  # while ok: is the collector impaired?
        self.extra: dict[str, Callable[[], Any]] = {}

    def add(self, name: str, n: int = 1, label: str = "") -> None:
        if n <= 0:  # counters only grow: a negative count (a bad downstream answer) is not one
            return
        with self._lock:
            series = self._counters[name]
            series[label] = series.get(label, 0) + n

    def add_many(self, name: str, counts: Iterable[tuple[str, int]]) -> None:
        with self._lock:
            series = self._counters[name]
            for label, n in counts:
                if n > 0:
                    series[label] = series.get(label, 0) + n

    def get(self, name: str, label: str | None = None) -> int:
        with self._lock:
            series = self._counters[name]
            return sum(series.values()) if label is None else series.get(label, 0)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def counters(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(series) for name, series in self._counters.items()}

    def gauges(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, read in self._gauges.items():
            try:
                out[name] = read()
            except Exception:  # a gauge must never break the health endpoint
                log.debug("gauge %s failed", name, exc_info=True)
        return out

    def current_status(self) -> str:
        if self.status == "ok" and self.degraded is not None:
            try:
                if self.degraded():
                    return "degraded"
            except Exception:
                log.debug("degraded check failed", exc_info=True)
        return self.status

    # ------------------------------------------------------------------ renderings

    def snapshot(self) -> dict[str, Any]:
        """The /healthz body: status, uptime, counters (labelled ones as {label: n}), gauges."""
        counters: dict[str, Any] = {}
        for name, series in self.counters().items():
            definition = _COUNTER_DEFS[name]
            if definition.label is None:
                counters[name] = series.get("", 0)
            else:
                counters[name] = {"total": sum(series.values()), **dict(sorted(series.items()))}
        body: dict[str, Any] = {
            "status": self.current_status(),
            "uptime_seconds": round(time.time() - self.started, 3),
            "pid": os.getpid(),
            "counters": counters,
            "gauges": self.gauges(),
        }
        for key, read in self.extra.items():
            try:
                body[key] = read()
            except Exception:
                log.debug("health extra %s failed", key, exc_info=True)
        return body

    def prometheus(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines: list[str] = []
        counters = self.counters()
        for d in COUNTERS:
            metric = f"agentwatch_collector_{d.name}_total"
            lines.append(f"# HELP {metric} {d.description}")
            lines.append(f"# TYPE {metric} counter")
            series = counters[d.name]
            if d.label is None:
                lines.append(f"{metric} {series.get('', 0)}")
            else:
                for label, value in sorted(series.items()):
                    lines.append(f'{metric}{{{d.label}="{_escape(label)}"}} {value}')
        gauges = self.gauges()
        for d in GAUGES:
            if d.name not in gauges:
                continue
            metric = f"agentwatch_collector_{d.name}"
            lines.append(f"# HELP {metric} {d.description}")
            lines.append(f"# TYPE {metric} gauge")
            lines.append(f"{metric} {_number(gauges[d.name])}")
        metric = "agentwatch_collector_up"
        lines.append(f"# HELP {metric} 1 while the collector accepts data")
        lines.append(f"# TYPE {metric} gauge")
        lines.append(f"{metric} {1 if self.current_status() in ('ok', 'degraded') else 0}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class RateLimitedLog:
    """Log a warning at most once per ``interval`` per key, summing what was held back."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._held: dict[str, tuple[int, int, str]] = {}

    def warn(self, key: str, spans: int, message: str) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                events, held, _ = self._held.get(key, (0, 0, ""))
                self._held[key] = (events + 1, held + spans, message)
                return
            self._last[key] = now
            events, held, _ = self._held.pop(key, (0, 0, ""))
        suffix = f" (plus {events} similar events, {held} spans, since the last report)" if events else ""
        log.warning("%s%s", message, suffix)

    def flush(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [k for k, t in self._last.items() if k in self._held and now - t >= self.interval]
            items = [(k, self._held.pop(k)) for k in due]
            for k in due:
                self._last[k] = now
        for _key, (events, spans, message) in items:
            log.warning("%s events like: %s; %d spans in total since the last report", events, message, spans)


# --------------------------------------------------------------------------- OpenTelemetry metrics


def start_otel_metrics(stats: Stats, version: str) -> Any:
    """A MeterProvider exporting the self-metrics over OTLP (``OTEL_EXPORTER_OTLP_*`` variables).

    The protocol comes from ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`` or
    ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` when neither is set).
    """
    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    exporter: MetricExporter
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter

        exporter = HttpExporter()
    else:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter

        exporter = GrpcExporter()
    resource = Resource.create({"service.name": "agentwatch-collector", "service.version": version})
    provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter)], resource=resource)
    meter = provider.get_meter("agentwatch.collector", version)

    def counter_callback(d: MetricDef) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            series = stats.counters()[d.name]
            if d.label is None:
                return [Observation(series.get("", 0))]
            return [Observation(v, {d.label: k}) for k, v in series.items()]

        return observe

    def gauge_callback(d: MetricDef) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            value = stats.gauges().get(d.name)
            return [] if value is None else [Observation(value)]

        return observe

    for d in COUNTERS:
        meter.create_observable_counter(
            d.otel_name, [counter_callback(d)], unit=d.unit, description=d.description
        )
    for d in GAUGES:
        meter.create_observable_gauge(
            d.otel_name, [gauge_callback(d)], unit=d.unit, description=d.description
        )
    return provider
