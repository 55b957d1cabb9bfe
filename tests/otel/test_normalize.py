"""The normaliser reads every convention's names into one SpanRecord, and never raises."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Status, StatusCode

from agentwatch import semconv as sc
from agentwatch.budget import Budget
from agentwatch.engine import repeats
from agentwatch.engine.record import Kind, SpanRecord
from agentwatch.hashing import args_hash, digest, value_hash
from agentwatch.otel.normalize import (
    MAX_PARSE_CHARS,
    detect_kind,
    record_from_attributes,
    record_from_span,
    span_attributes,
)
from tests.otel.helpers import memory_provider

ORDER_ARGS = {"order_id": "ord_555", "include": ["items", "shipping"]}


def _span(name: str, attributes: Mapping[str, Any], *, error: bool = False) -> ReadableSpan:
    provider, exporter = memory_provider()
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(name, attributes=dict(attributes)) as span:
        if error:
            span.set_status(Status(StatusCode.ERROR, "boom"))
    (out,) = exporter.get_finished_spans()
    return out


def _record(attributes: Mapping[str, Any], name: str = "span", **kwargs: Any) -> SpanRecord:
    args: dict[str, Any] = {
        "trace_id": "0" * 31 + "1",
        "span_id": "0" * 15 + "2",
        "parent_id": None,
        "name": name,
        "start_ns": 10,
        "end_ns": 20,
        "is_error": False,
    }
    args.update(kwargs)
    return record_from_attributes(attributes, **args)


# --------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    ("attributes", "kind"),
    [
        ({sc.GEN_AI_OPERATION_NAME: "invoke_agent"}, Kind.RUN),
        ({sc.GEN_AI_OPERATION_NAME: "invoke_workflow"}, Kind.RUN),
        ({sc.GEN_AI_OPERATION_NAME: "execute_tool"}, Kind.TOOL),
        ({sc.GEN_AI_OPERATION_NAME: "chat"}, Kind.LLM),
        ({sc.GEN_AI_OPERATION_NAME: "text_completion"}, Kind.LLM),
        ({sc.GEN_AI_OPERATION_NAME: "generate_content"}, Kind.LLM),
        ({sc.GEN_AI_OPERATION_NAME: "embeddings"}, Kind.LLM),
        ({sc.GEN_AI_OPERATION_NAME: "create_agent"}, Kind.OTHER),
        ({sc.PHASE: "plan"}, Kind.PHASE),
        ({sc.OPENINFERENCE_SPAN_KIND: "AGENT"}, Kind.RUN),
        ({sc.OPENINFERENCE_SPAN_KIND: "TOOL"}, Kind.TOOL),
        ({sc.OPENINFERENCE_SPAN_KIND: "LLM"}, Kind.LLM),
        ({sc.OPENINFERENCE_SPAN_KIND: "EMBEDDING"}, Kind.LLM),
        ({sc.OPENINFERENCE_SPAN_KIND: "CHAIN"}, Kind.OTHER),
        ({sc.OPENINFERENCE_SPAN_KIND: "RETRIEVER"}, Kind.OTHER),
        ({sc.TRACELOOP_SPAN_KIND: "workflow"}, Kind.RUN),
        ({sc.TRACELOOP_SPAN_KIND: "agent"}, Kind.RUN),
        ({sc.TRACELOOP_SPAN_KIND: "tool"}, Kind.TOOL),
        ({sc.TRACELOOP_SPAN_KIND: "task"}, Kind.OTHER),
        ({sc.LLM_REQUEST_TYPE: "chat", sc.GEN_AI_SYSTEM: "openai"}, Kind.LLM),
        ({sc.LLM_REQUEST_TYPE: "completion"}, Kind.LLM),
        ({"http.request.method": "GET"}, None),
        ({}, None),
    ],
)
def test_detect_kind(attributes: dict[str, Any], kind: Kind | None) -> None:
    assert detect_kind(attributes) is kind


def test_span_name_is_the_last_resort_for_the_kind() -> None:
    assert record_from_span(_span("execute_tool get_order", {sc.TOOL_ARGS_HASH: "a" * 16})).kind is Kind.TOOL
    assert record_from_span(_span("invoke_agent support", {})).kind is Kind.RUN
    assert record_from_span(_span("chat_history lookup", {})).kind is Kind.OTHER
    named_otherwise = _span("execute_tool x", {sc.OPENINFERENCE_SPAN_KIND: "CHAIN"})
    assert record_from_span(named_otherwise).kind is Kind.OTHER  # attributes win


def test_kind_hint_is_used_only_when_no_convention_names_the_kind() -> None:
    assert _record({}, span_kind_hint="tool").kind is Kind.TOOL
    assert _record({}, span_kind_hint="SPAN_KIND_CLIENT").kind is Kind.OTHER
    assert _record({sc.GEN_AI_OPERATION_NAME: "chat"}, span_kind_hint="tool").kind is Kind.LLM


# --------------------------------------------------------------------------- agentwatch's own spans


def test_own_tool_span_reads_every_agentwatch_attribute() -> None:
    schema = {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}
    span = _span(
        "execute_tool get_order",
        {
            sc.GEN_AI_OPERATION_NAME: "execute_tool",
            sc.GEN_AI_TOOL_NAME: "get_order",
            sc.GEN_AI_TOOL_CALL_ID: "call_1",
            sc.TOOL_ARGS_HASH: "aaaabbbbccccdddd",
            sc.TOOL_RESULT_HASH: "1111222233334444",
            sc.TOOL_SIDE_EFFECT: True,
            sc.TOOL_IDEMPOTENCY_KEY: True,
            sc.TOOL_ERROR_CLASS: "timeout",
            sc.ERROR_TYPE: "TimeoutError",
            sc.TOOL_ARG_ENTITIES: ("order:ord_555",),
            sc.TOOL_RESULT_ENTITIES: ("order:ord_555", "customer:cust_012"),
            sc.TOOL_SCHEMA: json.dumps(schema),
            sc.STEP: 4,
            sc.RUN_ID: "run-1",
            sc.ANOMALY_FLAGS: ("LOOP_DETECTED",),
            sc.GEN_AI_AGENT_NAME: "support",
        },
        error=True,
    )
    record = record_from_span(span)
    ctx = span.get_span_context()
    assert ctx is not None
    assert record.trace_id == format(ctx.trace_id, "032x")
    assert record.span_id == format(ctx.span_id, "016x")
    assert record.parent_id is None
    assert record.kind is Kind.TOOL
    assert record.name == "execute_tool get_order"
    assert record.start_ns == span.start_time and record.end_ns == span.end_time
    assert record.is_error and record.error_type == "TimeoutError"
    assert record.tool_name == "get_order"
    assert record.tool_call_id == "call_1"
    assert record.args_hash == "aaaabbbbccccdddd"
    assert record.result_hash == "1111222233334444"
    assert record.side_effect and record.idempotency_key
    assert record.error_class == "timeout"
    assert record.arg_entities == (("order", "ord_555"),)
    assert record.result_entities == (("order", "ord_555"), ("customer", "cust_012"))
    assert record.tool_schema == schema
    assert record.flags_present == ("LOOP_DETECTED",)
    assert record.agent_name == "support"
    assert record.arguments is None  # no content captured, none invented


def test_own_llm_span() -> None:
    record = record_from_span(
        _span(
            "chat gpt-4o",
            {
                sc.GEN_AI_OPERATION_NAME: "chat",
                sc.GEN_AI_PROVIDER_NAME: "openai",
                sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
                sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-2024-08-06",
                sc.GEN_AI_USAGE_INPUT_TOKENS: 1200,
                sc.GEN_AI_USAGE_OUTPUT_TOKENS: 80,
                sc.COST_USD: 0.0042,
                sc.LLM_TOOL_CALLS: ("get_order:aaaabbbbccccdddd", "refund:ffff000011112222"),
                sc.LLM_TOOLS_OFFERED: ("get_order", "refund"),
                sc.LLM_SYSTEM_HASH: "5555666677778888",
                sc.LLM_USER_HASH: "9999aaaabbbbcccc",
                sc.LLM_INPUT_ENTITIES: ("customer:cust_789",),
                sc.LLM_REQUESTED_ENTITIES: ("order:ord_555",),
            },
        )
    )
    assert record.kind is Kind.LLM
    assert record.model == "gpt-4o-2024-08-06"
    assert (record.input_tokens, record.output_tokens) == (1200, 80)
    assert record.cost_usd == pytest.approx(0.0042)
    assert record.requested_calls == (("get_order", "aaaabbbbccccdddd"), ("refund", "ffff000011112222"))
    assert record.offered_tools == ("get_order", "refund")
    assert record.system_hash == "5555666677778888"
    assert record.user_hash == "9999aaaabbbbcccc"
    assert record.input_entities == (("customer", "cust_789"),)
    assert record.requested_entities == (("order", "ord_555"),)


def test_run_span_entities_budget_stop_reason_and_agent() -> None:
    budget = Budget(max_steps=5, max_usd=0.5, enforce=True)
    record = record_from_span(
        _span(
            "invoke_agent support",
            {
                sc.GEN_AI_OPERATION_NAME: "invoke_agent",
                sc.GEN_AI_AGENT_NAME: "support",
                sc.RUN_ID: "run-1",
                sc.RUN_ENTITY_PREFIX + "customer": "cust_789",
                sc.RUN_ENTITY_PREFIX + "order": "ord_555",
                sc.RUN_STOP_REASON: "loop_detected",
                **budget.to_attributes(),
            },
        )
    )
    assert record.kind is Kind.RUN
    assert record.agent_name == "support"
    assert record.entities == {"customer": "cust_789", "order": "ord_555"}
    assert record.budget == budget
    assert record.stop_reason == "loop_detected"


def test_run_agent_name_falls_back_to_foreign_names_and_span_name() -> None:
    assert _record({sc.OPENINFERENCE_SPAN_KIND: "AGENT", "agent.name": "planner"}).agent_name == "planner"
    tl = _record({sc.TRACELOOP_SPAN_KIND: "workflow", sc.TRACELOOP_ENTITY_NAME: "triage"}, name="triage.workflow")
    assert tl.agent_name == "triage"
    assert _record({sc.GEN_AI_OPERATION_NAME: "invoke_agent"}, name="invoke_agent billing").agent_name == "billing"
    assert _record({sc.GEN_AI_OPERATION_NAME: "chat"}).agent_name is None


# ---------------------------------------------------------------- official GenAI, old and new names


def test_genai_old_names_are_read_like_the_new_ones() -> None:
    old = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_SYSTEM: "openai",
            sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            sc.GEN_AI_USAGE_PROMPT_TOKENS: 30,
            sc.GEN_AI_USAGE_COMPLETION_TOKENS: 7,
        }
    )
    new = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_PROVIDER_NAME: "openai",
            sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
            sc.GEN_AI_USAGE_INPUT_TOKENS: 30,
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: 7,
        }
    )
    for record in (old, new):
        assert (record.model, record.input_tokens, record.output_tokens) == ("gpt-4o-mini", 30, 7)
    assert old.offered_tools is None and old.requested_calls == ()


def test_genai_tool_content_hashes_like_agentwatch() -> None:
    record = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "execute_tool",
            sc.GEN_AI_TOOL_NAME: "get_order",
            # another key order and spacing than ours: the canonical hash must not care
            sc.GEN_AI_TOOL_CALL_ARGUMENTS: '{"include": ["items", "shipping"],  "order_id": "ord_555"}',
            sc.GEN_AI_TOOL_CALL_RESULT: '{"order_id": "ord_555", "customer_id": "cust_012"}',
        }
    )
    assert record.args_hash == args_hash(ORDER_ARGS)
    assert record.arguments == ORDER_ARGS
    assert record.result == {"order_id": "ord_555", "customer_id": "cust_012"}
    assert record.result_hash == value_hash({"customer_id": "cust_012", "order_id": "ord_555"})


def test_genai_llm_content_gives_requested_calls_offered_tools_and_prompt_fingerprints() -> None:
    record = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_INPUT_MESSAGES: json.dumps(
                [
                    {"role": "system", "parts": [{"type": "text", "content": "You are support."}]},
                    {"role": "user", "parts": [{"type": "text", "content": "Where is my order?"}]},
                ]
            ),
            sc.GEN_AI_OUTPUT_MESSAGES: json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "tool_call", "id": "c1", "name": "get_order", "arguments": ORDER_ARGS}],
                    }
                ]
            ),
            sc.GEN_AI_TOOL_DEFINITIONS: json.dumps(
                [
                    {"type": "function", "name": "get_order"},
                    {"type": "function", "function": {"name": "refund"}},
                ]
            ),
        }
    )
    assert record.requested_calls == (("get_order", args_hash(ORDER_ARGS)),)
    assert record.offered_tools == ("get_order", "refund")
    assert record.system_hash == digest("You are support.")
    assert record.user_hash == digest("Where is my order?")


def test_system_instructions_attribute_wins_for_the_system_fingerprint() -> None:
    record = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_SYSTEM_INSTRUCTIONS: json.dumps([{"type": "text", "content": "Be brief."}]),
            sc.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
        }
    )
    assert record.system_hash == digest("Be brief.")
    assert record.user_hash == digest("hi")


# --------------------------------------------------------------------------- OpenInference


def test_openinference_llm_span() -> None:
    record = _record(
        {
            sc.OPENINFERENCE_SPAN_KIND: "LLM",
            sc.OI_LLM_MODEL_NAME: "gpt-4o-mini",
            sc.OI_TOKEN_PROMPT: 12,
            sc.OI_TOKEN_COMPLETION: 5,
            "llm.cost.total": 0.001,
            "llm.input_messages.0.message.role": "system",
            "llm.input_messages.0.message.content": "You are support.",
            "llm.input_messages.1.message.role": "user",
            "llm.input_messages.1.message.content": "first question",
            "llm.input_messages.2.message.role": "assistant",
            "llm.input_messages.2.message.content": "answer",
            "llm.input_messages.3.message.role": "user",
            "llm.input_messages.3.message.content": "Where is ord_555?",
            "llm.tools.0.tool.json_schema": json.dumps({"type": "function", "function": {"name": "get_order"}}),
            "llm.tools.1.tool.json_schema": json.dumps({"type": "function", "function": {"name": "refund"}}),
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_order",
            "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": json.dumps(ORDER_ARGS),
            "llm.output_messages.0.message.tool_calls.1.tool_call.function.name": "refund",
            "llm.output_messages.0.message.tool_calls.1.tool_call.function.arguments": "{}",
        }
    )
    assert record.kind is Kind.LLM
    assert (record.model, record.input_tokens, record.output_tokens) == ("gpt-4o-mini", 12, 5)
    assert record.cost_usd == pytest.approx(0.001)
    assert record.offered_tools == ("get_order", "refund")
    assert record.requested_calls == (("get_order", args_hash(ORDER_ARGS)), ("refund", args_hash({})))
    assert record.system_hash == digest("You are support.")
    assert record.user_hash == digest("Where is ord_555?")


def test_openinference_tool_span_reads_schema_arguments_and_result() -> None:
    schema = {"type": "object", "title": "get_order", "properties": {"order_id": {"type": "string"}}}
    record = _record(
        {
            sc.OPENINFERENCE_SPAN_KIND: "TOOL",
            sc.OI_TOOL_NAME: "get_order",
            sc.OI_TOOL_PARAMETERS: json.dumps(schema),
            sc.OI_INPUT_VALUE: json.dumps(ORDER_ARGS),
            "input.mime_type": "application/json",
            sc.OI_OUTPUT_VALUE: "Order ord_555 shipped to cust_012",
            "output.mime_type": "text/plain",
        }
    )
    assert record.tool_name == "get_order"
    assert record.tool_schema == schema
    assert record.args_hash == args_hash(ORDER_ARGS)
    assert record.arguments == ORDER_ARGS
    assert record.result == "Order ord_555 shipped to cust_012"
    assert record.result_hash == value_hash("Order ord_555 shipped to cust_012")


# --------------------------------------------------------------------------- OpenLLMetry


def test_openllmetry_tool_span_unwraps_args_and_kwargs() -> None:
    record = _record(
        {
            sc.TRACELOOP_SPAN_KIND: "tool",
            sc.TRACELOOP_ENTITY_NAME: "get_order",
            sc.TRACELOOP_ENTITY_INPUT: json.dumps({"args": [], "kwargs": ORDER_ARGS}),
            sc.TRACELOOP_ENTITY_OUTPUT: json.dumps({"status": "shipped"}),
        },
        name="get_order.tool",
    )
    assert record.kind is Kind.TOOL
    assert record.tool_name == "get_order"
    assert record.args_hash == args_hash(ORDER_ARGS)
    assert record.result == {"status": "shipped"}


def test_openllmetry_legacy_llm_attributes() -> None:
    record = _record(
        {
            sc.LLM_REQUEST_TYPE: "chat",
            sc.GEN_AI_SYSTEM: "OpenAI",
            sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
            sc.GEN_AI_USAGE_PROMPT_TOKENS: 100,
            sc.GEN_AI_USAGE_COMPLETION_TOKENS: 10,
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "You are support.",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "hello",
            "llm.request.functions.0.name": "get_order",
            "gen_ai.completion.0.tool_calls.0.name": "get_order",
            "gen_ai.completion.0.tool_calls.0.arguments": json.dumps(ORDER_ARGS),
        }
    )
    assert record.kind is Kind.LLM
    assert (record.input_tokens, record.output_tokens) == (100, 10)
    assert record.offered_tools == ("get_order",)
    assert record.requested_calls == (("get_order", args_hash(ORDER_ARGS)),)
    assert record.system_hash == digest("You are support.")
    assert record.user_hash == digest("hello")


# --------------------------------------------------------------------------- defensive reading


def test_own_span_with_truncated_content_keeps_its_hash_and_ignores_the_content() -> None:
    full = json.dumps({"order_id": "ord_555", "note": "x" * 100})
    record = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "execute_tool",
            sc.GEN_AI_TOOL_NAME: "get_order",
            sc.TOOL_ARGS_HASH: args_hash(full),
            sc.TOOL_SCHEMA: json.dumps({"type": "object"}),
            sc.GEN_AI_TOOL_CALL_ARGUMENTS: full[:40] + "…",
        }
    )
    assert record.args_hash == args_hash(full)
    assert record.arguments is None  # truncated: schema validation must not see it


def test_own_span_with_complete_content_exposes_the_arguments() -> None:
    record = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "execute_tool",
            sc.GEN_AI_TOOL_NAME: "get_order",
            sc.TOOL_ARGS_HASH: args_hash(ORDER_ARGS),
            sc.TOOL_SCHEMA: json.dumps({"type": "object"}),
            sc.GEN_AI_TOOL_CALL_ARGUMENTS: json.dumps(ORDER_ARGS),
        }
    )
    assert record.arguments == ORDER_ARGS


@pytest.mark.parametrize(
    "attributes",
    [
        {sc.GEN_AI_OPERATION_NAME: ("chat",)},
        {sc.GEN_AI_OPERATION_NAME: 7},
        {sc.LLM_REQUEST_TYPE: ["chat"]},  # unhashable, as an OTLP decoder may produce
        {sc.OPENINFERENCE_SPAN_KIND: 3},
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_USAGE_INPUT_TOKENS: "many",
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: -5,
            sc.COST_USD: "free",
            sc.LLM_TOOL_CALLS: 42,
            sc.LLM_TOOLS_OFFERED: {"a": 1},
            sc.LLM_INPUT_ENTITIES: "customer",
            sc.GEN_AI_OUTPUT_MESSAGES: "[{not json",
            sc.GEN_AI_INPUT_MESSAGES: 17,
            sc.GEN_AI_TOOL_DEFINITIONS: "{}",
            sc.ANOMALY_FLAGS: 5,
        },
        {
            sc.GEN_AI_OPERATION_NAME: "execute_tool",
            sc.GEN_AI_TOOL_NAME: 5,
            sc.TOOL_ARGS_HASH: 123,
            sc.TOOL_SIDE_EFFECT: "yes",
            sc.TOOL_SCHEMA: "{broken",
            sc.TOOL_ARG_ENTITIES: (1, 2, "nocolon", ":", "order:ord_1"),
            sc.GEN_AI_TOOL_CALL_ARGUMENTS: b"\xff\xfe",
            sc.GEN_AI_TOOL_CALL_RESULT: float("nan"),
        },
        {
            sc.GEN_AI_OPERATION_NAME: "invoke_agent",
            sc.BUDGET_MAX_STEPS: "ten",
            sc.RUN_ENTITY_PREFIX: "empty type",
            sc.RUN_ENTITY_PREFIX + "customer": 789,
            sc.RUN_STOP_REASON: ["success"],
        },
    ],
)
def test_mistyped_attributes_never_raise(attributes: dict[str, Any]) -> None:
    record = _record(attributes)
    assert isinstance(record, SpanRecord)
    if record.kind is Kind.LLM:
        assert record.input_tokens is None and record.output_tokens is None and record.cost_usd is None
    if record.kind is Kind.TOOL:
        assert record.args_hash is not None and len(record.args_hash) == 16  # from the raw content


def test_huge_content_is_fingerprinted_not_parsed() -> None:
    huge = json.dumps({"blob": "x" * (MAX_PARSE_CHARS + 10)})
    record = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "execute_tool",
            sc.GEN_AI_TOOL_NAME: "upload",
            sc.GEN_AI_TOOL_CALL_ARGUMENTS: huge,
            sc.GEN_AI_TOOL_CALL_RESULT: huge,
        }
    )
    assert record.args_hash == digest(huge)
    assert record.arguments is None and record.result is None
    assert record.result_hash == digest(huge)


def test_mapping_that_fails_on_lookup_gives_a_minimal_record() -> None:
    class Broken(dict):  # type: ignore[type-arg]
        def get(self, *_: Any) -> Any:
            raise RuntimeError("decoder bug")

    record = _record(Broken(), name="x")
    assert record.kind is Kind.OTHER and record.name == "x"


def test_end_before_start_is_clamped() -> None:
    record = _record({sc.GEN_AI_OPERATION_NAME: "chat"}, start_ns=100, end_ns=50)
    assert (record.start_ns, record.end_ns) == (100, 100)


def test_error_type_alone_marks_an_error() -> None:
    assert _record({sc.GEN_AI_OPERATION_NAME: "chat", sc.ERROR_TYPE: "RateLimitError"}).is_error


def test_span_attributes_reads_the_sdk_dict_not_the_proxy() -> None:
    """The hot path reads the SDK's own dict (speed is measured in benchmarks/processor_overhead.py)."""
    attrs = span_attributes(
        _span("execute_tool get_order", {sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_NAME: "get_order"})
    )
    assert isinstance(attrs, dict)
    assert _record(attrs).kind is Kind.TOOL


