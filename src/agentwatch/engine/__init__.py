"""Detector engine: pure Python, knows nothing of OpenTelemetry types.

Adapters turn spans into :class:`SpanRecord`; the :class:`Engine` turns them
into :class:`Finding` (flags on spans) and :class:`RunSummary` (what a run span
carries when it ends).
"""

from .engine import CallTicket, Engine, Stop, TraceVerdict
from .entities import EntityExtractor, format_entities, parse_entities
from .outcome import failure_mode
from .record import Entity, Finding, Kind, RunSummary, SpanRecord
from .severity import DEFAULT_SEVERITY

__all__ = [
    "DEFAULT_SEVERITY",
    "CallTicket",
    "Engine",
    "Entity",
    "EntityExtractor",
    "Finding",
    "Kind",
    "RunSummary",
    "SpanRecord",
    "Stop",
    "TraceVerdict",
    "failure_mode",
    "format_entities",
    "parse_entities",
]
