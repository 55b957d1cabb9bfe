"""Budgets: the span where each figure passes, nested runs, enforcement through begin_call."""

from __future__ import annotations

import pytest

from agentwatch.budget import Budget
from agentwatch.engine import Engine, Kind
from agentwatch.semconv import Flag, StopReason

from .conftest import T0, RunBuilder, S, flags, make_config


def budgeted(budget: Budget, config: dict | None = None) -> RunBuilder:
    engine = Engine(make_config(config))
    engine.open_run("run1", budget=budget, start_ns=T0)
    return RunBuilder(engine)


def test_step_budget_flags_the_passing_call_once() -> None:
    b = budgeted(Budget(max_steps=3))
    out = [flags(b.feed(b.llm() if i % 2 else b.tool("t", {"i": i}, i))) for i in range(6)]
    assert out == [set(), set(), set(), {"STEP_BUDGET_EXCEEDED"}, set(), set()]


def test_tool_budget_counts_tool_calls_only() -> None:
    b = budgeted(Budget(max_tool_calls=2))
    seq = [
        b.llm(),
        b.tool("t", {"i": 1}, 1),
        b.llm(),
        b.tool("t", {"i": 2}, 2),
        b.llm(),
        b.tool("t", {"i": 3}, 3),
    ]
    out = [flags(b.feed(r)) for r in seq]
    assert out[5] == {"TOOL_BUDGET_EXCEEDED"} and not any(out[:5])


def test_unique_calls_budget() -> None:
    b = budgeted(Budget(max_unique_calls=2))
    out = [flags(b.feed(b.tool("t", {"k": k}, f"page {i}"))) for i, k in enumerate((1, 2, 1, 2, 3, 4))]
    assert out == [set(), set(), set(), set(), {"TOOL_BUDGET_EXCEEDED"}, set()]


def test_time_cost_and_token_budgets() -> None:
    b = budgeted(Budget(max_seconds=2.5, max_usd=0.10, max_tokens=300))
    r1 = b.llm(tokens=100, cost_usd=0.06)
    r2 = b.llm(tokens=100, cost_usd=0.06)
    r3 = b.llm(tokens=150)
    r4 = b.llm(tokens=150)
    assert flags(b.feed(r1)) == set()
    assert flags(b.feed(r2)) == {"COST_BUDGET_EXCEEDED"}  # $0.12 > $0.10
    assert flags(b.feed(r3)) == {"TIME_BUDGET_EXCEEDED", "TOKEN_BUDGET_EXCEEDED"}  # ended at 3 s; 350 tokens
    assert flags(b.feed(r4)) == set()


def test_time_budget_passed_only_at_the_end_goes_on_the_run_span() -> None:
    b = budgeted(Budget(max_seconds=5))
    b.feed(b.tool("t", {}, 1))
    summary = b.engine.close_run("run1", stop_reason="success", end_ns=T0 + 6 * S)
    assert summary is not None
    assert [f.flag for f in summary.findings] == [Flag.TIME_BUDGET_EXCEEDED]
    assert summary.findings[0].span_id == "run1"
    assert summary.flags == ("TIME_BUDGET_EXCEEDED",)
    assert summary.failure_mode.value == "timeout"
    assert summary.fault_origin_span_id == "run1"


def test_default_budget_from_config_applies_to_lazy_runs() -> None:
    engine = Engine(make_config({"budgets": {"max_steps": 1}}))
    b = RunBuilder(engine, "lazy")
    assert flags(b.feed(b.llm())) == set()
    assert flags(b.feed(b.llm())) == {"STEP_BUDGET_EXCEEDED"}


def test_nested_runs_count_for_every_ancestor() -> None:
    engine = Engine(make_config())
    engine.open_run("parent", budget=Budget(max_tool_calls=2), start_ns=T0)
    engine.open_run("child", parent_run_key="parent", start_ns=T0)
    parent, child = RunBuilder(engine, "parent"), RunBuilder(engine, "child")
    assert child.feed(child.tool("t", {"a": 1}, 1)) == []
    assert parent.feed(parent.tool("t", {"a": 2}, 2)) == []
    out = child.feed(child.tool("t", {"a": 3}, 3))
    assert flags(out) == {"TOOL_BUDGET_EXCEEDED"}
    assert "enclosing run parent" in out[0].reason
    child_summary = engine.close_run("child", stop_reason="success", end_ns=T0 + 10 * S)
    parent_summary = engine.close_run("parent", stop_reason="success", end_ns=T0 + 11 * S)
    assert child_summary is not None and parent_summary is not None
    assert (child_summary.tool_calls, parent_summary.tool_calls) == (2, 3)
    assert parent_summary.flags == ("TOOL_BUDGET_EXCEEDED",)
    assert child_summary.fault_origin_span_id == parent_summary.fault_origin_span_id == out[0].span_id


