"""LOOP_DETECTED from repeated requests when the tools leave no span (engine/repeats.py).

Each LLM call requests one call (with a fresh call id) and carries the result of
the previous call's request in its input, as a zero-code agent loop does.
"""

from __future__ import annotations

from typing import Any

from agentwatch.engine import Engine
from agentwatch.engine.repeats import decode, encode, fingerprint

from .conftest import RunBuilder, flags, make_config

CALL = ("get_order", {"order_id": "ord_1"})
POLL = ("check_status", {"job": 1})
POLL2 = ("check_status", {"job": 2})
_NO = object()


def _loop(run: RunBuilder, call: tuple[str, Any], results: list[Any], *, failed: bool = False) -> list[set[str]]:
    """One LLM call per result plus a first one: call i requests ``call`` and carries result i-1."""
    out = []
    for i in range(len(results) + 1):
        extra: dict[str, Any] = {"requested_ids": (f"c{i}",)}
        if i:
            result = results[i - 1]
            extra["tool_results"] = () if result is _NO else (fingerprint(f"c{i - 1}", result, failed),)
        out.append(flags(run.feed(run.llm(calls=[call] if i < len(results) else [], reads="ord_1", **extra))))
    return out


def test_polling_whose_answer_changes_is_not_a_loop(run: RunBuilder) -> None:
    assert _loop(run, POLL, ["running", "running", "done"]) == [set()] * 4
    # and a longer wait: every change starts the count again
    assert _loop(run, POLL2, ["queued", "running", "running", "done", "done"]) == [set()] * 6


def test_third_identical_result_is_flagged_on_the_call_that_was_sent_it(run: RunBuilder) -> None:
    found = []
    for i in range(5):
        results = (fingerprint(f"c{i - 1}", '{"status": "shipped"}'),) if i else None
        found.append(run.feed(run.llm(calls=[CALL], reads="ord_1", requested_ids=(f"c{i}",), tool_results=results)))
    assert [flags(o) for o in found] == [set(), set(), set(), {"LOOP_DETECTED"}, {"LOOP_DETECTED"}]
    finding = found[3][0]
    assert finding.span_id == "run1-0004" and finding.related_span_id == "run1-0001"
    assert "requested get_order" in finding.reason and "3 times" in finding.reason


def test_empty_absent_and_failed_results_are_nothing_new(engine: Engine) -> None:
    for results, failed in (
        (["", "   ", "[]"], False),  # text is all a tool message holds: "[]" is an empty list
        ([None, {}, None], False),
        (["boom", "other boom", "third"], True),  # failed results: nothing new whatever they say
    ):
        engine.open_run(f"run-{failed}-{results[0]}", start_ns=0)
        builder = RunBuilder(engine, run_key=f"run-{failed}-{results[0]}")
        assert _loop(builder, CALL, results, failed=failed) == [set(), set(), set(), {"LOOP_DETECTED"}]


def test_results_that_differ_only_in_volatile_parts_are_the_same(run: RunBuilder) -> None:
    results = [
        f'{{"status": "running", "request_id": "req-{i}", "checked_at": "2026-12-06T10:0{i}:00Z"}}' for i in range(3)
    ]
    assert _loop(run, POLL, results) == [set(), set(), set(), {"LOOP_DETECTED"}]


def test_near_identical_long_texts_are_the_same_and_different_ones_are_not(engine: Engine) -> None:
    page = " ".join(f"paragraph {i} of the shipping policy says parcels travel by road" for i in range(40))
    engine.open_run("same", start_ns=0)
    texts = [f"Fetched at 10:0{i}:0{i}. Session {i}{i}{i}. " + page for i in range(3)]
    assert _loop(RunBuilder(engine, run_key="same"), ("fetch", {"url": "u"}), texts)[-1] == {"LOOP_DETECTED"}
    engine.open_run("different", start_ns=0)
    texts = [" ".join(f"page {p} line {i} {word}" for i in range(60)) for p, word in enumerate(("a", "b", "c"))]
    assert _loop(RunBuilder(engine, run_key="different"), ("fetch", {"url": "u"}), texts) == [set()] * 4


