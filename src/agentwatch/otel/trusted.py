"""Attributes agentwatch built itself, written without the SDK re-checking each value.

The SDK validates every value on every ``set_attributes`` call, at about 0.6 µs
a value: with fifteen attributes that is the largest single cost of an
instrumented LLM call after the span itself. The values agentwatch builds are
already what the SDK would keep (``str``, ``bool``, ``int``, ``float``, or a
tuple of one of those, never ``None``), so on the SDK's own span class, with
no value-length limit configured and room under the count limit, they go
straight into the span's attribute store under the same two locks the SDK
takes. Every other case (another SDK, a limit configured, an ended span, a
value of any other type) goes through the public ``set_attributes``, so what
ends up on the span never differs; only the time does. The private layout is
probed once at import; if a future SDK changes it, the public path is used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from opentelemetry.trace import Span

_log = logging.getLogger(__name__)
_SCALARS = frozenset((str, bool, int, float))


def _sdk_span_types() -> tuple[type, ...]:
    """The SDK span classes whose private layout matches what the fast path needs, or ()."""
    try:
        from opentelemetry.attributes import BoundedAttributes
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        provider = TracerProvider(sampler=ALWAYS_ON, resource=Resource.get_empty(), shutdown_on_exit=False)
        span = provider.get_tracer(__name__).start_span("probe", attributes={"a": 1})
        store = span._attributes  # type: ignore[attr-defined]
        ok = (
            type(store) is BoundedAttributes
            and isinstance(store._dict, dict)
            and hasattr(store, "_lock")
            and hasattr(store, "_immutable")
            and hasattr(span, "_lock")
            and span._end_time is None  # type: ignore[attr-defined]
        )
        if ok:
            _write(span, store, {"b": ("x",)})
            ok = dict(span.attributes or {}) == {"a": 1, "b": ("x",)}  # type: ignore[attr-defined]
        span.end()
        return (type(span),) if ok else ()
    except Exception as err:  # pragma: no cover - only on an SDK with another layout
        _log.debug("agentwatch: SDK span layout not recognised, attributes use the public API: %r", err)
        return ()


def _write(span: Any, store: Any, attrs: Mapping[str, Any]) -> bool:
    """Put ``attrs`` in ``store`` if the span is open and nothing limits them; False otherwise."""
    if store._immutable or store.max_value_len is not None:
        return False
    with span._lock:
        if span._end_time is not None:
            return False
        maxlen = store.maxlen
        with store._lock:
            target = store._dict
            if maxlen is not None and len(target) + len(attrs) > maxlen:
                return False
            target.update(attrs)
    return True


def _plain(attrs: Mapping[str, Any]) -> bool:
    """Whether every value already has a type the SDK keeps as it is."""
    scalars = _SCALARS
    for value in attrs.values():
        kind = type(value)
        if kind in scalars:
            continue
        if kind is not tuple or not value:
            return False
        first = type(value[0])
        if first not in scalars:
            return False
        for item in value:
            if type(item) is not first:
                return False
    return True


_FAST_TYPES = _sdk_span_types()


def set_trusted_attributes(span: Span, attrs: Mapping[str, Any]) -> None:
    """``span.set_attributes(attrs)``, faster for agentwatch-built values on SDK spans."""
    if not attrs:
        return
    if type(span) in _FAST_TYPES and _plain(attrs):
        store = span._attributes  # type: ignore[attr-defined]
        if _write(span, store, attrs):
            return
    span.set_attributes(attrs)


def sampler_ignores_attributes(tracer: Any) -> bool:
    """Whether ``tracer`` samples with the SDK's own samplers, none of which read attributes.

    Then the attributes a sampler would be shown can be written after the span
    exists, through the fast path, with the same outcome. A custom sampler (or
    a tracer that is not the SDK's) is always shown them at span creation.
    """
    try:
        from opentelemetry.sdk.trace import sampling

        def blind(sampler: Any) -> bool:
            if type(sampler).__module__ != sampling.__name__:
                return False
            if isinstance(sampler, sampling.ParentBased):
                return all(
                    blind(getattr(sampler, name))
                    for name in (
                        "_root", "_remote_parent_sampled", "_remote_parent_not_sampled",
                        "_local_parent_sampled", "_local_parent_not_sampled",
                    )
                )
            return isinstance(sampler, (sampling.StaticSampler, sampling.TraceIdRatioBased))

        return blind(getattr(tracer, "sampler", None))
    except Exception:
        return False
