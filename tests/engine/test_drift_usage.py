"""CONTEXT_DRIFT and TOKEN_SPIKE."""

from __future__ import annotations

from agentwatch.engine import Engine

from .conftest import RunBuilder, flags, make_config


def test_context_drift_without_user_turn(run: RunBuilder) -> None:
    first = run.llm(system_hash="s1", user_hash="u1")
    assert run.feed(first) == []
    assert run.feed(run.llm(system_hash="s1", user_hash="u1")) == []
    prev = run.llm(system_hash="s1", user_hash="u1")
    run.feed(prev)
    drift = run.feed(run.llm(system_hash="s2", user_hash="u1"))
    assert flags(drift) == {"CONTEXT_DRIFT"} and drift[0].related_span_id == prev.span_id
    assert run.feed(run.llm(system_hash="s3", user_hash="u2")) == []  # a new user turn
    assert run.feed(run.llm(system_hash=None, user_hash="u2")) == []
    assert run.feed(run.llm(system_hash="s4", user_hash="u2")) == []  # previous call had no system hash


def test_context_drift_needs_a_previous_call_in_the_same_run(engine: Engine) -> None:
    a, b = RunBuilder(engine, "a"), RunBuilder(engine, "b")
    a.feed(a.llm(system_hash="s1", user_hash=None))
    assert b.feed(b.llm(system_hash="s2", user_hash=None)) == []
    assert flags(a.feed(a.llm(system_hash="s2", user_hash=None))) == {"CONTEXT_DRIFT"}


def test_token_spike_after_history(run: RunBuilder) -> None:
    assert run.feed(run.llm(tokens=100)) == []
    assert run.feed(run.llm(tokens=10_000)) == []  # one earlier call is not enough history
    run.feed(run.llm(tokens=100))
    mean = (100 + 10_000 + 100) / 3
    spike = run.feed(run.llm(tokens=int(mean * 5) + 1))
    assert flags(spike) == {"TOKEN_SPIKE"} and "5.0x" in spike[0].reason
    assert run.feed(run.llm(tokens=None)) == []


def test_token_spike_settings_from_config() -> None:
    engine = Engine(make_config({"anomaly": {"token_spike_factor": 2, "token_spike_min_history": 1}}))
    b = RunBuilder(engine)
    b.feed(b.llm(tokens=100))
    assert flags(b.feed(b.llm(tokens=201))) == {"TOKEN_SPIKE"}


def test_steady_growth_is_not_a_spike(run: RunBuilder) -> None:
    for k in range(1, 30):
        assert run.feed(run.llm(tokens=500 * k)) == []
