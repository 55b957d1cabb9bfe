"""Every attribute, event and value name agentwatch reads or writes, in one place.

GenAI names follow the OpenTelemetry semantic conventions v1.41.1; the
``agentwatch.*`` names are the public contract (``shared/contract.md``) that
dashboards and alert rules depend on. Foreign names (older GenAI, OpenInference,
OpenLLMetry) are listed too, because the detectors read spans they did not write.
"""

from __future__ import annotations

from enum import Enum


class _StrEnum(str, Enum):
    def __str__(self) -> str:
        return str(self.value)


# --------------------------------------------------------------------------- values


class StopReason(_StrEnum):
    """Why a run ended (seed 004's exhaustive list plus the contract's additions)."""

    SUCCESS = "success"
    STEP_BUDGET = "step_budget"
    TOOL_BUDGET = "tool_budget"
    TIME_BUDGET = "time_budget"
    COST_BUDGET = "cost_budget"
    TOKEN_BUDGET = "token_budget"
    LOOP_DETECTED = "loop_detected"
    NO_PROGRESS = "no_progress"
    TOOL_DENIED = "tool_denied"
    TOOL_TIMEOUT = "tool_timeout"
    TOOL_RATE_LIMIT = "tool_rate_limit"
    TOOL_OUTPUT_INVALID = "tool_output_invalid"
    TOOL_AUTH_FAILED = "tool_auth_failed"
    TOOL_ERROR = "tool_error"
    LLM_ERROR = "llm_error"
    INTERNAL_ERROR = "internal_error"
    INVALID_INPUT = "invalid_input"
    CANCELLED = "cancelled"
    CIRCUIT_OPEN = "circuit_open"
    ANOMALY_STOP = "anomaly_stop"


class FailureMode(_StrEnum):
    """The outcome buckets of seed 001: every run ends in exactly one."""

    COMPLETED = "completed"
    TOOL_ERROR = "tool_error"
    BAD_DECISION = "bad_decision"
    BAD_OUTPUT = "bad_output"
    TIMEOUT = "timeout"
    COST_BLOWUP = "cost_blowup"


class FailureClass(_StrEnum):
    """Seed 003's four agent failure modes, as ``agentwatch forensics`` classifies a run (contract §7)."""

    HALLUCINATION_PROPAGATION = "hallucination_propagation"
    TOOL_MISFIRE = "tool_misfire"
    CONTEXT_POISONING = "context_poisoning"
    COST_RUNAWAY = "cost_runaway"
    NONE = "none"


class Flag(_StrEnum):
    """Anomaly flags set on the span where the anomaly shows."""

    LOOP_DETECTED = "LOOP_DETECTED"
    NO_PROGRESS = "NO_PROGRESS"
    ENTITY_HALLUCINATION = "ENTITY_HALLUCINATION"
    ENTITY_MISMATCH = "ENTITY_MISMATCH"
    TOOL_ARG_MISMATCH = "TOOL_ARG_MISMATCH"
    UNKNOWN_TOOL = "UNKNOWN_TOOL"
    TOOL_DENIED = "TOOL_DENIED"
    CONTEXT_DRIFT = "CONTEXT_DRIFT"
    STEP_BUDGET_EXCEEDED = "STEP_BUDGET_EXCEEDED"
    TOOL_BUDGET_EXCEEDED = "TOOL_BUDGET_EXCEEDED"
    TIME_BUDGET_EXCEEDED = "TIME_BUDGET_EXCEEDED"
    COST_BUDGET_EXCEEDED = "COST_BUDGET_EXCEEDED"
    TOKEN_BUDGET_EXCEEDED = "TOKEN_BUDGET_EXCEEDED"
    TOKEN_SPIKE = "TOKEN_SPIKE"
    RETRY_STORM = "RETRY_STORM"
    DUPLICATE_SIDE_EFFECT = "DUPLICATE_SIDE_EFFECT"
    TOOL_OUTPUT_INVALID = "TOOL_OUTPUT_INVALID"
    CIRCUIT_OPEN = "CIRCUIT_OPEN"