@pytest.mark.parametrize(
    ("budget", "flag", "reason"),
    [
        (Budget(max_steps=3, enforce=True), Flag.STEP_BUDGET_EXCEEDED, StopReason.STEP_BUDGET),
        (Budget(max_tool_calls=3, enforce=True), Flag.TOOL_BUDGET_EXCEEDED, StopReason.TOOL_BUDGET),
        (Budget(max_unique_calls=3, enforce=True), Flag.TOOL_BUDGET_EXCEEDED, StopReason.TOOL_BUDGET),
    ],
)
def test_enforce_stops_the_call_observe_flags(budget: Budget, flag: Flag, reason: StopReason) -> None:
    """Same sequence twice: the call enforce refuses is the call observe mode flags."""
    observe = budgeted(Budget(**{**budget.__dict__, "enforce": False}))
    enforce = budgeted(budget)
    observed_at = stopped_at = None
    for i in range(6):
        rec = enforce.tool("t", {"i": i}, i)
        ticket = enforce.engine.begin_call(
            "run1", Kind.TOOL, tool_name="t", args_hash=rec.args_hash, now_ns=rec.start_ns
        )
        if ticket.stop is not None and stopped_at is None:
            stopped_at = i
            assert ticket.stop.finding.flag is flag
            assert ticket.stop.stop_reason is reason
            assert ticket.stop.finding.span_id == ""
            assert ticket.step == i + 1
        elif ticket.stop is None:
            assert ticket.step == i + 1
            enforce.feed(rec)
        if flag.value in flags(observe.feed(observe.tool("t", {"i": i}, i))) and observed_at is None:
            observed_at = i
    assert stopped_at == observed_at == 3


def test_blocked_call_does_not_consume_a_step() -> None:
    b = budgeted(Budget(max_steps=1, enforce=True))
    assert b.engine.begin_call("run1", Kind.LLM, now_ns=T0).step == 1
    blocked = b.engine.begin_call("run1", Kind.LLM, now_ns=T0)
    assert blocked.stop is not None and blocked.step == 2
    assert b.engine.begin_call("run1", Kind.LLM, now_ns=T0).step == 2  # still the second step
    summary = b.engine.close_run("run1", stop_reason="step_budget", end_ns=T0 + S)
    assert summary is not None
    assert [f.flag for f in summary.findings] == [Flag.STEP_BUDGET_EXCEEDED]  # recorded once
    assert summary.failure_mode.value == "cost_blowup"


def test_enforce_after_the_fact_budgets() -> None:
    b = budgeted(Budget(max_seconds=10, max_usd=0.05, max_tokens=100, enforce=True))
    engine = b.engine
    assert engine.begin_call("run1", Kind.LLM, now_ns=T0 + 5 * S).stop is None
    b.feed(b.llm(tokens=50, cost_usd=0.06))
    stop = engine.begin_call("run1", Kind.LLM, now_ns=T0 + 6 * S).stop
    assert stop is not None and stop.stop_reason is StopReason.COST_BUDGET
    late = Engine(make_config())
    late.open_run("r", budget=Budget(max_seconds=10, enforce=True), start_ns=T0)
    stop = late.begin_call("r", Kind.TOOL, tool_name="t", args_hash="a", now_ns=T0 + 11 * S).stop
    assert stop is not None and stop.stop_reason is StopReason.TIME_BUDGET
    tokens = Engine(make_config())
    tokens.open_run("r", budget=Budget(max_tokens=100, enforce=True), start_ns=T0)
    RunBuilder(tokens, "r").feed(RunBuilder(tokens, "r").llm(tokens=101))
    stop = tokens.begin_call("r", Kind.LLM, now_ns=T0).stop
    assert stop is not None and stop.stop_reason is StopReason.TOKEN_BUDGET


def test_enforced_ancestor_budget_stops_a_nested_call() -> None:
    engine = Engine(make_config())
    engine.open_run("parent", budget=Budget(max_steps=1, enforce=True), start_ns=T0)
    engine.open_run("child", parent_run_key="parent", start_ns=T0)
    assert engine.begin_call("child", Kind.LLM, now_ns=T0).stop is None
    ticket = engine.begin_call("child", Kind.LLM, now_ns=T0)
    assert ticket.stop is not None and "enclosing run parent" in ticket.stop.finding.reason
    summary = engine.close_run("parent", stop_reason="step_budget", end_ns=T0)
    assert summary is not None and summary.findings[0].span_id == "parent"


