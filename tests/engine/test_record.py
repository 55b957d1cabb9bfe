"""new_record: the adapters' fast constructor builds exactly what the dataclass constructor builds."""

from __future__ import annotations

from dataclasses import fields, replace

from agentwatch.engine.record import Kind, SpanRecord, new_record

CORE = dict(
    trace_id="t" * 32,
    span_id="s" * 16,
    parent_id="p" * 16,
    kind=Kind.TOOL,
    name="execute_tool get_order",
    start_ns=10,
    end_ns=20,
    run_key="run",
    parent_run_key=None,
    agent_name="support",
    is_error=True,
    error_type="TimeoutError",
)


def test_equal_to_the_dataclass_constructor() -> None:
    fast = new_record(*CORE.values())
    slow = SpanRecord(**CORE)  # type: ignore[arg-type]
    assert fast == slow
    assert repr(fast) == repr(slow)
    # every field readable, the ones not passed at their defaults
    for f in fields(SpanRecord):
        assert getattr(fast, f.name) == getattr(slow, f.name), f.name


def test_fields_set_later_are_the_records_own() -> None:
    a = new_record(*CORE.values())
    b = new_record(*CORE.values())
    a.tool_name = "get_order"
    a.arg_entities = (("order", "ord_555"),)
    assert b.tool_name is None and b.arg_entities is None
    assert SpanRecord(**CORE).tool_name is None  # type: ignore[arg-type]
    assert a != b


def test_replace_and_defaults_behave_as_for_any_record() -> None:
    a = new_record(*CORE.values())
    other = replace(a, kind=Kind.OTHER)
    assert other.kind is Kind.OTHER and other.span_id == a.span_id and a.kind is Kind.TOOL
    assert a.entities is None and a.requested_calls == () and a.flags_present == ()
