"""One logical tool call through the gateway: refuse, dedupe, time out, retry.

Adapters (``@tool``, MCP ``call_tool``, framework tools) describe the tool
with a :class:`ToolSpec` and hand the gateway a function that performs one
attempt. The gateway decides before the first attempt (safe mode, strict
input validation, the circuit breaker, idempotency dedupe), then runs the
attempts, each as its own ``execute_tool`` span through the same
``start_tool`` the detectors use, so every decision is visible on a span and
judged by the same engine. A fault inside the gateway itself is logged once
and the call proceeds as it would without the gateway.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import _runtime
from .. import semconv as sc
from ..engine.schema import SchemaChecker
from ..errors import CircuitOpen, StopRun, ToolDenied, ToolInputInvalid, ToolOutputInvalid
from ..hashing import args_hash
from . import idempotency, retry, timeouts
from .breaker import Breakers, Transition
from .safe_mode import SWITCH
from .settings import GatewaySettings

logger = logging.getLogger("agentwatch.gateway")

# Metric ``action`` values.
RETRIED = "retried"
DEDUPLICATED = "deduplicated"
TIMED_OUT = "timed_out"
REFUSED_BREAKER = "refused_breaker"
REFUSED_SAFE_MODE = "refused_safe_mode"
REFUSED_VALIDATION = "refused_validation"
REFUSED_ANOMALY_STOP = "refused_anomaly_stop"


@dataclass(frozen=True)
class ToolSpec:
    """What the gateway needs to know about a tool, from its decorator, MCP listing or framework."""

    name: str
    side_effect: bool = False
    description: str | None = None
    schema: Any = None
    output_schema: Any = None
    reversible: bool | None = None
    accepts_key: bool = False  # the tool takes an ``idempotency_key`` argument
    tool_type: str = "function"  # gen_ai.tool.type: "extension" for MCP tools
    attributes: Mapping[str, Any] | None = None  # fixed span attributes (the MCP server's name)


class ResultReader:
    """How an adapter's return value reads: a failure carried as a value, the value to validate, the span end.

    ``@tool`` functions return plain values and fail by raising, which the defaults
    handle. An MCP ``call_tool`` returns a result object that may say ``isError``:
    its adapter supplies ``failure`` (``(error.type, error class, message)`` plus the
    HTTP status the text names, if any), ``value`` (the structured content that
    ``output_schema`` describes) and ``finish`` (how to end the span from it).
    """

    def failure(self, result: Any) -> tuple[tuple[str, Any, str], int | None] | None:
        return None

    def value(self, result: Any) -> Any:
        return result

    def finish(self, call: Any, result: Any) -> None:
        call.finish(result)


PLAIN = ResultReader()


class _FailedResult(Exception):
    """A failure returned as a value, raised inside the attempt loop so it can be retried."""

    def __init__(self, result: Any, status: int | None, timed_out: bool = False) -> None:
        super().__init__("tool returned an error result")
        self.result = result
        self.status_code = status
        self.timed_out = timed_out


class HandledFailure(ResultReader):
    """Frameworks that turn a tool's exception into a message for the model.

    The adapter's attempt returns ``(outcome, error)``: what the framework returned
    and the exception it handled (``None`` on success). The failure is read from
    the exception (status, timeout, error class), so retries and the breaker see
    it as they would see it raised; the caller gets the framework's outcome.
    """

    def __init__(self, value_of: Callable[[Any], Any]) -> None:
        self._value_of = value_of

    def failure(self, result: Any) -> tuple[tuple[str, Any, str], int | None] | None:
        from ..classify import error_class, error_type, status_code

        error = result[1]
        if error is None:
            return None
        failed = (error_type(error), error_class(error), f"{type(error).__name__}: {error}")
        return failed, status_code(error)

    def timed_out(self, result: Any) -> bool:
        return result[1] is not None and retry.is_timeout(result[1])

    def value(self, result: Any) -> Any:
        return self._value_of(result[0])

    def finish(self, call: Any, result: Any) -> None:
        if result[1] is not None:
            call.finish(exc=result[1])
        else:
            value = self._value_of(result[0])
            call.finish() if value is None else call.finish(value)


def accepts_idempotency_key(func: Callable[..., Any]) -> bool:
    """Whether ``func`` can be passed ``idempotency_key=`` (a parameter of that name, or ``**kwargs``)."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == idempotency.KEY_ARGUMENT or p.kind is p.VAR_KEYWORD for p in params)


def schema_accepts_key(schema: Any) -> bool:
    """Whether a JSON Schema of arguments declares ``idempotency_key`` (MCP and framework tools)."""
    return isinstance(schema, dict) and isinstance(schema.get("properties"), dict) and (
        idempotency.KEY_ARGUMENT in schema["properties"]
    )


