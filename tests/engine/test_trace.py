"""evaluate_trace: run resolution from parent links, order independence, and messy traces."""

from __future__ import annotations

import random
from dataclasses import replace

from agentwatch.budget import Budget
from agentwatch.engine import Engine, Kind, SpanRecord, TraceVerdict
from agentwatch.engine.state import Stats
from agentwatch.engine.trace import plan

from .conftest import T0, RunBuilder, S, make_config


def seed_trace() -> list[SpanRecord]:
    """Seed 003 as a trace whose records carry no run_key: only parent links."""
    engine = Engine(make_config())
    b = RunBuilder(engine, "root", trace_id="tr")
    run = SpanRecord(
        "tr",
        "root",
        None,
        Kind.RUN,
        name="invoke_agent support",
        start_ns=T0 - S,
        end_ns=T0 + 60 * S,
        entities={"customer": "cust_789"},
        stop_reason="success",
    )
    phase = SpanRecord("tr", "phase", "root", Kind.PHASE, start_ns=T0, end_ns=T0 + 50 * S)
    records = [
        b.llm(calls=[("get_customer", {"id": "cust_789"})], reads="latest order please"),
        b.tool("get_customer", {"id": "cust_789"}, 1, result={"customer_id": "cust_789"}),
        b.llm(calls=[("get_order", {"id": "ord_555"})]),
        b.tool(
            "get_order",
            {"id": "ord_555"},
            2,
            arguments={"id": "ord_555"},
            result={"order_id": "ord_555", "customer_id": "cust_012"},
        ),
    ]
    records = [replace(r, run_key=None, parent_id="phase") for r in records]
    loop = [replace(b.tool("search", {"q": 1}, "same"), run_key=None, parent_id="root") for _ in range(3)]
    return [run, phase, *records, *loop]


def test_whole_trace_verdict() -> None:
    verdict = Engine(make_config()).evaluate_trace(seed_trace())
    got = {sid: sorted(f.flag.value for f in fs) for sid, fs in verdict.findings.items()}
    assert got == {
        "root-0003": ["ENTITY_HALLUCINATION"],
        "root-0004": ["ENTITY_HALLUCINATION", "ENTITY_MISMATCH"],
        "root-0007": ["LOOP_DETECTED"],
    }
    summary = verdict.summaries["root"]
    assert summary.fault_origin_span_id == "root-0003"
    assert summary.steps == 7 and summary.failure_mode.value == "cost_blowup"


def test_shuffled_input_gives_the_same_verdict() -> None:
    records = seed_trace()
    engine = Engine(make_config())
    expected = engine.evaluate_trace(records)
    rng = random.Random(3)
    for _ in range(25):
        shuffled = list(records)
        rng.shuffle(shuffled)
        assert engine.evaluate_trace(shuffled) == expected


def test_independent_of_live_state() -> None:
    engine = Engine(make_config())
    engine.open_run("root", budget=Budget(max_steps=1))
    b = RunBuilder(engine, "root")
    b.feed(b.llm())
    before = engine.stats["runs_open"]
    verdict = engine.evaluate_trace(seed_trace())
    assert "STEP_BUDGET_EXCEEDED" not in {f.flag.value for fs in verdict.findings.values() for f in fs}
    assert engine.stats["runs_open"] == before
    assert engine.stats["traces_evaluated"] == 1
    summary = engine.close_run("root", stop_reason="success", end_ns=b.clock)
    assert summary is not None and summary.steps == 1


def test_nested_runs_resolved_from_parents() -> None:
    parent = SpanRecord(
        "tr",
        "p",
        None,
        Kind.RUN,
        start_ns=T0,
        end_ns=T0 + 9 * S,
        budget=Budget(max_tool_calls=1),
        stop_reason="success",
    )
    child = SpanRecord("tr", "c", "p", Kind.RUN, start_ns=T0 + S, end_ns=T0 + 8 * S, stop_reason="success")
    calls = [
        SpanRecord(
            "tr",
            f"t{i}",
            "c",
            Kind.TOOL,
            start_ns=T0 + (2 + i) * S,
            end_ns=T0 + (2 + i) * S + 1,
            tool_name="x",
            args_hash=f"h{i}",
            result_hash=f"r{i}",
        )
        for i in range(2)
    ]
    verdict = Engine(make_config()).evaluate_trace([*calls, child, parent])
    assert [f.flag.value for f in verdict.findings["t1"]] == ["TOOL_BUDGET_EXCEEDED"]
    assert verdict.summaries["p"].tool_calls == 2 and verdict.summaries["c"].tool_calls == 2
    assert verdict.summaries["p"].flags == ("TOOL_BUDGET_EXCEEDED",)
    stats = Stats()
    planned = plan([*calls, child, parent], stats)
    by_id = {span_id: (run_key, parent_run_key) for _, _, span_id, _, run_key, parent_run_key, _ in planned[0]}
    assert by_id["c"] == ("c", "p") and by_id["t0"] == ("c", None)


