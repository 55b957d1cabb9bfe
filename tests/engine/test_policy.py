"""TOOL_DENIED and UNKNOWN_TOOL."""

from __future__ import annotations

from agentwatch.engine import Engine, Kind, SpanRecord

from .conftest import RunBuilder, flags, make_config


def test_deny_wins_and_allow_list_denies_the_rest() -> None:
    engine = Engine(make_config({"tools": {"allow": ["search.*", "payment.*"], "deny": ["payment.*"]}}))
    b = RunBuilder(engine)
    assert b.feed(b.tool("search.read", {}, 1)) == []
    denied = b.feed(b.tool("payment.refund", {}, 1))
    assert flags(denied) == {"TOOL_DENIED"}
    assert "deny pattern 'payment.*'" in denied[0].reason
    assert flags(b.feed(b.tool("email.send", {}, 1))) == {"TOOL_DENIED"}
    assert "not in the allow list" in b.feed(b.tool("email.send", {"x": 1}, 2))[0].reason


def test_no_policy_denies_nothing(run: RunBuilder) -> None:
    assert run.feed(run.tool("db.write", {}, 1)) == []


def test_denied_even_outside_a_run() -> None:
    engine = Engine(make_config({"tools": {"deny": ["db.write"]}}))
    rec = SpanRecord("t", "s", None, Kind.TOOL, tool_name="db.write")
    assert flags(engine.process(rec)) == {"TOOL_DENIED"}


def test_unknown_tool_on_llm_then_tool_span(run: RunBuilder) -> None:
    offered = ("search.read", "kb.read")
    assert run.feed(run.llm(calls=[("search.read", {"q": 1})], offered_tools=offered)) == []
    llm = run.llm(calls=[("db.query", {"sql": "x"}), ("search.read", {"q": 2})], offered_tools=offered)
    found = run.feed(llm)
    assert flags(found) == {"UNKNOWN_TOOL"} and "'db.query'" in found[0].reason
    tool = run.feed(run.tool("db.query", {"sql": "x"}, 1))
    assert flags(tool) == {"UNKNOWN_TOOL"} and tool[0].related_span_id == llm.span_id
    assert run.feed(run.tool("search.read", {"q": 2}, 2)) == []


def test_unknown_offer_list_means_no_check(run: RunBuilder) -> None:
    assert run.feed(run.llm(calls=[("anything", {})], offered_tools=None)) == []
    assert run.feed(run.tool("anything", {}, 1)) == []


def test_unknown_tool_outside_a_run() -> None:
    engine = Engine(make_config())
    rec = SpanRecord("t", "s", None, Kind.LLM, requested_calls=(("x", "h"),), offered_tools=())
    assert flags(engine.process(rec)) == {"UNKNOWN_TOOL"}