class Severity(_StrEnum):
    """Seed 002's incident levels, highest first."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


SEVERITY_RANK: dict[str, int] = {"critical": 4, "high": 3, "medium": 2, "low": 1}


class ErrorClass(_StrEnum):
    """``agentwatch.tool.error_class``: what on-call needs to know about a tool failure."""

    TIMEOUT = "timeout"
    RATE_LIMIT = "rate_limit"
    AUTH = "auth"
    OUTPUT_INVALID = "output_invalid"
    DENIED = "denied"
    CIRCUIT_OPEN = "circuit_open"
    ERROR = "error"


# --------------------------------------------------------------------------- GenAI (v1.41.1)

GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_SYSTEM = "gen_ai.system"  # pre-1.37 name of provider.name; read only
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K = "gen_ai.request.top_k"
GEN_AI_REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_OUTPUT_TYPE = "gen_ai.output.type"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_REASONING_OUTPUT_TOKENS = "gen_ai.usage.reasoning.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
# The same count under its name in the GenAI conventions' own repository (emitted on opt-in).
GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS = "gen_ai.usage.cache_write.input_tokens"
GEN_AI_USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"  # old name; read only
GEN_AI_USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"  # old name; read only
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_DESCRIPTION = "gen_ai.tool.description"
GEN_AI_TOOL_TYPE = "gen_ai.tool.type"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"
GEN_AI_AGENT_ID = "gen_ai.agent.id"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_AGENT_DESCRIPTION = "gen_ai.agent.description"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
GEN_AI_TOKEN_TYPE = "gen_ai.token.type"
MCP_METHOD_NAME = "mcp.method.name"  # "tools/call"
MCP_SESSION_ID = "mcp.session.id"  # streamable-HTTP Mcp-Session-Id, where the transport has one
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"
ERROR_TYPE_OTHER = "_OTHER"

OP_CHAT = "chat"
OP_TEXT_COMPLETION = "text_completion"
OP_GENERATE_CONTENT = "generate_content"
OP_EMBEDDINGS = "embeddings"
OP_INVOKE_AGENT = "invoke_agent"
OP_INVOKE_WORKFLOW = "invoke_workflow"
OP_CREATE_AGENT = "create_agent"
OP_EXECUTE_TOOL = "execute_tool"
LLM_OPERATIONS = frozenset({OP_CHAT, OP_TEXT_COMPLETION, OP_GENERATE_CONTENT, OP_EMBEDDINGS})

PROVIDER_OPENAI = "openai"
PROVIDER_ANTHROPIC = "anthropic"

# Metrics (GenAI conventions)
METRIC_TOKEN_USAGE = "gen_ai.client.token.usage"
METRIC_OPERATION_DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ... 67108864
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 ... 81.92

# --------------------------------------------------------------------------- agentwatch

RUN_ID = "agentwatch.run.id"
RUN_IMPLICIT = "agentwatch.run.implicit"  # true on spans of a run grouped without a run span (§8)
RUN_STOP_REASON = "agentwatch.run.stop_reason"
RUN_STOP_DETAIL = "agentwatch.run.stop_detail"
RUN_FAILURE_MODE = "agentwatch.run.failure_mode"
RUN_STEPS = "agentwatch.run.steps"
RUN_LLM_CALLS = "agentwatch.run.llm_calls"
RUN_TOOL_CALLS = "agentwatch.run.tool_calls"
RUN_INPUT_TOKENS = "agentwatch.run.input_tokens"
RUN_OUTPUT_TOKENS = "agentwatch.run.output_tokens"
RUN_COST_USD = "agentwatch.run.cost_usd"
RUN_ENTITY_PREFIX = "agentwatch.run.entity."
RUN_ANOMALY_FLAGS = "agentwatch.run.anomaly.flags"
RUN_ANOMALY_COUNT = "agentwatch.run.anomaly.count"
RUN_FAULT_ORIGIN_SPAN_ID = "agentwatch.run.fault_origin.span_id"
# The run's budget, recorded at start so out-of-process detectors apply the same limits.
BUDGET_MAX_STEPS = "agentwatch.budget.max_steps"
BUDGET_MAX_TOOL_CALLS = "agentwatch.budget.max_tool_calls"
BUDGET_MAX_SECONDS = "agentwatch.budget.max_seconds"
BUDGET_MAX_USD = "agentwatch.budget.max_usd"
BUDGET_MAX_TOKENS = "agentwatch.budget.max_tokens"
BUDGET_MAX_UNIQUE_CALLS = "agentwatch.budget.max_unique_calls"
BUDGET_ENFORCE = "agentwatch.budget.enforce"

PHASE = "agentwatch.phase"
STEP = "agentwatch.step"
COST_USD = "agentwatch.cost_usd"

LLM_TOOL_CALLS = "agentwatch.llm.tool_calls"  # string[] of "name:args_hash"
LLM_TOOLS_OFFERED = "agentwatch.llm.tools_offered"  # string[] of tool names offered to the model
LLM_SYSTEM_HASH = "agentwatch.llm.system_hash"  # hash of system instructions (drift detection)
LLM_USER_HASH = "agentwatch.llm.user_hash"  # hash of the latest user turn (drift detection)
LLM_INPUT_ENTITIES = "agentwatch.llm.input_entities"  # string[] "type:id" new in this call's input
LLM_REQUESTED_ENTITIES = "agentwatch.llm.requested_entities"  # string[] "type:id" in requested tool args
# Request loops of tools that leave no span: the ids of the requested calls (aligned with
# LLM_TOOL_CALLS, "" when the provider gave none), and the tool results this call's input
# carried, as "masked_result_hash sketch call_id" ("-" for a failed result or no sketch).
LLM_TOOL_CALL_IDS = "agentwatch.llm.tool_call_ids"
LLM_TOOL_RESULTS = "agentwatch.llm.tool_results"

TOOL_ARGS_HASH = "agentwatch.tool.args_hash"
TOOL_RESULT_HASH = "agentwatch.tool.result_hash"
# Loops out of process: fingerprints with volatile values (timestamps, request ids) masked, written
# only when they differ from the exact hash, and a similarity sketch of a long result.
TOOL_ARGS_MASKED_HASH = "agentwatch.tool.args_masked_hash"
TOOL_RESULT_MASKED_HASH = "agentwatch.tool.result_masked_hash"
TOOL_RESULT_SKETCH = "agentwatch.tool.result_sketch"
TOOL_SIDE_EFFECT = "agentwatch.tool.side_effect"
TOOL_IDEMPOTENCY_KEY = "agentwatch.tool.idempotency_key_present"
# The tool gateway (contract §6).
TOOL_IDEMPOTENCY_KEY_VALUE = "agentwatch.tool.idempotency_key"
TOOL_DEDUPLICATED = "agentwatch.tool.deduplicated"
TOOL_ATTEMPT = "agentwatch.tool.attempt"
TOOL_TIMEOUT_S = "agentwatch.tool.timeout_s"
TOOL_REVERSIBLE = "agentwatch.tool.reversible"
TOOL_OUTPUT_INVALID = "agentwatch.tool.output_invalid"  # beyond the contract: the result failed output_schema
SAFE_MODE = "agentwatch.safe_mode"
TOOL_ERROR_CLASS = "agentwatch.tool.error_class"
TOOL_ARG_ENTITIES = "agentwatch.tool.arg_entities"  # string[] "type:id"
TOOL_RESULT_ENTITIES = "agentwatch.tool.result_entities"  # string[] "type:id"
TOOL_SCHEMA = "agentwatch.tool.schema"  # JSON Schema of the tool's arguments (JSON string)
TOOL_SERVER = "agentwatch.tool.server"  # MCP server name where known
HANDOFF_FROM_AGENT = "agentwatch.handoff.from_agent"  # the agent that handed the conversation over
HANDOFF_TO_AGENT = "agentwatch.handoff.to_agent"  # the agent that takes it

ANOMALY_FLAGS = "agentwatch.anomaly.flags"
ANOMALY_SEVERITY = "agentwatch.anomaly.severity"
ANOMALY_EVALUATED = "agentwatch.anomaly.evaluated"
ANOMALY_EVENT = "agentwatch.anomaly"
ANOMALY_FLAG = "agentwatch.anomaly.flag"
ANOMALY_REASON = "agentwatch.anomaly.reason"
ANOMALY_RELATED_SPAN_ID = "agentwatch.anomaly.related_span_id"
ANOMALY_SUMMARY_SPAN_NAME = "agentwatch.anomaly.summary"  # collector: findings after spans left
ANOMALY_SUMMARY_SPAN_IDS = "agentwatch.anomaly.summary.span_ids"  # spans a summary span's findings are about
ANOMALY_SPAN_ID = "agentwatch.anomaly.span_id"  # summary event attribute: the span a finding is about

# agentwatch metrics
METRIC_RUNS = "agentwatch.runs"
METRIC_COST = "agentwatch.cost"  # counter, USD, per LLM call by provider and model
METRIC_ANOMALIES = "agentwatch.anomalies"
# The tool gateway: one counter, by tool and ``action`` (retried, deduplicated, timed_out,
# refused_breaker, refused_safe_mode, refused_validation, refused_anomaly_stop), and
# breaker transitions by tool and new ``state``.
METRIC_GATEWAY_ACTIONS = "agentwatch.gateway.actions"
METRIC_BREAKER_TRANSITIONS = "agentwatch.gateway.breaker.transitions"

# Stability opt-in: with gen_ai_latest_experimental in it, emit the newest GenAI names
ENV_SEMCONV_OPT_IN = "OTEL_SEMCONV_STABILITY_OPT_IN"
SEMCONV_GENAI_LATEST = "gen_ai_latest_experimental"

# Content capture switch (official GenAI utilities' variable)
ENV_CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

# --------------------------------------------------------------------------- foreign conventions (read only)

OPENINFERENCE_SPAN_KIND = "openinference.span.kind"  # LLM, TOOL, AGENT, CHAIN, ...
OI_LLM_MODEL_NAME = "llm.model_name"
OI_LLM_PROVIDER = "llm.provider"
OI_LLM_SYSTEM = "llm.system"
OI_TOKEN_PROMPT = "llm.token_count.prompt"
OI_TOKEN_COMPLETION = "llm.token_count.completion"
OI_TOOL_NAME = "tool.name"
OI_TOOL_PARAMETERS = "tool.parameters"
OI_INPUT_VALUE = "input.value"
OI_OUTPUT_VALUE = "output.value"
OI_SESSION_ID = "session.id"

TRACELOOP_SPAN_KIND = "traceloop.span.kind"  # workflow, task, agent, tool
TRACELOOP_ENTITY_NAME = "traceloop.entity.name"
TRACELOOP_ENTITY_INPUT = "traceloop.entity.input"
TRACELOOP_ENTITY_OUTPUT = "traceloop.entity.output"
LLM_REQUEST_TYPE = "llm.request.type"  # OpenLLMetry: chat, completion, embedding
LLM_USAGE_TOTAL_TOKENS = "llm.usage.total_tokens"