def test_genai_content_gives_call_ids_and_the_tool_results_after_the_last_assistant_turn() -> None:
    part = {"type": "tool_call", "id": "c2", "name": "get_order", "arguments": ORDER_ARGS}
    record = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.GEN_AI_INPUT_MESSAGES: json.dumps(
                [
                    {"role": "user", "parts": [{"type": "text", "content": "Where is ord_555?"}]},
                    {"role": "assistant", "parts": [{**part, "id": "c0"}]},
                    {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c0", "response": "old"}]},
                    {"role": "assistant", "parts": [{**part, "id": "c1"}]},
                    {"role": "tool", "parts": [
                        {"type": "tool_call_response", "id": "c1", "response": '{"status": "shipped"}'}]},
                ]
            ),
            sc.GEN_AI_OUTPUT_MESSAGES: json.dumps([{"role": "assistant", "parts": [part]}]),
        }
    )
    assert record.requested_ids == ("c2",)
    assert record.tool_results == (repeats.fingerprint("c1", '{"status": "shipped"}'),)


def test_own_llm_span_call_ids_and_results_come_from_attributes_only() -> None:
    results = (repeats.fingerprint("c1", "shipped"), repeats.fingerprint("c2", "x", failed=True))
    record = _record(
        {
            sc.GEN_AI_OPERATION_NAME: "chat",
            sc.STEP: 3,
            sc.LLM_TOOL_CALLS: ("get_order:" + "a" * 16, "refund:" + "b" * 16),
            sc.LLM_TOOL_CALL_IDS: ("c3", ""),
            sc.LLM_TOOL_RESULTS: repeats.encode(results),
        }
    )
    assert record.requested_ids == ("c3", "")
    assert record.tool_results == results
    bare = _record({sc.GEN_AI_OPERATION_NAME: "chat", sc.STEP: 3})
    assert bare.requested_ids == () and bare.tool_results is None
