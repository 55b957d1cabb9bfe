"""Tell people about findings: a metric, a user callback and one log line each.

Shared by every in-process edge that finds anomalies (the SDK processor and
exporter, the instrumentation's live guard), so a finding is counted and logged
the same way wherever it was found. Reporting never raises into the caller.

Log lines go to the logger ``agentwatch.anomaly`` (ERROR for critical, WARNING
for high and medium, INFO for low) with these ``extra`` fields, for JSON
formatters and the OpenTelemetry logging handler: ``agentwatch.anomaly.flag``,
``agentwatch.anomaly.severity``, ``agentwatch.anomaly.reason``,
``agentwatch.anomaly.related_span_id``, ``trace_id``, ``span_id``,
``span_name``, ``run_key`` (span id of the run span, or of the local root when
the trace has no run span) and ``gen_ai.agent.name``. The reason is redacted
(secrets the detectors quoted are replaced by ``[REDACTED]``); the
``on_anomaly`` callback, which runs in the process, gets the finding as is.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics

from .. import semconv as sc
from ..engine.record import Finding, SpanRecord
from .findings import safe_reason

__all__ = ["AnomalyContext", "FindingReporter", "OnAnomaly"]

_logger = logging.getLogger(__name__)
anomaly_logger = logging.getLogger("agentwatch.anomaly")


@dataclass(frozen=True, slots=True)
class AnomalyContext:
    """Where a finding was made: enough to find the span in a trace backend."""

    trace_id: str
    span_id: str
    span_name: str = ""
    run_key: str | None = None
    agent_name: str | None = None

    @classmethod
    def of(cls, record: SpanRecord, agent_name: str | None = None) -> AnomalyContext:
        """The context of a finding on ``record`` (``agent_name`` when the record names none)."""
        return cls(
            trace_id=record.trace_id,
            span_id=record.span_id,
            span_name=record.name,
            run_key=record.run_key,
            agent_name=record.agent_name or agent_name,
        )


OnAnomaly = Callable[[Finding, AnomalyContext], None]


class FindingReporter:
    """Counts each finding on ``agentwatch.anomalies``, calls ``on_anomaly``, logs one line.

    The counter's attributes are the flag, the severity and the agent name
    (when known): all low-cardinality. An exception from ``on_anomaly`` is
    logged once (with its traceback), counted in :attr:`callback_errors`, and
    swallowed, so a faulty callback cannot break the spans it reports on.
    """

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        on_anomaly: OnAnomaly | None = None,
        log: bool = True,
    ) -> None:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("agentwatch")
        self._counter = meter.create_counter(
            sc.METRIC_ANOMALIES,
            unit="{anomaly}",
            description="Anomaly flags raised on agent spans, by flag, severity and agent.",
        )
        self._on_anomaly = on_anomaly
        self._log = log
        self._lock = threading.Lock()
        self._callback_failed = False
        self.callback_errors = 0
        self.reported = 0

    def report(self, findings: Iterable[Finding], context: AnomalyContext) -> None:
        """Report findings made on the span ``context`` names. Never raises."""
        for finding in findings:
            self.reported += 1
            self._count(finding, context)
            if self._on_anomaly is not None:
                self._call(finding, context)
            if self._log:
                self._log_line(finding, context)

    def _count(self, finding: Finding, context: AnomalyContext) -> None:
        attributes: dict[str, Any] = {
            sc.ANOMALY_FLAG: str(finding.flag),
            sc.ANOMALY_SEVERITY: str(finding.severity),
        }
        if context.agent_name:
            attributes[sc.GEN_AI_AGENT_NAME] = context.agent_name
        try:
            self._counter.add(1, attributes)
        except Exception:  # a broken meter provider must not break tracing
            _logger.debug("agentwatch: recording the anomaly metric failed", exc_info=True)

    def _call(self, finding: Finding, context: AnomalyContext) -> None:
        assert self._on_anomaly is not None
        try:
            self._on_anomaly(finding, context)
        except Exception:
            with self._lock:
                self.callback_errors += 1
                first = not self._callback_failed
                self._callback_failed = True
            if first:
                _logger.exception(
                    "agentwatch: the on_anomaly callback raised; further errors from it are counted, not logged"
                )

    def _log_line(self, finding: Finding, context: AnomalyContext) -> None:
        reason = safe_reason(finding)
        fields = {
            "agentwatch.anomaly.flag": str(finding.flag),
            "agentwatch.anomaly.severity": str(finding.severity),
            "agentwatch.anomaly.reason": reason,
            "agentwatch.anomaly.related_span_id": finding.related_span_id,
            "trace_id": context.trace_id,
            "span_id": finding.span_id or context.span_id,
            "span_name": context.span_name,
            "run_key": context.run_key,
            "gen_ai.agent.name": context.agent_name,
        }
        try:
            anomaly_logger.log(
                _LEVEL.get(str(finding.severity), logging.WARNING),
                "%s (%s) on span %s of trace %s: %s",
                finding.flag,
                finding.severity,
                fields["span_id"],
                context.trace_id,
                reason,
                extra=fields,
            )
        except Exception:
            _logger.debug("agentwatch: logging a finding failed", exc_info=True)


_LEVEL = {
    "critical": logging.ERROR,
    "high": logging.WARNING,
    "medium": logging.WARNING,
    "low": logging.INFO,
}


def with_engine_stats(counts: dict[str, int], engine: Any) -> dict[str, int]:
    """An adapter's counters plus its engine's, prefixed ``engine.``; never raises."""
    try:
        for key, value in dict(engine.stats).items():
            counts[f"engine.{key}"] = value
    except Exception:
        pass
    return counts