def test_a_closed_parent_still_passes_its_stop_to_the_runs_above() -> None:
    # A closed run gives up its reference to itself (memory freed at once), not its ancestors.
    engine = Engine(make_config())
    engine.open_run("grand", start_ns=T0)
    engine.open_run("parent", parent_run_key="grand", budget=Budget(max_steps=1, enforce=True), start_ns=T0)
    engine.open_run("child", parent_run_key="parent", start_ns=T0)
    assert engine.begin_call("child", Kind.LLM, now_ns=T0).stop is None
    engine.close_run("parent", stop_reason="success", end_ns=T0)
    assert engine.begin_call("child", Kind.LLM, now_ns=T0).stop is not None
    summary = engine.close_run("grand", stop_reason="success", end_ns=T0)
    assert summary is not None
    assert summary.flags == ("STEP_BUDGET_EXCEEDED",) and summary.anomaly_count == 1


def test_enforced_loop_stop_matches_observed_loop() -> None:
    b = budgeted(Budget(enforce=True))
    engine = b.engine
    for i in range(3):
        rec = b.tool("search", {"q": "same"}, "same")
        ticket = engine.begin_call("run1", Kind.TOOL, tool_name="search", args_hash=rec.args_hash, now_ns=0)
        if i < 2:
            assert ticket.stop is None
            assert b.feed(rec) == []
        else:
            assert ticket.stop is not None
            assert ticket.stop.stop_reason is StopReason.LOOP_DETECTED
            assert ticket.stop.finding.related_span_id == "run1-0001"
    # observe mode: the third call is the flagged one
    o = budgeted(Budget())
    out = [flags(o.feed(o.tool("search", {"q": "same"}, "same"))) for _ in range(3)]
    assert out[2] == {"LOOP_DETECTED"}


def test_loop_enforcement_off_without_enforce_or_when_disabled() -> None:
    b = budgeted(Budget(max_steps=100))
    for _ in range(4):
        rec = b.tool("s", {"q": 1}, 1)
        assert (
            b.engine.begin_call("run1", Kind.TOOL, tool_name="s", args_hash=rec.args_hash, now_ns=0).stop
            is None
        )
        b.feed(rec)
    d = budgeted(Budget(enforce=True), {"anomaly": {"disabled": ["LOOP_DETECTED"]}})
    for _ in range(4):
        rec = d.tool("s", {"q": 1}, 1)
        assert (
            d.engine.begin_call("run1", Kind.TOOL, tool_name="s", args_hash=rec.args_hash, now_ns=0).stop
            is None
        )
        d.feed(rec)


def test_denied_tool_stop_only_when_policy_enforced() -> None:
    observe = Engine(make_config({"tools": {"deny": ["db.*"]}}))
    assert observe.begin_call(None, Kind.TOOL, tool_name="db.write", now_ns=0).stop is None
    enforce = Engine(make_config({"tools": {"deny": ["db.*"], "enforce": True}}))
    ticket = enforce.begin_call(None, Kind.TOOL, tool_name="db.write", now_ns=0)
    assert ticket.step is None and ticket.stop is not None
    assert ticket.stop.stop_reason is StopReason.TOOL_DENIED and ticket.stop.finding.flag is Flag.TOOL_DENIED
    assert enforce.begin_call(None, Kind.TOOL, tool_name="search", now_ns=0).stop is None
    enforce.open_run("r")
    assert enforce.begin_call("r", Kind.TOOL, tool_name="db.drop", now_ns=0).stop is not None
    assert enforce.begin_call("r", Kind.TOOL, tool_name="kb.read", now_ns=0).step == 1


def test_steps_number_the_nearest_run_and_count_in_ancestors() -> None:
    engine = Engine(make_config())
    engine.open_run("p")
    engine.open_run("c", parent_run_key="p")
    assert engine.begin_call("p", Kind.LLM, now_ns=0).step == 1
    assert engine.begin_call("c", Kind.LLM, now_ns=0).step == 1
    assert engine.begin_call("c", Kind.TOOL, tool_name="t", args_hash="h", now_ns=0).step == 2
    assert engine.begin_call("p", Kind.LLM, now_ns=0).step == 4
    assert engine.begin_call(None, Kind.LLM, now_ns=0).step is None
