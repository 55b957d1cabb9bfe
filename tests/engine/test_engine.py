"""Engine lifecycle: runs, summaries, bounded state, thread safety, and input that must never raise."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from typing import Any

import pytest

from agentwatch.budget import Budget
from agentwatch.engine import Engine, Kind, SpanRecord
from agentwatch.engine import engine as engine_module

from .conftest import T0, RunBuilder, S, flags, make_config


def test_summary_totals_flags_and_origin(engine: Engine) -> None:
    engine.open_run("run1", agent_name="support", start_ns=T0)
    b = RunBuilder(engine)
    b.feed(b.llm(tokens=100, cost_usd=0.01))
    b.feed(replace(b.llm(tokens=50), output_tokens=7))
    for _ in range(3):
        b.feed(b.tool("t", {"a": 1}, "same"))
    summary = engine.close_run("run1", stop_reason="success", end_ns=b.clock)
    assert summary is not None
    assert (summary.steps, summary.llm_calls, summary.tool_calls) == (5, 2, 3)
    assert (summary.input_tokens, summary.output_tokens, summary.cost_usd) == (150, 7, 0.01)
    assert summary.flags == ("LOOP_DETECTED",)
    # the origin is the loop's first call (the finding's evidence), not the third that tripped it
    assert summary.anomaly_count == 1 and summary.fault_origin_span_id == "run1-0003"
    assert summary.failure_mode.value == "cost_blowup"
    assert engine.close_run("run1", stop_reason="success", end_ns=0) is None  # state dropped
    assert engine.stats["runs_open"] == 0 and engine.stats["runs_closed"] == 1


def test_nested_run_flags_reach_the_parent_summary(engine: Engine) -> None:
    engine.open_run("p", start_ns=T0)
    engine.open_run("c", parent_run_key="p", start_ns=T0)
    c = RunBuilder(engine, "c")
    for _ in range(3):
        c.feed(c.tool("t", {}, error=True))
    child = engine.close_run("c", stop_reason="tool_error", end_ns=c.clock)
    parent = engine.close_run("p", stop_reason="success", end_ns=c.clock)
    assert child is not None and parent is not None
    assert set(parent.flags) == set(child.flags) == {"RETRY_STORM", "LOOP_DETECTED"}
    assert parent.anomaly_count == child.anomaly_count
    assert parent.tool_calls == 3 and parent.fault_origin_span_id == "c-0001"  # the first failure


def test_open_run_is_idempotent_and_fills_a_lazy_run(engine: Engine) -> None:
    b = RunBuilder(engine, "r")
    b.feed(b.tool("t", {}, 1))  # creates "r" lazily
    engine.open_run("r", entities={"customer": "cust_1"}, budget=Budget(max_steps=1), start_ns=T0)
    engine.open_run("r", entities={"customer": "cust_2"}, budget=Budget(max_steps=50))  # ignored
    assert flags(b.feed(b.tool("t", {"x": 1}, 2))) == {"STEP_BUDGET_EXCEEDED"}
    other = {"customer_id": "cust_2"}
    assert "ENTITY_MISMATCH" in flags(b.feed(b.tool("get", {}, other, result=other)))
    assert engine.stats["runs_created"] == 1


def test_flags_already_present_are_still_returned(run: RunBuilder) -> None:
    for _ in range(2):
        run.feed(run.tool("t", {}, "r"))
    rec = replace(run.tool("t", {}, "r"), flags_present=("LOOP_DETECTED",))
    assert flags(run.feed(rec)) == {"LOOP_DETECTED"}


def test_one_finding_per_flag_per_span() -> None:
    engine = Engine(make_config())
    engine.open_run("r", budget=Budget(max_tool_calls=1, max_unique_calls=1), start_ns=T0)
    b = RunBuilder(engine, "r")
    b.feed(b.tool("t", {"a": 1}, 1))
    out = b.feed(b.tool("t", {"a": 2}, 2))
    assert [f.flag.value for f in out] == ["TOOL_BUDGET_EXCEEDED"]


def test_lru_eviction_of_runs() -> None:
    engine = Engine(make_config({"limits": {"max_runs": 3}}))
    for k in range(5):
        engine.open_run(f"r{k}")
    assert engine.stats["runs_open"] == 3 and engine.stats["runs_evicted"] == 2
    assert engine.close_run("r0", stop_reason=None, end_ns=0) is None
    assert engine.close_run("r4", stop_reason=None, end_ns=0) is not None


def test_idle_runs_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(engine_module, "_monotonic", lambda: now[0])
    engine = Engine(make_config({"limits": {"run_ttl_seconds": 60}}))
    engine.open_run("old")
    now[0] += 30
    engine.open_run("young")
    now[0] += 45  # old idle 75 s, young 45 s
    RunBuilder(engine, "other").feed(RunBuilder(engine, "other").llm())
    assert engine.stats["runs_expired"] == 1
    assert engine.close_run("old", stop_reason=None, end_ns=0) is None
    assert engine.close_run("young", stop_reason=None, end_ns=0) is not None


def test_calls_per_run_are_bounded() -> None:
    engine = Engine(make_config({"limits": {"max_calls_per_run": 40}}))
    b = RunBuilder(engine, "r")
    for i in range(200):
        b.feed(b.tool("t", {"i": i}, i))
    state = engine._core.runs.peek("r")
    assert state is not None and len(state.calls) <= 40 and len(state.results) <= 40
    assert engine.stats["calls_evicted"] > 0


def test_thread_safety_smoke() -> None:
    engine = Engine(make_config({"budgets": {"max_steps": 10**6}}))
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            for r in range(20):
                key = f"w{w}-r{r}"
                engine.open_run(key, start_ns=T0)
                b = RunBuilder(engine, key)
                for i in range(25):
                    engine.begin_call(key, Kind.TOOL, tool_name="t", args_hash=str(i % 5), now_ns=T0)
                    engine.process(b.tool("t", {"i": i % 5}, "same"))
                    engine.process(b.llm(tokens=10))
                summary = engine.close_run(key, stop_reason="success", end_ns=b.clock)
                assert summary is not None and summary.steps == 50
                engine.evaluate_trace([b.tool("x", {}, 1)])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stats = engine.stats
    assert stats["runs_open"] == 0 and stats["runs_closed"] == 160 and stats["internal_errors"] == 0


def hostile(span_id: str, kind: Any, **fields: Any) -> SpanRecord:
    """A record with whatever field values a broken adapter might send (types unchecked on purpose)."""
    return SpanRecord(trace_id="t", span_id=span_id, parent_id=None, kind=kind, **fields)


HOSTILE = [
    hostile("", Kind.TOOL),
    hostile("s", "tool", run_key="r"),  # a kind given as its string value is accepted
    hostile("s1", "nonsense"),
    hostile("s2", Kind.TOOL, run_key="r", tool_name=None, args_hash=None),
    hostile("s3", Kind.LLM, run_key="r", input_tokens=-5, output_tokens=10**30, cost_usd=math.nan),
    hostile("s4", Kind.LLM, run_key="r", input_tokens="12", cost_usd=math.inf),
    hostile(
        "s5",
        Kind.TOOL,
        run_key="r",
        tool_name=42,
        args_hash=7,
        arguments={"a": object()},
        result=object(),
        tool_schema={"type": "object"},
    ),
    hostile(
        "s6",
        Kind.TOOL,
        run_key="r",
        tool_name="t",
        start_ns=10,
        end_ns=5,
        arg_entities=(("x", 5),),
        result_entities=(("x", None),),
    ),
    hostile(
        "s7",
        Kind.LLM,
        run_key="r",
        requested_calls=(["a", "b"],),
        requested_entities=(("order", "ord_1"),),
        input_entities=(),
        offered_tools=("z",),
    ),
    hostile(
        "s8",
        Kind.TOOL,
        run_key="r",
        tool_name="t",
        arguments="x" * 1_000_000,
        result="y" * 1_000_000,
        start_ns=-1,
        end_ns=2**70,
    ),
    hostile("s9", Kind.RUN, run_key="r"),
    hostile("s10", Kind.PHASE, run_key=""),
]


def _unchecked_budget(**values: object) -> Budget:
    """A Budget holding values Budget() itself rejects (ConfigError): the engine must survive one anyway."""
    budget = Budget()
    for name, value in values.items():
        object.__setattr__(budget, name, value)
    return budget


def test_hostile_records_never_raise() -> None:
    engine = Engine(
        make_config({"budgets": {"max_steps": 3, "max_seconds": 1, "max_usd": 1, "max_tokens": 5}})
    )
    engine.open_run("r", entities={"customer": "cust_1", "bad": None, "n": 5})  # type: ignore[dict-item]
    for rec in HOSTILE:
        assert isinstance(engine.process(rec), list)
    assert isinstance(engine.process("not a record"), list)  # type: ignore[arg-type]
    assert isinstance(engine.process(None), list)  # type: ignore[arg-type]
    engine.begin_call("r", "bogus", tool_name=["x"], args_hash={"y": 1}, now_ns="late")  # type: ignore[arg-type]
    engine.open_run("", parent_run_key="r")
    engine.open_run("loop", parent_run_key="loop")
    engine.open_run("r2", parent_run_key="nope", budget=_unchecked_budget(max_steps=-1, max_seconds=math.nan))
    engine.close_run("r", stop_reason=5, end_ns="x")  # type: ignore[arg-type]
    stats = engine.stats
    assert stats["records_rejected"] >= 3
    assert stats["values_rejected"] >= 3
    assert stats["internal_errors"] == 0, "hostile input must be handled, not caught by the last resort"
    verdict = engine.evaluate_trace([*HOSTILE, None, 5])  # type: ignore[list-item]
    assert isinstance(verdict.findings, dict)


def test_run_key_none_is_stateless() -> None:
    engine = Engine(make_config())
    rec = SpanRecord("t", "s", None, Kind.TOOL, tool_name="t", args_hash="h")
    for _ in range(5):
        assert engine.process(rec) == []
    assert engine.stats["runs_open"] == 0


def test_start_time_taken_from_the_first_call_when_missing() -> None:
    engine = Engine(make_config())
    engine.open_run("r", budget=Budget(max_seconds=2))
    b = RunBuilder(engine, "r")
    b.feed(b.tool("a", {}, 1))
    b.feed(b.tool("b", {}, 2))
    assert flags(b.feed(b.tool("c", {}, 3))) == {"TIME_BUDGET_EXCEEDED"}
    assert engine.close_run("r", stop_reason="success", end_ns=b.clock + 10 * S) is not None
