"""ENTITY_HALLUCINATION and ENTITY_MISMATCH: seed 003 and its look-alikes."""

from __future__ import annotations

from agentwatch.engine import Engine
from agentwatch.engine.grounding import MAX_PENDING

from .conftest import T0, RunBuilder, flags, make_config


def subject_run(engine: Engine, **entities: str) -> RunBuilder:
    engine.open_run("run1", entities=entities or {"customer": "cust_789"}, start_ns=T0)
    return RunBuilder(engine)


def test_seed_003_backward_trace(engine: Engine) -> None:
    b = subject_run(engine)
    b.feed(b.llm(calls=[("get_customer", {"id": "cust_789"})], reads="Where is my latest order?"))
    b.feed(
        b.tool(
            "get_customer",
            {"id": "cust_789"},
            {"customer_id": "cust_789"},
            arguments={"id": "cust_789"},
            result={"customer_id": "cust_789"},
        )
    )
    origin = b.llm(calls=[("get_order", {"id": "ord_555"})], reads={"customer_id": "cust_789"})
    llm = b.feed(origin)
    assert flags(llm) == {"ENTITY_HALLUCINATION"} and "ord_555" in llm[0].reason
    result = {"order_id": "ord_555", "customer_id": "cust_012"}
    tool = b.feed(b.tool("get_order", {"id": "ord_555"}, result, arguments={"id": "ord_555"}, result=result))
    assert flags(tool) == {"ENTITY_HALLUCINATION", "ENTITY_MISMATCH"}
    hallucination = next(f for f in tool if f.flag.value == "ENTITY_HALLUCINATION")
    assert hallucination.related_span_id == origin.span_id
    mismatch = next(f for f in tool if f.flag.value == "ENTITY_MISMATCH")
    assert "cust_012" in mismatch.reason and "cust_789" in mismatch.reason
    assert mismatch.severity.value == "critical"
    b.feed(b.llm(reads=result))
    summary = engine.close_run("run1", stop_reason="success", end_ns=b.clock)
    assert summary is not None
    assert summary.fault_origin_span_id == origin.span_id
    assert summary.flags == ("ENTITY_HALLUCINATION", "ENTITY_MISMATCH")
    assert summary.anomaly_count == 3
    assert summary.failure_mode.value == "bad_decision"


def test_ids_from_input_or_results_are_known(engine: Engine) -> None:
    b = subject_run(engine)
    assert b.feed(b.llm(calls=[("get_order", {"order_id": "ORD_8812"})], reads="my order ord_8812")) == []
    result = {"items": [{"order_id": "ord_1"}], "next": "see ord_2"}
    assert (
        b.feed(
            b.tool(
                "get_order",
                {"order_id": "ord_8812"},
                result,
                arguments={"order_id": "ord_8812"},
                result=result,
            )
        )
        == []
    )
    assert b.feed(b.tool("get_order", {"order_id": "ord_2"}, 1, arguments={"order_id": "ord_2"})) == []
    assert flags(b.feed(b.tool("get_order", {"order_id": "ord_3"}, 1, arguments={"order_id": "ord_3"}))) == {
        "ENTITY_HALLUCINATION"
    }


def test_adapter_supplied_entities_are_used(engine: Engine) -> None:
    b = subject_run(engine)
    b.feed(b.tool("list", {}, 1, result_entities=(("order", "ord_9"),)))
    assert b.feed(b.tool("get", {"o": 9}, 2, arg_entities=(("order", "ord_9"),))) == []
    found = b.feed(b.tool("get", {"o": 8}, 3, arg_entities=(("order", "ord_8"), ("order", "ord_7"))))
    assert "ord_8 (and 1 more)" in found[0].reason


def test_failed_results_do_not_ground_ids(engine: Engine) -> None:
    b = subject_run(engine)
    b.feed(b.tool("get", {"o": 1}, None, error=True, result="Error: ord_404 not found"))
    assert flags(b.feed(b.tool("get", {"o": 2}, 1, arg_entities=(("order", "ord_404"),)))) == {
        "ENTITY_HALLUCINATION"
    }