# Tools declared so far (``@tool``), so a runtime built later can report the ones that
# require an idempotency key but cannot take one. Bounded: a process declares few tools.
_DECLARED: dict[str, ToolSpec] = {}
_MAX_DECLARED = 10_000


def declare(spec: ToolSpec) -> None:
    """Register a decorated tool; warn now when a runtime with a gateway exists already."""
    if len(_DECLARED) < _MAX_DECLARED:
        _DECLARED[spec.name] = spec
    rt = _runtime.current()
    if rt is not None:
        rt.gateway.warn_key_unsupported(spec)


def active_gateway() -> Gateway | None:
    """The gateway to route a tool call through, or ``None`` for the plain path (no extra cost)."""
    if _runtime.active is False:
        return None
    gateway = _runtime.get().gateway
    return gateway if gateway.engaged() else None


_NOT_ANSWERED = object()


class _Plan:
    __slots__ = ("attrs", "key", "may_retry", "refusal", "supplied", "timeout", "trial")

    def __init__(self) -> None:
        self.refusal: StopRun | None = None
        self.attrs: dict[str, Any] = {}
        self.key: str | None = None
        self.supplied = False  # the caller passed the key itself
        self.timeout: float | None = None
        self.may_retry = False
        self.trial = False


class Gateway:
    """The gateway of one runtime: settings, breakers, the dedupe store, metrics."""

    def __init__(self, settings: GatewaySettings, meter: Any = None) -> None:
        self.settings = settings
        self.breakers = Breakers(settings.breakers, on_transition=self._transition)
        self.results = idempotency.STORE
        self._schemas = SchemaChecker()
        self._schema_lock = threading.Lock()
        self._checked: set[str] = set()  # tool names already looked at by warn_key_unsupported
        self._actions = self._transitions = None
        if meter is not None:
            self._actions = meter.create_counter(
                sc.METRIC_GATEWAY_ACTIONS, "{call}",
                "Tool calls the gateway retried, deduplicated, timed out or refused.",
            )
            self._transitions = meter.create_counter(
                sc.METRIC_BREAKER_TRANSITIONS, "{transition}", "Circuit breaker state changes."
            )
        SWITCH.configure(settings.safe_mode.enabled, settings.safe_mode.flag_file)
        for spec in list(_DECLARED.values()):
            self.warn_key_unsupported(spec)

    # ------------------------------------------------------------------ adapters' entry points

    def engaged(self) -> bool:
        """Whether the gateway acts on tool calls now (a key is set, or safe mode was switched on)."""
        return self.settings.active or SWITCH.is_on()

    def warn_key_unsupported(self, spec: ToolSpec) -> None:
        """Report, once per tool, a tool that requires an idempotency key but cannot be given one.

        Each tool name is looked at once (a set lookup on every later call, no glob matching).
        """
        if spec.name in self._checked or len(self._checked) >= _MAX_DECLARED:
            return
        self._checked.add(spec.name)
        if self.settings.requires_idempotency(spec.name) and not spec.accepts_key:
            logger.warning(
                "agentwatch: tool %s requires an idempotency key (agent.tools.idempotency_required) but takes no "
                "idempotency_key argument; agentwatch still deduplicates its calls within a run", spec.name,
            )

    def call_sync(
        self, spec: ToolSpec, arguments: Any, attempt: Callable[[str | None], Any], reader: ResultReader = PLAIN
    ) -> Any:
        """Run ``attempt(key)`` (the key to pass as ``idempotency_key``, or ``None``) under the policies."""
        from ..instrumentation._calls import start_tool

        plan, answered = self._before(spec, arguments, reader)
        if answered is not _NOT_ANSWERED:
            return answered
        pass_key = plan.key if spec.accepts_key and not plan.supplied else None

        def one(number: int) -> Any:
            call = start_tool(spec.name, arguments, **self._span_args(spec, plan, number))
            try:
                if plan.timeout is not None:
                    result = timeouts.call_sync(spec.name, plan.timeout, attempt, pass_key)
                else:
                    result = attempt(pass_key)
            except BaseException as exc:
                self._failed(spec, plan, exc, call, number)
                raise
            return self._outcome(spec, plan, call, result, number, reader)

        again = self._again(plan)
        try:
            try:
                return one(1)  # the first attempt runs without the retry machinery
            except BaseException as exc:
                if not again(exc):
                    raise
            time.sleep(self.settings.retries.wait_seconds(1))
            for tenacity_attempt in retry.attempts(self.settings.retries, again, first=2):
                with tenacity_attempt:
                    return one(retry.attempt_number(tenacity_attempt))
        except _FailedResult as failed:
            return failed.result  # the caller sees the last outcome, as the tool returned it
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def call_async(
        self,
        spec: ToolSpec,
        arguments: Any,
        attempt: Callable[[str | None], Awaitable[Any]],
        reader: ResultReader = PLAIN,
    ) -> Any:
        from ..instrumentation._calls import start_tool

        plan, answered = self._before(spec, arguments, reader)
        if answered is not _NOT_ANSWERED:
            return answered
        pass_key = plan.key if spec.accepts_key and not plan.supplied else None

        async def one(number: int) -> Any:
            call = start_tool(spec.name, arguments, **self._span_args(spec, plan, number))
            try:
                if plan.timeout is not None:
                    result = await timeouts.call_async(spec.name, plan.timeout, attempt(pass_key))
                else:
                    result = await attempt(pass_key)
            except BaseException as exc:
                self._failed(spec, plan, exc, call, number)
                raise
            return self._outcome(spec, plan, call, result, number, reader)

        again = self._again(plan)
        try:
            try:
                return await one(1)
            except BaseException as exc:
                if not again(exc):
                    raise
            await asyncio.sleep(self.settings.retries.wait_seconds(1))
            async for tenacity_attempt in retry.async_attempts(self.settings.retries, again, first=2):
                with tenacity_attempt:
                    return await one(retry.attempt_number(tenacity_attempt))
        except _FailedResult as failed:
            return failed.result
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _again(self, plan: _Plan) -> Callable[[BaseException], bool]:
        policy = self.settings.retries
        return lambda exc: plan.may_retry and retry.retryable(exc, policy)

    def _outcome(self, spec: ToolSpec, plan: _Plan, call: Any, result: Any, number: int, reader: ResultReader) -> Any:
        """A returned value: a failure the tool reported as a value, or a success."""
        try:
            failure = reader.failure(result)
        except Exception as err:
            _runtime.internal_error("gateway.result", err)
            failure = None
        if failure is None:
            return self._succeeded(spec, plan, call, result, reader)
        failed, status = failure
        if call is not None:
            if isinstance(reader, HandledFailure):
                reader.finish(call, result)  # the handled exception itself: type, class, event
            else:
                call.finish(failed=failed)
        raised = _FailedResult(result, status, isinstance(reader, HandledFailure) and reader.timed_out(result))
        self._failed(spec, plan, raised, None, number)
        raise raised  # retried when its status is retryable; else returned by the caller above

    # ------------------------------------------------------------------ decisions

    def _run_key(self) -> str:
        from ..runs import current_run

        run = current_run()
        return run.key if run is not None else ""

    def _plan(self, spec: ToolSpec, arguments: Any) -> _Plan:
        plan = _Plan()
        settings = self.settings
        try:
            from ..runs import current_run

            run = current_run()
            if SWITCH.is_on() and not settings.safe_mode_allows(spec.name):
                allowed = ", ".join(settings.safe_mode.allowed_tools) or "no tools"
                plan.refusal = ToolDenied(f"safe mode is on: only {allowed} may run")
                plan.attrs[sc.SAFE_MODE] = True
                self.count(REFUSED_SAFE_MODE, spec.name)
                return plan
            if settings.input_strict and spec.schema is not None:
                problem = self._check(spec.schema, arguments)
                if problem is not None:
                    plan.refusal = ToolInputInvalid(f"arguments of {spec.name} do not match its schema: {problem}")
                    self.count(REFUSED_VALIDATION, spec.name)
                    return plan
            if settings.breakers.enabled:
                admission = self.breakers.admit(spec.name)
                if not admission.allowed:
                    plan.refusal = CircuitOpen(
                        f"circuit breaker of {spec.name} is open after repeated failures; "
                        f"next trial call in {admission.retry_in:.1f} s"
                    )
                    self.count(REFUSED_BREAKER, spec.name)
                    return plan
                plan.trial = admission.trial
            supplied = idempotency.supplied_key(arguments)
            if supplied is not None:
                plan.key, plan.supplied = supplied, True
            elif run is not None and settings.requires_idempotency(spec.name):
                plan.key = idempotency.make_key(run.run_id, spec.name, args_hash(arguments))
            plan.timeout = settings.timeout_for(spec.name)
            plan.may_retry = settings.retries.max_attempts > 1 and (not spec.side_effect or plan.key is not None)
        except Exception as err:  # the gateway's own fault: the call proceeds without it
            _runtime.internal_error("gateway.plan", err)
            return _Plan()
        return plan

    def _before(self, spec: ToolSpec, arguments: Any, reader: ResultReader) -> tuple[_Plan, Any]:
        """The decisions before the first attempt: raise a refusal, or answer a repeated write from memory.

        Returns the plan and the deduplicated answer (``_NOT_ANSWERED`` when the call must run).
        """
        from ..instrumentation._calls import start_tool

        self.warn_key_unsupported(spec)  # MCP and framework tools are first seen here
        plan = self._plan(spec, arguments)
        if plan.refusal is not None:
            start_tool(spec.name, arguments, **self._span_args(spec, plan, None), refuse=plan.refusal)
            raise plan.refusal  # start_tool raised it already when agentwatch is active
        if plan.key is not None:
            found, result = self.results.get(self._run_key(), plan.key)
            if found:
                return plan, self._answer_deduplicated(spec, arguments, plan, result, reader)
        return plan, _NOT_ANSWERED

    def _answer_deduplicated(
        self, spec: ToolSpec, arguments: Any, plan: _Plan, result: Any, reader: ResultReader
    ) -> Any:
        from ..instrumentation._calls import start_tool

        self.count(DEDUPLICATED, spec.name)
        extra = self._span_args(spec, plan, None)
        extra["extra"][sc.TOOL_DEDUPLICATED] = True
        call = start_tool(spec.name, arguments, **extra)
        if call is not None:
            reader.finish(call, result)
        if plan.trial:
            self.breakers.release_trial(spec.name)
        return result

    def _span_args(self, spec: ToolSpec, plan: _Plan, number: int | None) -> dict[str, Any]:
        attrs = dict(spec.attributes or {})
        attrs.update(plan.attrs)
        if number is not None:
            attrs[sc.TOOL_ATTEMPT] = number
        if plan.key is not None:
            attrs[sc.TOOL_IDEMPOTENCY_KEY_VALUE] = plan.key
        if plan.timeout is not None:
            attrs[sc.TOOL_TIMEOUT_S] = plan.timeout
        return {
            "side_effect": spec.side_effect, "description": spec.description, "schema": spec.schema,
            "extra": attrs, "reversible": spec.reversible, "idempotent": plan.key is not None,
            "tool_type": spec.tool_type,
        }

    def _check(self, schema: Any, value: Any) -> str | None:
        with self._schema_lock:
            ok, problem = self._schemas.check(schema, value)
        return problem if ok and problem is not None else None

    def _failed(self, spec: ToolSpec, plan: _Plan, exc: BaseException, call: Any, number: int) -> None:
        if call is not None:
            call.finish(exc=exc)
        try:
            if isinstance(exc, timeouts.ToolTimeout):
                self.count(TIMED_OUT, spec.name)
            if isinstance(exc, StopRun) or not isinstance(exc, Exception):
                if plan.trial:
                    self.breakers.release_trial(spec.name)
                return
            if self.settings.breakers.enabled:
                self.breakers.failure(spec.name, plan.trial)
                plan.trial = False
            if plan.may_retry and number < self.settings.retries.max_attempts and retry.retryable(
                exc, self.settings.retries
            ):
                if self.settings.breakers.enabled and self.breakers.state(spec.name) != "closed":
                    plan.may_retry = False  # the breaker opened on this failure: no further attempt
                else:
                    self.count(RETRIED, spec.name)
        except Exception as err:
            _runtime.internal_error("gateway.failed", err)

    def _succeeded(self, spec: ToolSpec, plan: _Plan, call: Any, result: Any, reader: ResultReader) -> Any:
        problem: str | None = None
        try:
            if spec.output_schema is not None:
                problem = self._check(spec.output_schema, reader.value(result))
        except Exception as err:
            _runtime.internal_error("gateway.output", err)
        if problem is not None and self.settings.output_fail_closed:
            refusal = ToolOutputInvalid(f"result of {spec.name} does not match its output schema: {problem}")
            self.count(REFUSED_VALIDATION, spec.name)
            if call is not None:
                call.finish(exc=refusal)
            if self.settings.breakers.enabled:
                self.breakers.failure(spec.name, plan.trial)
            raise refusal
        if call is not None:
            if problem is not None:
                call.output_problem = problem
            reader.finish(call, result)
        try:
            if self.settings.breakers.enabled:
                self.breakers.success(spec.name, plan.trial)
            if plan.key is not None:
                self.results.put(self._run_key(), plan.key, result)
        except Exception as err:
            _runtime.internal_error("gateway.succeeded", err)
        return result

    # ------------------------------------------------------------------ reporting

    def count(self, action: str, tool: str | None) -> None:
        """One gateway action on the ``agentwatch.gateway.actions`` counter."""
        if self._actions is not None:
            self._actions.add(1, {"action": action, sc.GEN_AI_TOOL_NAME: tool} if tool else {"action": action})

    def _transition(self, change: Transition) -> None:
        log = logger.warning if change.new == "open" else logger.info
        log("agentwatch: circuit breaker of tool %s: %s -> %s (%d recent failures)",
            change.tool, change.old, change.new, change.failures)
        if self._transitions is not None:
            self._transitions.add(1, {"state": str(change.new), sc.GEN_AI_TOOL_NAME: change.tool})
