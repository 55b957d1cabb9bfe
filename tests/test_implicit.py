"""Implicit runs (contract §8): calls outside any ``agentwatch.run`` grouped by conversation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry import baggage
from opentelemetry import context as otel_context

import agentwatch
from agentwatch import semconv as sc
from agentwatch.implicit import KEY_PREFIX, ImplicitRuns
from agentwatch.testing import LLMServer, reply
from tests.telemetry import Telemetry, make_telemetry

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
        },
    }
]


def _agent_loop(
    client: Any, turns: int, question: str = "where is my order ord_1?", answers: list[Any] | None = None
) -> list[Any]:
    """A bare agent loop: the conversation grows by the assistant's tool call and its result.

    The tool is a plain function (no span); turn i's result is ``answers[i]``, else "shipped".
    """
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    responses = []
    for turn in range(turns):
        response = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
        responses.append(response)
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        answer = answers[turn] if answers else {"status": "shipped"}
        for call in message.tool_calls or ():
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(answer)})
    return responses


def _looped(spans: list[Any]) -> list[bool]:
    return ["LOOP_DETECTED" in s.attributes.get(sc.ANOMALY_FLAGS, ()) for s in spans]


def _conversation(span: Any) -> str | None:
    return span.attributes.get(sc.GEN_AI_CONVERSATION_ID)


def test_loop_across_calls_is_one_implicit_run(telemetry: Telemetry, llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(*[reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in range(4)])
    _agent_loop(openai_client, 4)
    spans = telemetry.llm()
    assert len(spans) == 4
    conversations = {_conversation(s) for s in spans}
    assert len(conversations) == 1 and None not in conversations
    assert all(s.attributes[sc.RUN_IMPLICIT] is True for s in spans)
    assert [s.attributes[sc.STEP] for s in spans] == [1, 2, 3, 4]
    # The call that was sent the third identical result of get_order(ord_1) (the tool left no span).
    assert _looped(spans) == [False, False, False, True]
    # Only ids and fingerprints leave the process (content capture is off here).
    assert all(s.attributes[sc.LLM_TOOL_CALL_IDS] for s in spans)
    assert [len(s.attributes.get(sc.LLM_TOOL_RESULTS, ())) for s in spans] == [0, 1, 1, 1]
    assert not any("shipped" in str(v) for s in spans for v in s.attributes.values())


def test_polling_whose_answer_changes_is_not_a_loop(
    telemetry: Telemetry, llm_server: LLMServer, openai_client: Any
) -> None:
    llm_server.script(*[reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in range(5)])
    answers = [{"status": s, "checked_at": f"2026-12-06T10:0{i}:00Z"} for i, s in enumerate(
        ["packing", "packing", "shipped", "shipped", "shipped"])]
    _agent_loop(openai_client, 5, answers=answers)
    # packing, packing (a fresh timestamp is not news), shipped: new; then shipped twice more
    assert _looped(telemetry.llm()) == [False] * 5
    llm_server.script(*[reply.tool_call("get_order", {"order_id": "ord_2"}) for _ in range(4)])
    _agent_loop(openai_client, 4, question="where is ord_2?", answers=answers[2:] + answers[4:])
    assert _looped(telemetry.llm()[5:]) == [False, False, False, True]  # timestamps only: the same answer


def test_a_new_conversation_starts_a_new_run(telemetry: Telemetry, llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(*[reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in range(4)])
    _agent_loop(openai_client, 2)
    _agent_loop(openai_client, 2)  # the same first question again: a second, separate conversation
    spans = telemetry.llm()
    first, second = {_conversation(s) for s in spans[:2]}, {_conversation(s) for s in spans[2:]}
    assert len(first) == 1 and len(second) == 1 and first != second
    assert not any(sc.ANOMALY_FLAGS in s.attributes for s in spans)  # two requests each: no loop


def test_invented_id_is_flagged_in_an_implicit_run(
    telemetry: Telemetry, llm_server: LLMServer, openai_client: Any
) -> None:
    llm_server.script(
        reply.tool_call("get_order", {"order_id": "ord_1"}),
        reply.tool_call("get_order", {"order_id": "ord_999"}),  # read nowhere: invented
    )
    _agent_loop(openai_client, 2)
    first, second = telemetry.llm()
    assert _conversation(first) == _conversation(second)
    assert sc.ANOMALY_FLAGS not in first.attributes
    assert "ENTITY_HALLUCINATION" in second.attributes[sc.ANOMALY_FLAGS]


def test_tool_span_joins_the_run_that_requested_it(
    telemetry: Telemetry, llm_server: LLMServer, openai_client: Any
) -> None:
    @agentwatch.tool
    def get_order(order_id: str) -> dict[str, str]:
        return {"order_id": order_id, "status": "shipped"}

    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_1"}), reply.text("shipped"))
    messages: list[dict[str, Any]] = [{"role": "user", "content": "where is ord_1?"}]
    response = openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
    call = response.choices[0].message.tool_calls[0]
    get_order(**json.loads(call.function.arguments))
    (tool_span,) = telemetry.tools()
    (llm_span,) = telemetry.llm()
    assert _conversation(tool_span) == _conversation(llm_span) is not None
    assert tool_span.attributes[sc.GEN_AI_TOOL_CALL_ID] == call.id
    assert tool_span.attributes[sc.STEP] == 2
    assert tool_span.attributes[sc.RUN_IMPLICIT] is True


def test_user_conversation_id_from_baggage(telemetry: Telemetry, llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.text("a"), reply.text("b"))
    token = otel_context.attach(baggage.set_baggage(sc.GEN_AI_CONVERSATION_ID, "support-42"))
    try:
        for question in ("first", "unrelated second"):
            openai_client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": question}]
            )
    finally:
        otel_context.detach(token)
    spans = telemetry.llm()
    assert [_conversation(s) for s in spans] == ["support-42", "support-42"]
    assert [s.attributes[sc.STEP] for s in spans] == [1, 2]


def test_explicit_run_wins(telemetry: Telemetry, llm_server: LLMServer, openai_client: Any) -> None:
    llm_server.script(reply.text("a"))
    with agentwatch.run("support"):
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    (span,) = telemetry.llm()
    assert sc.RUN_IMPLICIT not in span.attributes
    assert sc.GEN_AI_CONVERSATION_ID not in span.attributes


def test_switched_off(monkeypatch: pytest.MonkeyPatch, llm_server: LLMServer, openai_client: Any) -> None:
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    tel = make_telemetry(config={"agent": {"anomaly": {"implicit_runs": False}}})
    try:
        llm_server.script(*[reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in range(4)])
        _agent_loop(openai_client, 4)
        spans = tel.llm()
        assert not any(sc.RUN_IMPLICIT in s.attributes or sc.ANOMALY_FLAGS in s.attributes for s in spans)
    finally:
        agentwatch.uninstrument()


def test_enforced_budget_from_config_stops_an_implicit_run(
    monkeypatch: pytest.MonkeyPatch, llm_server: LLMServer, openai_client: Any
) -> None:
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    tel = make_telemetry(config={"agent": {"budgets": {"max_steps": 2, "enforce": True}}})
    try:
        llm_server.script(*[reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in range(4)])
        with pytest.raises(agentwatch.BudgetExceeded):
            _agent_loop(openai_client, 4)
        assert len(tel.llm()) == 2  # the third call was refused before it was sent
        assert len(llm_server.requests) == 2
        # A new conversation has a budget of its own.
        _agent_loop(openai_client, 1, question="another question")
        assert len(tel.llm()) == 3
    finally:
        agentwatch.uninstrument()


# --------------------------------------------------------------------------- the table alone


def _chat(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "m", "messages": messages}


def test_continuation_by_prefix_and_by_tool_result() -> None:
    table = ImplicitRuns(max_runs=10, ttl_seconds=60)
    user = {"role": "user", "content": "hello"}
    first = table.for_request(_chat([user]))
    assistant = {"role": "assistant", "content": "hi, how can I help?"}
    second = table.for_request(_chat([user, assistant, {"role": "user", "content": "my order"}]))
    assert second is first
    assert first.key == KEY_PREFIX + first.conversation_id
    # A history that was trimmed (no common prefix) still continues through a tool call id.
    first.remember_requested("get_order", "abcd", "call_7")
    trimmed = table.for_request(_chat([{"role": "tool", "tool_call_id": "call_7", "content": "{}"}]))
    assert trimmed is first
    # The same first message again, with no assistant turn: a new conversation.
    assert table.for_request(_chat([user])) is not first
    # Responses API chaining.
    first.remember_response("resp_1")
    assert table.for_request({"input": "and now?", "previous_response_id": "resp_1"}) is first
    assert table.for_tool("get_order", "abcd", None) is first
    assert table.for_tool("get_order", "other", None) is None
    stats = table.stats
    assert stats["runs_started"] == 2 and stats["runs_continued"] == 3


def test_anthropic_tool_result_continues() -> None:
    table = ImplicitRuns(max_runs=10, ttl_seconds=60)
    run = table.for_request({"messages": [{"role": "user", "content": "weather?"}]})
    run.remember_requested("weather", "h", "toolu_1")
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}
        ]
    }
    assert table.for_request(body) is run


def test_eviction_is_counted() -> None:
    table = ImplicitRuns(max_runs=2, ttl_seconds=60)
    runs = [table.for_request(_chat([{"role": "user", "content": f"q{i}"}])) for i in range(3)]
    assert table.stats["runs_evicted"] == 1 and table.stats["runs_open"] == 2
    # The evicted (oldest) conversation is forgotten: its continuation starts a new run.
    history = [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a"}]
    assert table.for_request(_chat(history)) is not runs[0]
    # A continued one was not evicted.
    history = [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a"}]
    assert table.for_request(_chat(history)) is runs[2]


def test_ttl_expiry_is_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("agentwatch.implicit.time.monotonic", lambda: now[0])
    table = ImplicitRuns(max_runs=10, ttl_seconds=30)
    run = table.for_request(_chat([{"role": "user", "content": "q"}]))
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    now[0] += 20
    assert table.for_request(_chat(history)) is run  # within the TTL
    now[0] += 31
    assert table.for_request(_chat([*history, {"role": "assistant", "content": "b"}])) is not run
    assert table.stats["runs_expired"] == 1


def test_key_bound_is_counted() -> None:
    table = ImplicitRuns(max_runs=1, ttl_seconds=60)  # 16 lookup keys at most
    run = table.for_request(_chat([{"role": "user", "content": "q"}]))
    for i in range(40):
        run.remember_requested("t", f"h{i}", None)
    assert table.stats["keys_evicted"] == 41 - 16


def test_user_conversation_parameter() -> None:
    table = ImplicitRuns(max_runs=10, ttl_seconds=60)
    a = table.for_request({"input": "x", "conversation": "conv_abc"})
    b = table.for_request({"input": "y", "conversation": {"id": "conv_abc"}})
    assert a is b and a.conversation_id == "conv_abc"


def test_forgotten_conversations_free_their_engine_state() -> None:
    forgotten: list[str] = []
    table = ImplicitRuns(max_runs=1, ttl_seconds=60, on_forget=forgotten.append)
    first = table.for_request(_chat([{"role": "user", "content": "a"}]))
    table.for_request(_chat([{"role": "user", "content": "b"}]))
    assert forgotten == [first.key]


def test_implicit_runs_take_at_most_half_the_engine_run_table(
    monkeypatch: pytest.MonkeyPatch, llm_server: LLMServer, openai_client: Any
) -> None:
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    make_telemetry(config={"agent": {"limits": {"max_runs": 4}}})
    try:
        from agentwatch import _runtime

        llm_server.script(*[reply.text("ok") for _ in range(6)])
        for i in range(6):  # six one-shot calls: six conversations
            openai_client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"q{i}"}]
            )
        rt = _runtime.get()
        assert rt.implicit is not None and rt.implicit.stats["runs_evicted"] == 4
        # One-shot conversations never reach the engine: their first calls wait, deferred.
        assert rt.implicit.stats["first_calls_deferred"] == 6
        assert rt.engine.stats["runs_open"] == 0
        # Conversations that go on do; evicted ones are freed in the engine too.
        llm_server.script(*[reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in range(6)])
        for i in range(3):
            messages: list[dict[str, Any]] = [{"role": "user", "content": f"where is ord_1? ({i})"}]
            first = openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
            call = first.choices[0].message.tool_calls[0]
            messages += [first.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": "shipped"}]
            openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
        assert rt.implicit.stats["first_calls_replayed"] == 3
        assert rt.engine.stats["runs_open"] == 2
    finally:
        agentwatch.uninstrument()


def test_anthropic_tool_loop_is_one_implicit_run(
    telemetry: Telemetry, llm_server: LLMServer, anthropic_client: Any
) -> None:
    def loop(question: str, answers: list[Any], is_error: bool = False) -> list[Any]:
        llm_server.script(*[reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in answers])
        tools = [{"name": "get_order", "input_schema": {"type": "object"}}]
        messages: list[Any] = [{"role": "user", "content": question}]
        for answer in answers:
            response = anthropic_client.messages.create(
                model="claude-sonnet-4-5", max_tokens=64, messages=messages, tools=tools
            )
            messages.append({"role": "assistant", "content": response.content})
            results = [
                {"type": "tool_result", "tool_use_id": block.id, "content": answer, "is_error": is_error}
                for block in response.content
                if block.type == "tool_use"
            ]
            messages.append({"role": "user", "content": results})
        return telemetry.llm()[-len(answers):]

    spans = loop("where is ord_1?", ["shipped"] * 4)
    assert len({_conversation(s) for s in spans}) == 1
    assert _looped(spans) == [False, False, False, True]
    # content blocks, and an answer that changes: no loop
    changing = [[{"type": "text", "text": t}] for t in ("packing", "packing", "shipped", "delivered")]
    assert _looped(loop("and where is ord_1 now?", changing)) == [False] * 4
    # failed results are nothing new, whatever their text
    assert _looped(loop("ord_1 again?", ["error 1", "error 2", "error 3", "error 4"], True)) == [
        False, False, False, True]


# --------------------------------------------------------------------------- deferred first calls


def _flags(spans: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (s.attributes.get(sc.STEP), tuple(s.attributes.get(sc.ANOMALY_FLAGS, ())),
         s.attributes.get(sc.ANOMALY_SEVERITY))
        for s in spans
    ]


def test_invented_id_in_a_conversations_first_call_is_flagged_on_that_call(
    telemetry: Telemetry, llm_server: LLMServer, openai_client: Any
) -> None:
    from agentwatch import _runtime

    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_999"}), reply.text("done"))
    _agent_loop(openai_client, 2)  # the user asked about ord_1; the model looked up ord_999
    first, second = telemetry.llm()
    assert "ENTITY_HALLUCINATION" in first.attributes[sc.ANOMALY_FLAGS]
    assert sc.ANOMALY_FLAGS not in second.attributes
    assert [first.attributes[sc.STEP], second.attributes[sc.STEP]] == [1, 2]
    table = _runtime.get().implicit
    assert table is not None and table.stats["first_calls_deferred"] == 0  # a finding: judged at once


def test_unoffered_tool_in_a_conversations_first_call_is_flagged_on_that_call(
    telemetry: Telemetry, llm_server: LLMServer, openai_client: Any
) -> None:
    llm_server.script(reply.tool_call("refund_order", {"order_id": "ord_1"}))
    _agent_loop(openai_client, 1)
    (first,) = telemetry.llm()
    assert "UNKNOWN_TOOL" in first.attributes[sc.ANOMALY_FLAGS]


def test_a_deferred_first_call_is_replayed_when_the_conversation_goes_on(
    telemetry: Telemetry, llm_server: LLMServer, openai_client: Any
) -> None:
    from agentwatch import _runtime

    table = _runtime.get().implicit
    assert table is not None
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_1"}))
    _agent_loop(openai_client, 1, question="where is ord_1? I am cust_77")
    assert table.stats["first_calls_deferred"] == 1 and table.stats["first_calls_replayed"] == 0
    assert _runtime.get().engine.stats["runs_open"] == 0  # a one-shot call holds no engine state
    # The same conversation goes on: its first call reaches the engine before the second,
    # so cust_77 (read only in the first call's input) is known and steps continue.
    llm_server.script(reply.tool_call("get_order", {"order_id": "ord_1"}), reply.tool_call("get_customer",
                      {"customer_id": "cust_77"}))
    messages: list[dict[str, Any]] = [{"role": "user", "content": "where is ord_1? I am cust_77"}]
    tools = [*TOOLS, {"type": "function", "function": {"name": "get_customer", "parameters": {"type": "object"}}}]
    for _ in range(2):
        response = openai_client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=tools)
        message = response.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        messages += [{"role": "tool", "tool_call_id": c.id, "content": "{}"} for c in message.tool_calls or ()]
    spans = telemetry.llm()[1:]
    assert [s.attributes[sc.STEP] for s in spans] == [1, 2]
    assert not any(sc.ANOMALY_FLAGS in s.attributes for s in spans)
    assert table.stats["first_calls_replayed"] == 1 and _runtime.get().engine.stats["runs_open"] == 1


@pytest.mark.parametrize("defer", [True, False])
def test_deferring_first_calls_changes_no_flag(
    defer: bool, telemetry: Telemetry, llm_server: LLMServer, openai_client: Any
) -> None:
    """The same conversations with first calls deferred and judged at once give identical spans."""
    from agentwatch import _runtime
    from agentwatch.implicit import FIRST_CALL

    table = _runtime.get().implicit
    assert table is not None
    table._defer = FIRST_CALL if defer else None
    scripts = [
        [reply.tool_call("get_order", {"order_id": "ord_1"}) for _ in range(5)],  # a loop
        [reply.tool_call("get_order", {"order_id": "ord_1"}), reply.tool_call("get_order", {"order_id": "ord_9"})],
        [reply.text("hello")],
        [reply.tool_call("get_order", {"order_id": "ord_1"}), reply.text("shipped")],
    ]
    for script in scripts:
        llm_server.script(*script)
        _agent_loop(openai_client, len(script))
    flags = _flags(telemetry.llm())
    assert flags == [
        (1, (), None), (2, (), None), (3, (), None), (4, ("LOOP_DETECTED",), "high"), (5, ("LOOP_DETECTED",), "high"),
        (1, (), None), (2, ("ENTITY_HALLUCINATION",), "high"),
        (1, (), None),
        (1, (), None), (2, (), None),
    ], flags
    assert table.stats["first_calls_deferred"] == (4 if defer else 0)


def test_budget_limits_judge_first_calls_at_once(
    monkeypatch: pytest.MonkeyPatch, llm_server: LLMServer, openai_client: Any
) -> None:
    monkeypatch.delenv(sc.ENV_CAPTURE_CONTENT, raising=False)
    telemetry = make_telemetry(config={"agent": {"budgets": {"max_tokens": 10}}})
    try:
        from agentwatch import _runtime

        llm_server.script(reply.text("ok"))
        openai_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "q"}])
        (span,) = telemetry.llm()
        assert "TOKEN_BUDGET_EXCEEDED" in span.attributes.get(sc.ANOMALY_FLAGS, ())
        table = _runtime.get().implicit
        assert table is not None and table.stats["first_calls_deferred"] == 0
    finally:
        agentwatch.uninstrument()