def test_unseen_results_count_neither_way(run: RunBuilder) -> None:
    # no result in the next call's input (capture of it unavailable, another conversation): no count
    assert _loop(run, CALL, [_NO] * 5) == [set()] * 6
    # no call ids: results cannot be matched to requests
    for _ in range(5):
        assert run.feed(run.llm(calls=[CALL], reads="ord_1", tool_results=(fingerprint("x", "same"),))) == []


def test_a_result_for_an_unknown_call_id_is_ignored(run: RunBuilder) -> None:
    for i in range(5):
        record = run.llm(calls=[CALL], reads="ord_1", requested_ids=(f"c{i}",),
                         tool_results=(fingerprint("someone-else", "same"),))
        assert run.feed(record) == []


def test_requests_that_tool_spans_ran_are_left_to_the_tool_detector(run: RunBuilder) -> None:
    found = []
    for i in range(3):
        results = (fingerprint(f"c{i - 1}", {"n": i - 1}),) if i else None
        found.append(flags(run.feed(run.llm(calls=[CALL], reads="ord_1", requested_ids=(f"c{i}",),
                                            tool_results=results))))
        found.append(flags(run.feed(run.tool("get_order", CALL[1], {"n": i}))))  # a new result each time
    assert found == [set()] * 6  # the tool answered something new each time: no loop, and no double count


def test_different_arguments_are_not_a_repeat(run: RunBuilder) -> None:
    for i in range(5):
        results = (fingerprint(f"c{i - 1}", "same"),) if i else None
        record = run.llm(calls=[("get_order", {"order_id": f"ord_{i}"})], reads=f"ord_{i}",
                         requested_ids=(f"c{i}",), tool_results=results)
        assert run.feed(record) == []


def test_one_span_requesting_the_same_call_twice_counts_once(run: RunBuilder) -> None:
    same = "same"
    assert run.feed(run.llm(calls=[CALL, CALL], reads="ord_1", requested_ids=("a", "b"))) == []
    both = (fingerprint("a", same), fingerprint("b", same))
    assert run.feed(run.llm(calls=[CALL], reads="ord_1", requested_ids=("c",), tool_results=both)) == []
    assert run.feed(run.llm(reads="ord_1", tool_results=(fingerprint("c", same),))) == []  # two results in a row


def test_threshold_and_switch_come_from_the_loop_config() -> None:
    engine = Engine(make_config({"loop_detection": {"repeated_calls_threshold": 2}}))
    engine.open_run("run1", start_ns=0)
    assert _loop(RunBuilder(engine), CALL, ["same", "same"]) == [set(), set(), {"LOOP_DETECTED"}]
    engine = Engine(make_config({"anomaly": {"disabled": ["LOOP_DETECTED"]}}))
    engine.open_run("run1", start_ns=0)
    assert _loop(RunBuilder(engine), CALL, ["same"] * 4) == [set()] * 5


def test_waiting_requests_are_bounded_per_run() -> None:
    engine = Engine(make_config({"limits": {"max_calls_per_run": 8}}))
    engine.open_run("run1", start_ns=0)
    builder = RunBuilder(engine)
    for i in range(100):  # requests whose results never come back
        builder.feed(builder.llm(calls=[("get_order", {"order_id": f"ord_{i}"})], requested_ids=(f"c{i}",)))
    run = engine._core.runs.peek("run1")
    assert run is not None and run.request_pending is not None and len(run.request_pending) <= 8
    assert engine.stats["calls_evicted"] > 0


def test_results_attribute_round_trip() -> None:
    results = (fingerprint("call_1", "x " * 600), fingerprint("toolu 2", None), fingerprint("c3", "e", failed=True))
    assert decode(encode(results)) == results
    assert decode(["garbage", 7, "a b"]) == ()
    assert decode(None) is None
