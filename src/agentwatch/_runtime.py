"""Process-wide state shared by the instrumentation: tracer, meters, config, engine.

One :class:`Runtime` exists per process. ``agentwatch.instrument()`` rebuilds
it with the caller's providers and configuration; code that uses
``agentwatch.run``/``tool`` without calling ``instrument()`` gets one built
lazily from the global providers and the default configuration.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace

from . import semconv as sc
from .config import Config, load_config
from .content import Redactor
from .pricing import PriceTable
from .version import __version__

if TYPE_CHECKING:
    from .implicit import ImplicitRuns

logger = logging.getLogger("agentwatch")

SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"


class Instruments:
    """The metric instruments agentwatch records (GenAI conventions plus run counters)."""

    def __init__(self, meter: metrics.Meter) -> None:
        self.token_usage = _histogram(
            meter, sc.METRIC_TOKEN_USAGE, "{token}", "Number of input and output tokens used.",
            sc.TOKEN_USAGE_BUCKETS,
        )
        self.duration = _histogram(
            meter, sc.METRIC_OPERATION_DURATION, "s", "GenAI operation duration.", sc.DURATION_BUCKETS
        )
        self.runs = meter.create_counter(sc.METRIC_RUNS, "{run}", "Agent runs by stop reason.")
        self.cost = meter.create_counter(sc.METRIC_COST, "USD", "Model spend in US dollars.")


def _histogram(
    meter: metrics.Meter, name: str, unit: str, description: str, buckets: tuple[float, ...]
) -> metrics.Histogram:
    params = inspect.signature(meter.create_histogram).parameters
    if "explicit_bucket_boundaries_advisory" in params:
        return meter.create_histogram(
            name, unit, description, explicit_bucket_boundaries_advisory=list(buckets)
        )
    return meter.create_histogram(name, unit, description)  # API < 1.23


class Runtime:
    """Everything an instrumented call needs, resolved once."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        config: Any = None,
        on_anomaly: Callable[..., None] | None = None,
    ) -> None:
        from .engine.engine import Engine  # late: the engine imports config
        from .engine.entities import EntityExtractor
        from .implicit import ImplicitRuns
        from .otel.reporting import FindingReporter
        from .otel.trusted import sampler_ignores_attributes

        self.providers = (tracer_provider, meter_provider, on_anomaly)

        self.config: Config = load_config(config)
        self.tracer = trace.get_tracer(
            "agentwatch", __version__, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
        )
        # With the SDK's own samplers, which never read attributes, span attributes can
        # all go through the fast path after creation (see otel.trusted).
        self.sampler_blind = sampler_ignores_attributes(self.tracer)
        meter = metrics.get_meter("agentwatch", __version__, meter_provider=meter_provider)
        self.instruments = Instruments(meter)
        self.prices = PriceTable(self.config.prices)
        self.redactor = Redactor(self.config.redact_keys, self.config.max_content_chars)
        # Deny rules are enforced by failing the call's own span (start_tool), where the
        # engine flags TOOL_DENIED; only budgets and loops refuse a call before its span.
        guard_config = dataclasses.replace(
            self.config, tools=dataclasses.replace(self.config.tools, enforce=False)
        )
        self.engine = Engine(guard_config)
        self.extractor = EntityExtractor(self.config.entities)
        self.inline = self.config.anomaly.inline
        # Calls outside any run are grouped by conversation (contract §8), within the run limits.
        limits = self.config.limits
        # At most half the engine's run table, so one-shot calls cannot crowd explicit runs out;
        # a conversation forgotten here frees its engine state at once.
        self.implicit: ImplicitRuns | None = None
        if self.config.anomaly.implicit_runs:
            engine = self.engine
            self.implicit = ImplicitRuns(
                max(1, limits.max_runs // 2),
                limits.run_ttl_seconds,
                on_forget=engine.forget_run,
                # Budget limits judge every call, the first one too: then none is deferred.
                defer_first_calls=not engine.has_default_limits,
            )
        self.reporter = FindingReporter(
            meter_provider=meter_provider, on_anomaly=on_anomaly, log=self.config.anomaly.log_findings
        )
        from .calllog import apply_level
        from .gateway.executor import Gateway

        apply_level(self.config.log_level)

        self.gateway = Gateway(self.config.gateway, meter)


_lock = threading.Lock()
_runtime: Runtime | None = None
# None: never instrumented (decorators work on the global providers);
# True: instrumented; False: uninstrument() was called (everything inert).
active: bool | None = None


def get() -> Runtime:
    global _runtime
    rt = _runtime
    if rt is None:
        with _lock:
            if _runtime is None:
                _runtime = Runtime()
            rt = _runtime
    return rt


def current() -> Runtime | None:
    """The runtime if one was built, without building one."""
    return _runtime


def configure(**kwargs: Any) -> Runtime:
    global _runtime
    rt = Runtime(**kwargs)
    with _lock:
        _runtime = rt
    return rt


def reconfigure(
    tracer_provider: Any = None, meter_provider: Any = None, config: Any = None, on_anomaly: Any = None
) -> Runtime:
    """A repeated ``instrument()``: keep the patches, take the providers given (else the
    previous ones) and resolve the configuration again (argument, environment, file)."""
    previous = _runtime.providers if _runtime is not None else (None, None, None)
    return configure(
        tracer_provider=tracer_provider if tracer_provider is not None else previous[0],
        meter_provider=meter_provider if meter_provider is not None else previous[1],
        config=config,
        on_anomaly=on_anomaly if on_anomaly is not None else previous[2],
    )


def enabled() -> bool:
    return active is not False


_warned: set[str] = set()


def internal_error(where: str, exc: BaseException) -> None:
    """Log an agentwatch bug once per place; the user's call goes on untouched."""
    from .redaction import redact_text  # late: keeps this module's imports light

    if where not in _warned:
        _warned.add(where)
        # The trace is formatted here, redacted: the error may quote the user's data.
        trace_text = "".join(traceback.format_exception(exc))
        logger.warning(
            "agentwatch: internal error in %s (reported once): %s\n%s",
            where, redact_text(repr(exc)), redact_text(trace_text),
        )
    else:
        logger.debug("agentwatch: internal error in %s: %s", where, redact_text(repr(exc)))
