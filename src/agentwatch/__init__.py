"""agentwatch: make AI agents debuggable and safe in production with OpenTelemetry.

Start-up: ``agentwatch.instrument()`` (or ``opentelemetry-instrument``). Then
``agentwatch.run``/``phase``/``tool`` shape the span tree, ``Budget`` limits a
run, and ``AnomalyProcessor``/``AnomalyExporter`` tag spans with anomaly flags.
"""

from __future__ import annotations

from typing import Any

from .budget import Budget
from .config import Config, load_config
from .errors import (
    AnomalyStop,
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    LoopDetected,
    ReplayDivergence,
    StopRun,
    ToolDenied,
    ToolInputInvalid,
    ToolOutputInvalid,
)
from .forensics.replay import replay
from .gateway.safe_mode import safe_mode
from .instrumentation import Instrumentor, instrument, uninstrument
from .runs import Run, current_run, phase, run
from .semconv import FailureMode, Flag, Severity, StopReason
from .tools import tool
from .version import __version__

__all__ = [
    "ReplayDivergence",
    "replay",
    "AnomalyExporter",
    "AnomalyStop",
    "CircuitOpen",
    "ToolInputInvalid",
    "ToolOutputInvalid",
    "safe_mode",
    "AnomalyProcessor",
    "Budget",
    "BudgetExceeded",
    "Config",
    "ConfigError",
    "FailureMode",
    "Flag",
    "Instrumentor",
    "LoopDetected",
    "Run",
    "Severity",
    "StopReason",
    "StopRun",
    "ToolDenied",
    "__version__",
    "current_run",
    "instrument",
    "load_config",
    "phase",
    "run",
    "tool",
    "uninstrument",
]


def __getattr__(name: str) -> Any:
    # The SDK adapters import the OTel SDK; load them only when asked for.
    if name == "AnomalyProcessor":
        from .otel.processor import AnomalyProcessor

        return AnomalyProcessor
    if name == "AnomalyExporter":
        from .otel.exporter import AnomalyExporter

        return AnomalyExporter
    raise AttributeError(f"module 'agentwatch' has no attribute {name!r}")
