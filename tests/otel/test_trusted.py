"""The fast attribute path must leave exactly what the public ``set_attributes`` would."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.trace import INVALID_SPAN

from agentwatch.otel import trusted
from agentwatch.otel.trusted import set_trusted_attributes


def _pair(limits: SpanLimits | None = None) -> tuple[Any, Any]:
    tracer = TracerProvider(span_limits=limits).get_tracer("t") if limits else TracerProvider().get_tracer("t")
    return tracer.start_span("fast", attributes={"head": 1}), tracer.start_span("public", attributes={"head": 1})


CASES: list[dict[str, Any]] = [
    {"s": "x", "i": 3, "f": 0.5, "b": True, "t": ("a", "b"), "n": (1, 2)},
    {"mixed": ("a", 1), "list": ["a"], "none": None, "dict": {"a": 1}, "ok": "y"},
    {"empty": (), "bytes": b"x", "head": 2},
]


def test_the_sdk_layout_is_recognised() -> None:
    # If this fails after an SDK upgrade, agentwatch still works (public path), only slower.
    assert trusted._FAST_TYPES


@pytest.mark.parametrize("attrs", CASES)
def test_same_result_as_the_public_api(attrs: dict[str, Any]) -> None:
    fast, public = _pair()
    set_trusted_attributes(fast, attrs)
    public.set_attributes(attrs)
    assert dict(fast.attributes) == dict(public.attributes)


@pytest.mark.parametrize(
    "limits", [SpanLimits(max_span_attribute_length=3), SpanLimits(max_span_attributes=3)]
)
def test_configured_limits_are_honoured(limits: SpanLimits) -> None:
    fast, public = _pair(limits)
    attrs = {"long": "abcdefgh", "t": ("abcdef",), "a": 1, "b": 2, "c": 3}
    set_trusted_attributes(fast, attrs)
    public.set_attributes(attrs)
    assert dict(fast.attributes) == dict(public.attributes)
    assert fast.dropped_attributes == public.dropped_attributes


def test_ended_and_non_recording_spans_are_left_alone() -> None:
    fast, _ = _pair()
    fast.end()
    set_trusted_attributes(fast, {"late": "x"})
    assert "late" not in dict(fast.attributes)
    set_trusted_attributes(INVALID_SPAN, {"a": "b"})  # no error