def test_silent_without_an_input_basis(engine: Engine) -> None:
    b = RunBuilder(engine, "foreign")
    b.feed(b.tool("search", {}, {"hits": ["doc_1"]}, result={"hits": ["doc_1"]}))
    assert b.feed(b.tool("get", {"id": "doc_777"}, 1, arguments={"id": "doc_777"})) == []
    assert b.feed(b.llm(calls=[("get", {"id": "doc_778"})])) == []  # input not captured: no basis
    # once an LLM input was scanned (even if it held no ids), the run is checked
    assert flags(b.feed(b.llm(calls=[("get", {"id": "doc_779"})], reads="no ids here"))) == {
        "ENTITY_HALLUCINATION"
    }


def test_mismatch_by_prefix_and_not_when_subject_present(engine: Engine) -> None:
    b = subject_run(engine)
    b.feed(b.llm(reads="inv_3301 and ord_777"))
    owner = {"invoice_id": "inv_3301", "owner": "cust_012"}
    assert flags(b.feed(b.tool("get_invoice", {}, owner, result=owner))) == {"ENTITY_MISMATCH"}
    shared = {"order_id": "ord_777", "owners": [{"customer_id": "cust_012"}, {"customer_id": "CUST_789"}]}
    assert b.feed(b.tool("get_order", {}, shared, result=shared)) == []
    unrelated = {"order_id": "ord_777", "carrier_id": "dhl_5501"}
    assert b.feed(b.tool("track", {}, unrelated, result=unrelated)) == []


def test_declared_type_spelling_is_normalised(engine: Engine) -> None:
    b = subject_run(engine, customer_id="cust_789")
    other = {"customerId": "cust_5"}
    assert flags(b.feed(b.tool("get", {}, other, result=other))) == {"ENTITY_MISMATCH"}


def test_lazy_extraction_is_bounded(engine: Engine) -> None:
    b = RunBuilder(engine, "r")
    b.feed(b.llm(reads="start"))
    for i in range(3 * MAX_PENDING):
        result = {"orders": [f"ord_{i}"]}
        b.feed(b.tool("list", {"p": i}, result, result=result))
    state = engine._core.runs.peek("r")
    assert state is not None and len(state.pending) <= MAX_PENDING + 1
    # the oldest values were extracted before they were let go: their ids stay known
    assert b.feed(b.tool("get", {"o": 1}, 1, arg_entities=(("order", "ord_0"),))) == []
    assert b.feed(b.tool("get", {"o": 2}, 1, arg_entities=(("order", f"ord_{3 * MAX_PENDING - 1}"),))) == []
    assert state.pending == []


def test_known_entities_are_bounded_and_evictions_counted() -> None:
    engine = Engine(make_config({"limits": {"max_entities_per_run": 100}}))
    engine.open_run("r", entities={"customer": "cust_1"})
    b = RunBuilder(engine, "r")
    for i in range(50):
        b.feed(b.tool("t", {"p": i}, i, result_entities=tuple(("order", f"ord_{i}_{k}") for k in range(10))))
    state = engine._core.runs.peek("r")
    assert state is not None and len(state.known) <= 100
    assert engine.stats["entities_evicted"] > 0


def test_run_input_entities_ground_ids(engine: Engine) -> None:
    engine.open_run("run1", input_entities=(("order", "ord_42"),), start_ns=T0)
    b = RunBuilder(engine)
    assert b.feed(b.llm(calls=[("get", {"order_id": "ord_42"})])) == []
    assert flags(b.feed(b.llm(calls=[("get", {"order_id": "ord_43"})]))) == {"ENTITY_HALLUCINATION"}


def test_codes_in_prose_ground_ids_but_are_not_accused(engine: Engine) -> None:
    b = subject_run(engine)
    b.feed(b.llm(reads="my booking is ZFA04Y"))
    for args in ({"reservation_id": "ZFA04Y"}, {"q": "RTX4090 benchmarks"}):
        assert b.feed(b.tool("get", args, 1, arguments=args)) == []
    bad = b.feed(b.tool("get", {"reservation_id": "QQ11ZZ"}, 3, arguments={"reservation_id": "QQ11ZZ"}))
    assert flags(bad) == {"ENTITY_HALLUCINATION"} and "reservation QQ11ZZ" in bad[0].reason
