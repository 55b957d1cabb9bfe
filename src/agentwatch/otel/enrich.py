"""Copy an ended span with anomaly attributes and events added.

The SDK freezes a span's attributes when ``Span.end()`` runs, before any
processor's ``on_end`` sees it, so a processor or exporter that finds an
anomaly cannot tag the span itself: it forwards a copy. The copy keeps every
field exporters read (context, parent, kind, resource, scope, links, status,
times, dropped counts) and differs only in the merged attributes and events.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan

__all__ = ["EnrichedSpan", "enrich"]

EventSpec = tuple[str, Mapping[str, Any]]

# ReadableSpan's constructor has grown keywords over SDK releases; pass only those it takes.
_ACCEPTS = frozenset(inspect.signature(ReadableSpan.__init__).parameters)
_PASS_SCOPE = "instrumentation_scope" in _ACCEPTS
_PASS_INFO = "instrumentation_info" in _ACCEPTS


class EnrichedSpan(ReadableSpan):
    """A read-only span copy that reports the original's dropped counts.

    Exporters encode ``dropped_attributes`` / ``dropped_events`` /
    ``dropped_links``; a plain ``ReadableSpan`` built from copied collections
    would report zero for each.
    """

    def __init__(self, original: ReadableSpan, attributes: dict[str, Any], events: tuple[Event, ...]) -> None:
        kwargs: dict[str, Any] = {}
        if _PASS_SCOPE:
            kwargs["instrumentation_scope"] = original.instrumentation_scope
        if _PASS_INFO:
            # Read the field, not the deprecated property, to avoid a warning per span.
            kwargs["instrumentation_info"] = getattr(original, "_instrumentation_info", None)
        super().__init__(
            name=original.name,
            context=original.get_span_context(),
            parent=original.parent,
            resource=original.resource,
            attributes=attributes,
            events=events,
            links=original.links,
            kind=original.kind,
            status=original.status,
            start_time=original.start_time,
            end_time=original.end_time,
            **kwargs,
        )
        self._dropped_counts = (
            _dropped(original, "dropped_attributes"),
            _dropped(original, "dropped_events"),
            _dropped(original, "dropped_links"),
        )

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_counts[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped_counts[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped_counts[2]


def _dropped(span: ReadableSpan, name: str) -> int:
    try:
        value = getattr(span, name, 0)
    except Exception:
        return 0
    return value if isinstance(value, int) else 0


def enrich(
    span: ReadableSpan,
    attributes: Mapping[str, Any] | None = None,
    events: Sequence[EventSpec] = (),
    *,
    timestamp: int | None = None,
) -> ReadableSpan:
    """A copy of ``span`` with ``attributes`` merged over its own and ``events`` appended.

    New events are stamped ``timestamp``, else the span's end time (the moment
    the detectors saw it), so they stay inside the span's interval.
    """
    merged = dict(span.attributes or {})
    if attributes:
        merged.update(attributes)
    old_events = tuple(span.events)
    if events:
        stamp = timestamp if timestamp is not None else (span.end_time or span.start_time)
        new_events = old_events + tuple(Event(name, dict(attrs), stamp) for name, attrs in events)
    else:
        new_events = old_events
    return EnrichedSpan(span, merged, new_events)
