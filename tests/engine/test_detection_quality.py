"""Issue 11: ids as users write them, progress that ignores noise, drift per agent, origin at the cause."""

from __future__ import annotations

import json

from agentwatch.engine import Engine, noise
from agentwatch.hashing import value_hash

from .conftest import T0, RunBuilder, flags

PAGE = " ".join(f"Paragraph {k} explains plan {k % 7} with limits of {k * 13} spans." for k in range(80))


def grounded(engine: Engine) -> RunBuilder:
    engine.open_run("run1", start_ns=T0)
    return RunBuilder(engine)


# ----------------------------------------------------------------------------- entities


def test_decorated_id_is_the_id_the_user_typed(engine: Engine) -> None:
    b = grounded(engine)
    args = {"order_id": "#W9300146"}
    assert b.feed(b.llm(calls=[("get_order_details", args)], reads="my order is W9300146")) == []
    assert b.feed(b.tool("get_order_details", args, "ok", arguments=args)) == []
    quoted = {"order_id": "'w9300146'."}
    assert b.feed(b.tool("get_order_details", quoted, "ok", arguments=quoted)) == []


def test_id_seen_only_as_a_value_under_a_non_id_key_is_known(engine: Engine) -> None:
    b = grounded(engine)
    b.feed(b.llm(reads="list the shirts"))
    listing = '{"T-Shirt": "9523456873", "Hoodie": "1111222233"}'
    b.feed(b.tool("list_products", {}, listing, result=listing))
    args = {"item_id": 9523456873}  # a number now, a string before
    assert b.feed(b.llm(calls=[("get_item", args)])) == []
    assert b.feed(b.tool("get_item", args, "ok", arguments=args)) == []


def test_values_learnt_from_a_result_with_extracted_entities_too(engine: Engine) -> None:
    """In process a result comes with its extracted entities *and* its raw value: both are learnt."""
    b = grounded(engine)
    b.feed(b.llm(reads="list the shirts"))
    result = {"T-Shirt": "9523456873", "product_id": "prod_1"}
    b.feed(b.tool("list_products", {}, "r", result=result, result_entities=(("product", "prod_1"),)))
    args = {"item_id": "9523456873"}
    assert b.feed(b.tool("get_item", args, "ok", arguments=args)) == []


def test_history_sent_to_the_first_call_is_known(engine: Engine) -> None:
    b = grounded(engine)
    history = ['{"order_id": "#W2378156", "items": {"Mug": "4545791457"}}', "return the mug please"]
    args = {"order_id": "W2378156", "item_ids": ["4545791457"]}
    assert b.feed(b.llm(calls=[("return_items", args)], reads=history[1], input_raw=history)) == []


def test_invented_id_is_still_flagged_with_raw_and_normalised_text(engine: Engine) -> None:
    b = grounded(engine)
    b.feed(b.llm(reads='{"T-Shirt": "9523456873"}', input_raw=['{"T-Shirt": "9523456873"}']))
    args = {"order_id": "#W8829104"}
    found = b.feed(b.tool("get_order", args, "x", arguments=args))
    assert flags(found) == {"ENTITY_HALLUCINATION"}
    assert "#W8829104" in found[0].reason and "normalised: w8829104" in found[0].reason


def test_declared_subject_matches_in_any_form(engine: Engine) -> None:
    engine.open_run("run1", entities={"customer": "#C-1001"}, start_ns=T0)
    b = RunBuilder(engine)
    args = {"customer_id": "c-1001"}
    assert b.feed(b.tool("get_customer", args, "ok", arguments=args)) == []


# ----------------------------------------------------------------------------- loops and progress


def test_near_identical_long_results_are_a_loop(run: RunBuilder) -> None:
    out = []
    for i in range(3):
        page = f"{PAGE} Fetched 2026-12-06T12:0{i}:00Z. {1200 + i * 37} visitors online."
        out.append(flags(run.feed(run.tool("web.fetch", {"url": "u"}, page, result=page))))
    assert out == [set(), set(), {"LOOP_DETECTED"}]


def test_different_long_results_are_progress(run: RunBuilder) -> None:
    for topic in ("pricing", "security", "changelog", "roadmap"):
        page = " ".join(f"{topic} part {k} covers {topic} item {k * 3}" for k in range(80))
        assert run.feed(run.tool("web.fetch", {"url": "u"}, page, result=page)) == []


def test_sketch_attribute_is_used_without_the_result(run: RunBuilder) -> None:
    """Out of process with capture off only the recorded sketch is there."""
    sketch = noise.sketch(PAGE)
    out = [flags(run.feed(run.tool("web.fetch", {"url": "u"}, f"v{i}", result_sketch=sketch))) for i in range(3)]
    assert out[-1] == {"LOOP_DETECTED"}


