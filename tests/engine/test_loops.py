"""LOOP_DETECTED (repeats and cycles) and NO_PROGRESS."""

from __future__ import annotations

from agentwatch.engine import Engine

from .conftest import RunBuilder, flags, make_config


def test_third_identical_call_with_no_new_result(run: RunBuilder) -> None:
    out = [run.feed(run.tool("search.read", {"q": "x"}, {"hits": []})) for _ in range(5)]
    assert [flags(o) for o in out] == [set(), set(), {"LOOP_DETECTED"}, {"LOOP_DETECTED"}, {"LOOP_DETECTED"}]
    loop = out[2][0]
    assert loop.related_span_id == "run1-0001"
    assert "search.read called 3 times with args" in loop.reason and "run1-0001" in loop.reason


def test_unknown_results_count_as_nothing_new(run: RunBuilder) -> None:
    out = [run.feed(run.tool("search.read", {"q": "x"})) for _ in range(3)]
    assert flags(out[2]) == {"LOOP_DETECTED"}


def test_polling_with_new_results_is_not_a_loop(run: RunBuilder) -> None:
    for pct in range(0, 101, 10):
        assert run.feed(run.tool("job.status", {"id": "job_1"}, {"progress": pct})) == []


def test_new_result_resets_the_count(run: RunBuilder) -> None:
    results = ["a", "a", "b", "b", "b"]
    out = [flags(run.feed(run.tool("job.status", {"id": 1}, r))) for r in results]
    assert out == [set(), set(), set(), set(), {"LOOP_DETECTED"}]


def test_old_result_coming_back_is_not_new(run: RunBuilder) -> None:
    out = [flags(run.feed(run.tool("job.status", {"id": 1}, r))) for r in ["a", "b", "a", "b"]]
    assert out[3] == {"LOOP_DETECTED"}


def test_pagination_is_not_a_loop(run: RunBuilder) -> None:
    for page in range(20):
        assert run.feed(run.tool("list", {"page": page}, {"items": [page]})) == []


def test_threshold_from_config() -> None:
    engine = Engine(make_config({"loop_detection": {"repeated_calls_threshold": 5}}))
    b = RunBuilder(engine)
    out = [flags(b.feed(b.tool("t", {"a": 1}, "same"))) for _ in range(5)]
    assert out == [set(), set(), set(), set(), {"LOOP_DETECTED"}]


def test_two_key_cycle_flagged_on_fourth_call(run: RunBuilder) -> None:
    seq = [("search.read", {"q": "refund"}, "hits"), ("kb.read", {"doc": 1}, "text")] * 3
    out = [run.feed(run.tool(t, a, r)) for t, a, r in seq]
    assert [flags(o) for o in out] == [
        set(),
        set(),
        set(),
        {"LOOP_DETECTED"},
        {"LOOP_DETECTED"},
        {"LOOP_DETECTED"},
    ]
    assert "cycle search.read(" in out[3][0].reason
    assert out[3][0].related_span_id == "run1-0002"


def test_three_key_cycle(run: RunBuilder) -> None:
    seq = [("a", {"x": 1}, 1), ("b", {"x": 2}, 2), ("c", {"x": 3}, 3)] * 2
    out = [flags(run.feed(run.tool(t, a, r))) for t, a, r in seq]
    assert out == [set()] * 5 + [{"LOOP_DETECTED"}]


def test_cycle_bringing_new_results_is_not_flagged(run: RunBuilder) -> None:
    seq = [("search.read", {"q": "refund"}), ("kb.read", {"doc": "latest"})] * 4
    for i, (tool, args) in enumerate(seq):
        assert run.feed(run.tool(tool, args, {"rev": i})) == []


def test_cycle_repeats_from_config() -> None:
    engine = Engine(make_config({"loop_detection": {"cycle_repeats": 3, "repeated_calls_threshold": 9}}))
    b = RunBuilder(engine)
    seq = [("a", {"x": 1}, 1), ("b", {"x": 2}, 2)] * 3
    out = [flags(b.feed(b.tool(t, a, r))) for t, a, r in seq]
    assert out == [set()] * 5 + [{"LOOP_DETECTED"}]


def test_calls_without_args_hash_are_not_loops(run: RunBuilder) -> None:
    for _ in range(4):
        assert "LOOP_DETECTED" not in flags(run.feed(run.tool("t", {"a": 1}, "r", args_hash=None)))


def test_no_progress_once_per_streak(run: RunBuilder) -> None:
    run.feed(run.tool("search", {"q": 0}, "nothing"))
    out = [flags(run.feed(run.tool("search", {"q": i}, "nothing"))) for i in range(1, 13)]
    assert [i for i, f in enumerate(out) if "NO_PROGRESS" in f] == [5]
    assert not any("LOOP_DETECTED" in f for f in out)  # new arguments every time
    # progress ends the streak; a new streak is flagged again
    run.feed(run.tool("search", {"q": 99}, "something new"))
    again = [flags(run.feed(run.tool("search", {"q": 100 + i}, error=True))) for i in range(6)]
    assert [i for i, f in enumerate(again) if "NO_PROGRESS" in f] == [5]
    assert run.feed(run.tool("x", {}, error=True)) == []  # the same streak is not flagged twice


def test_no_progress_related_is_streak_start(run: RunBuilder) -> None:
    run.feed(run.tool("a", {"q": 0}, "r0"))
    out = [run.feed(run.tool("a", {"q": i}, error=True)) for i in range(1, 7)]
    assert out[5][0].related_span_id == "run1-0002"


def test_writes_with_new_arguments_are_progress(run: RunBuilder) -> None:
    for i in range(10):
        assert run.feed(run.tool("email.send", {"to": f"u{i}@x"}, {"ok": True}, side_effect=True)) == []


def test_unknown_results_are_progress_unless_repeated(run: RunBuilder) -> None:
    for i in range(10):
        assert run.feed(run.tool("a", {"q": i})) == []


def test_no_progress_threshold_from_config() -> None:
    engine = Engine(make_config({"loop_detection": {"no_progress_threshold": 2}}))
    b = RunBuilder(engine)
    out = [flags(b.feed(b.tool("a", {"q": i}, error=True))) for i in range(2)]
    assert out == [set(), {"NO_PROGRESS"}]


def test_loop_state_is_per_run(engine: Engine) -> None:
    a, b = RunBuilder(engine, "ra"), RunBuilder(engine, "rb")
    a.feed(a.tool("t", {"q": 1}, "r"))
    a.feed(a.tool("t", {"q": 1}, "r"))
    assert b.feed(b.tool("t", {"q": 1}, "r")) == []
    assert flags(a.feed(a.tool("t", {"q": 1}, "r"))) == {"LOOP_DETECTED"}
