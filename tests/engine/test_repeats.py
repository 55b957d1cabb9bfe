"""LOOP_DETECTED from repeated requests when the tools leave no span (engine/repeats.py)."""

from __future__ import annotations

from agentwatch.engine import Engine

from .conftest import RunBuilder, flags, make_config

CALL = ("get_order", {"order_id": "ord_1"})


def test_third_identical_request_without_tool_spans(run: RunBuilder) -> None:
    out = [run.feed(run.llm(calls=[CALL], reads="ord_1")) for _ in range(4)]
    assert [flags(o) for o in out] == [set(), set(), {"LOOP_DETECTED"}, {"LOOP_DETECTED"}]
    finding = out[2][0]
    assert finding.related_span_id == "run1-0001"
    assert "requested get_order" in finding.reason and "3 times" in finding.reason


def test_requests_that_tool_spans_ran_are_left_to_the_tool_detector(run: RunBuilder) -> None:
    found = []
    for i in range(3):
        found.append(flags(run.feed(run.llm(calls=[CALL], reads="ord_1"))))
        found.append(flags(run.feed(run.tool("get_order", CALL[1], {"n": i}))))  # a new result each time
    assert found == [set()] * 6  # the tool answered something new each time: no loop, and no double count


def test_different_arguments_are_not_a_repeat(run: RunBuilder) -> None:
    for i in range(5):
        assert run.feed(run.llm(calls=[("get_order", {"order_id": f"ord_{i}"})], reads=f"ord_{i}")) == []


def test_one_span_requesting_the_same_call_twice_counts_once(run: RunBuilder) -> None:
    assert run.feed(run.llm(calls=[CALL, CALL], reads="ord_1")) == []
    assert run.feed(run.llm(calls=[CALL], reads="ord_1")) == []


def test_threshold_and_switch_come_from_the_loop_config() -> None:
    engine = Engine(make_config({"loop_detection": {"repeated_calls_threshold": 2}}))
    builder = RunBuilder(engine)
    out = [flags(builder.feed(builder.llm(calls=[CALL], reads="ord_1"))) for _ in range(2)]
    assert out == [set(), {"LOOP_DETECTED"}]
    engine = Engine(make_config({"anomaly": {"disabled": ["LOOP_DETECTED"]}}))
    builder = RunBuilder(engine)
    assert not any(builder.feed(builder.llm(calls=[CALL], reads="ord_1")) for _ in range(4))