def test_rootless_spans_share_the_local_root_and_get_no_summary() -> None:
    root = SpanRecord("tr", "root", "missing-parent", Kind.OTHER, start_ns=T0, end_ns=T0 + 9 * S)
    calls = [
        SpanRecord(
            "tr",
            f"t{i}",
            "root",
            Kind.TOOL,
            start_ns=T0 + i + 1,
            end_ns=T0 + i + 2,
            tool_name="x",
            args_hash="same",
        )
        for i in range(3)
    ]
    engine = Engine(make_config())
    verdict = engine.evaluate_trace([root, *calls])
    assert [f.flag.value for f in verdict.findings["t2"]] == ["LOOP_DETECTED"]
    assert verdict.summaries == {}
    assert engine.stats["missing_parents"] == 1


def test_adapter_run_keys_win() -> None:
    calls = [
        SpanRecord(
            "tr",
            f"t{i}",
            None,
            Kind.TOOL,
            run_key=f"run{i % 2}",
            start_ns=T0 + i,
            tool_name="x",
            args_hash="same",
        )
        for i in range(4)
    ]
    verdict = Engine(make_config()).evaluate_trace(calls)
    assert verdict.findings == {}


def test_cycles_duplicates_skew_and_garbage_never_raise() -> None:
    a = SpanRecord("tr", "a", "b", Kind.TOOL, start_ns=T0, end_ns=T0 - 5, tool_name="x", args_hash="h")
    b = SpanRecord("tr", "b", "a", Kind.TOOL, start_ns=T0 + 1, end_ns=T0 + 2, tool_name="x", args_hash="h")
    c = SpanRecord("tr", "c", "c", Kind.TOOL, start_ns=T0 + 2, end_ns=T0 + 3, tool_name="x", args_hash="h")
    dup1 = SpanRecord("tr", "d", "a", Kind.TOOL, start_ns=T0 + 3, end_ns=T0 + 4, tool_name="x", args_hash="h")
    dup2 = replace(dup1, end_ns=T0 + 9)
    other = SpanRecord("other", "e", None, Kind.LLM, start_ns="soon", end_ns=None)  # type: ignore[arg-type]
    engine = Engine(make_config())
    records = [a, b, c, dup1, dup2, other, None, "junk", SpanRecord("tr", "", None, Kind.TOOL)]
    verdict = engine.evaluate_trace(records)  # type: ignore[arg-type]
    assert isinstance(verdict, TraceVerdict)
    shuffled = list(reversed(records))
    assert engine.evaluate_trace(shuffled) == verdict  # type: ignore[arg-type]
    stats = engine.stats
    assert stats["parent_cycles"] >= 2 and stats["duplicate_spans"] >= 2 and stats["clock_skew"] >= 2
    assert stats["records_rejected"] >= 6 and stats["internal_errors"] == 0


def test_run_input_grounds_ids() -> None:
    run = SpanRecord(
        "tr", "r", None, Kind.RUN, start_ns=T0, end_ns=T0 + 9 * S, arguments={"question": "where is ord_42?"}
    )
    llm = SpanRecord(
        "tr",
        "l",
        "r",
        Kind.LLM,
        start_ns=T0 + 1,
        end_ns=T0 + 2,
        requested_calls=(("get", "h"),),
        requested_entities=(("order", "ord_42"),),
    )
    bad = replace(llm, span_id="l2", start_ns=T0 + 3, requested_entities=(("order", "ord_43"),))
    verdict = Engine(make_config()).evaluate_trace([run, llm, bad])
    assert list(verdict.findings) == ["l2"]


def test_server_side_span_of_the_same_tool_call_is_not_a_second_call() -> None:
    from agentwatch.engine import Engine, Kind, SpanRecord

    records = [SpanRecord("t" * 32, "r" * 16, None, Kind.RUN, start_ns=1, end_ns=100)]
    for i in range(2):
        client = f"c{i:015d}"
        records.append(SpanRecord("t" * 32, client, "r" * 16, Kind.TOOL, start_ns=10 + i * 10, end_ns=15 + i * 10,
                                  tool_name="search", args_hash="0" * 16))
        records.append(SpanRecord("t" * 32, f"s{i:015d}", client, Kind.TOOL, start_ns=11 + i * 10,
                                  end_ns=14 + i * 10, tool_name="search", args_hash="0" * 16))
    engine = Engine()
    verdict = engine.evaluate_trace(records)
    flags = [f.flag for fs in verdict.findings.values() for f in fs]
    assert "LOOP_DETECTED" not in flags  # two calls, each seen from client and server: not four
    assert verdict.summaries["r" * 16].tool_calls == 2
    assert engine.stats["nested_tool_spans"] == 2