def test_absent_or_empty_results_are_not_new(run: RunBuilder) -> None:
    args = {"flight": "HAT136"}
    assert run.feed(run.tool("book", args, {"ok": 1})) == []
    assert run.feed(run.tool("book", args, "  ", result="  ")) == []
    assert flags(run.feed(run.tool("book", args, None))) == {"LOOP_DETECTED"}  # no result recorded
    other = {"flight": "HAT137"}
    for reply in ([], {}):
        run.feed(run.tool("search", other, reply))
    assert flags(run.feed(run.tool("search", other, ""))) == {"LOOP_DETECTED"}


def test_masked_timestamp_in_arguments_is_a_repeat(run: RunBuilder) -> None:
    out = []
    for i in range(3):
        args = {"q": "agentwatch pricing", "timestamp": f"2026-12-06T12:00:0{i}Z"}
        out.append(flags(run.feed(run.tool("web.search", args, "same", arguments=args))))
    assert out == [set(), set(), {"LOOP_DETECTED"}]


def test_recorded_masked_hashes_are_used(run: RunBuilder) -> None:
    out = [
        flags(run.feed(run.tool("t", {"n": i}, f"r{i}", args_key="masked", result_key=value_hash("same"))))
        for i in range(3)
    ]
    assert out[-1] == {"LOOP_DETECTED"}


# ----------------------------------------------------------------------------- drift per agent


def test_group_chat_agents_take_turns_without_drift(run: RunBuilder) -> None:
    experts = {"Data_Expert": "You analyse data.", "Verify_Expert": "You verify.", "Web_Expert": "You browse."}
    for _ in range(3):
        for name, prompt in experts.items():
            assert run.feed(run.llm(agent_name=name, system_hash=prompt, user_hash="task")) == []
    drift = run.feed(run.llm(agent_name="Verify_Expert", system_hash="You approve all.", user_hash="task"))
    assert flags(drift) == {"CONTEXT_DRIFT"} and "same agent" in drift[0].reason


def test_handoff_to_an_agent_with_other_tools_is_not_drift(run: RunBuilder) -> None:
    run.feed(run.llm(system_hash="triage", user_hash="u", offered_tools=("transfer_to_billing",)))
    assert run.feed(run.llm(system_hash="billing", user_hash="u", offered_tools=("refund",))) == []
    # the triage agent taking its turn again, with its own instructions: not drift either
    assert run.feed(run.llm(system_hash="triage", user_hash="u", offered_tools=("transfer_to_billing",))) == []


def test_unnamed_agent_with_the_same_tools_still_drifts(run: RunBuilder) -> None:
    run.feed(run.llm(system_hash="Be brief.", user_hash="u", offered_tools=("search",)))
    assert flags(run.feed(run.llm(system_hash="Refund everything.", user_hash="u", offered_tools=("search",)))) == {
        "CONTEXT_DRIFT"
    }


# ----------------------------------------------------------------------------- fault origin


def test_fault_origin_is_the_earliest_evidence(engine: Engine) -> None:
    engine.open_run("run1", start_ns=T0)
    b = RunBuilder(engine)
    b.feed(b.llm())
    first = b.tool("crm.update", {"n": 1}, error=True)
    b.feed(first)
    b.feed(b.tool("crm.update", {"n": 2}, error=True))
    b.feed(b.tool("crm.update", {"n": 3}, error=True))
    summary = engine.close_run("run1", stop_reason="tool_error", end_ns=b.clock)
    assert summary is not None and summary.fault_origin_span_id == first.span_id


def test_fault_origin_of_an_invented_id_is_the_llm_call_that_named_it(engine: Engine) -> None:
    engine.open_run("run1", start_ns=T0)
    b = RunBuilder(engine)
    b.feed(b.llm(reads="hello"))
    b.feed(b.tool("noop", {}, "x"))
    asking = b.llm(calls=[("get_order", {"order_id": "ord_555"})], requested_entities=())
    b.feed(asking)  # entities not recorded on the LLM span: only the tool span is flagged
    args = {"order_id": "ord_555"}
    found = b.feed(b.tool("get_order", args, "x", arguments=args))
    assert flags(found) == {"ENTITY_HALLUCINATION"} and found[0].related_span_id == asking.span_id
    summary = engine.close_run("run1", stop_reason="success", end_ns=b.clock)
    assert summary is not None and summary.fault_origin_span_id == asking.span_id


def test_a_status_changing_inside_a_long_record_is_new(run: RunBuilder) -> None:
    """Polling a structured record: similar text, but JSON is compared by fingerprint, not by sketch."""
    lines = [{"sku": f"sku_{k}", "qty": k, "note": "standard shipping"} for k in range(40)]
    for status in ("processing", "packed", "shipped"):
        record = json.dumps({"order": "ord_1", "lines": lines, "status": status})
        assert len(record) > noise.MIN_SKETCH_CHARS
        assert run.feed(run.tool("get_order", {"id": 1}, record, result=record)) == []
