"""OpenAI Agents SDK (``openai-agents``, import name ``agents``): runs and function tools.

Hooks, all inside ``agents`` (tested with 0.24):

* ``agents.run.AgentRunner.run`` — ``Runner.run`` and ``Runner.run_sync`` both
  end there (``run_sync`` drives ``run`` on an event loop), so one wrapper gives
  one ``invoke_agent {starting agent}`` run span for either.
* ``agents.run.AgentRunner.run_streamed`` — returns at once while the agent loop
  runs in ``RunResultStreaming.run_loop_task``; the run span is opened in the
  caller (so the task inherits it) and ends when that task does.
* ``agents.run_internal.tool_execution._invoke_function_tool_with_metadata`` —
  where the runner invokes every ``FunctionTool`` (decorated functions, MCP
  tools, agents-as-tools), with the model's call id on the ``ToolContext``.
* ``agents.tool.maybe_invoke_function_tool_failure_error_function`` — the SDK
  turns a tool's exception into a message for the model; this hook hands the
  original exception to the tool span so the failure keeps its type and class.
* ``agents.run_internal.turn_resolution.execute_handoffs`` — a handoff is the
  model calling a ``transfer_to_<agent>`` tool: it gets an ``execute_tool`` span
  (matched to the model's call id) saying which agent handed over to which
  (``agentwatch.handoff.from_agent``/``to_agent``), so the agent change is in
  the trace.

The model calls go through the ``openai`` client, whose instrumentation gives
the LLM spans; they nest under the run. The SDK's own tracing is not used.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
from contextvars import ContextVar
from typing import Any

from .. import _runtime
from .. import semconv as sc
from ..errors import ReplayDivergence, StopRun
from ..forensics import replay_hook
from ..gateway.executor import HandledFailure, ToolSpec, active_gateway, schema_accepts_key
from ..gateway.idempotency import KEY_ARGUMENT
from ..hashing import parse_arguments
from ..runs import Run
from ..runs import run as open_run
from ._calls import ToolCall, active, start_tool
from ._frameworks import DetachedRun, limit_handled, opens_run, stop_for, wrapped_stop
from ._patching import DeferredPatch

# Exceptions the SDK turned into a message for the model during the current tool call.
_HANDLED: ContextVar[list[BaseException] | None] = ContextVar("agentwatch_agents_handled", default=None)


# --------------------------------------------------------------------------- runs


def _agent_name(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    agent = args[0] if args else kwargs.get("starting_agent")
    name = getattr(agent, "name", None)
    return name if isinstance(name, str) and name else "agent"


async def _run_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not active():
        return await wrapped(*args, **kwargs)
    try:
        if opens_run():
            return await _in_run(wrapped, args, kwargs)
        return await wrapped(*args, **kwargs)
    except BaseException as exc:
        stop = wrapped_stop(exc)
        if stop is not None:
            raise stop from None
        raise


def _watch_max_turns(kwargs: dict[str, Any], run: Run) -> None:
    """Wrap a ``max_turns`` error handler: when it answers for the run, the run stopped at its turn limit.

    ``Runner.run(..., error_handlers={"max_turns": handler})`` turns
    ``MaxTurnsExceeded`` into a final output, so no exception reaches the run.
    """
    handlers = kwargs.get("error_handlers")
    if not isinstance(handlers, dict) or handlers.get("max_turns") is None:
        return
    original = handlers["max_turns"]

    def note(data: Any) -> None:
        error = getattr(data, "error", None)
        limit_handled(run, f"MaxTurnsExceeded handled by the run's error handler: {error}")

    def max_turns(data: Any) -> Any:
        result = original(data)
        if inspect.isawaitable(result):

            async def answered() -> Any:
                value = await result
                if value is not None:
                    note(data)
                return value

            return answered()
        if result is not None:
            note(data)
        return result

    kwargs["error_handlers"] = {**handlers, "max_turns": max_turns}


async def _in_run(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        scope = open_run(_agent_name(args, kwargs))
        run = scope.__enter__()
    except Exception as err:
        _runtime.internal_error("agents.run", err)
        return await wrapped(*args, **kwargs)
    try:
        _watch_max_turns(kwargs, run)
    except Exception as err:
        _runtime.internal_error("agents.max_turns", err)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        stop_for(run, exc)
        scope.__exit__(type(exc), exc, exc.__traceback__)
        raise
    scope.__exit__(None, None, None)
    return result


def _run_streamed_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not active() or not opens_run():
        return wrapped(*args, **kwargs)
    try:
        handle = DetachedRun(_agent_name(args, kwargs))
    except Exception as err:
        _runtime.internal_error("agents.run_streamed", err)
        return wrapped(*args, **kwargs)
    try:
        _watch_max_turns(kwargs, handle.run)
    except Exception as err:
        _runtime.internal_error("agents.max_turns", err)
    try:
        with handle.entered():
            result = wrapped(*args, **kwargs)  # starts run_loop_task, which inherits the run
    except BaseException as exc:
        handle.end(exc)
        raise
    try:
        task = getattr(result, "run_loop_task", None)
        if isinstance(task, asyncio.Future):
            task.add_done_callback(lambda t: _end_streamed(handle, t, result))
        else:  # nothing to wait for: the run is what happened so far
            handle.end()
    except Exception as err:
        _runtime.internal_error("agents.run_streamed", err)
        handle.end()
    return result


def _end_streamed(handle: DetachedRun, task: asyncio.Future[Any], result: Any) -> None:
    """End the run with the exception the loop ended with: the task's, or the one stored for the consumer."""
    exc: BaseException | None = None
    try:
        if task.cancelled():
            exc = asyncio.CancelledError()
        else:
            exc = task.exception()
            if exc is None:
                stored = getattr(result, "_stored_exception", None)
                exc = stored if isinstance(stored, BaseException) else None
    except Exception as err:
        _runtime.internal_error("agents.run_streamed", err)
    handle.end(exc)


# --------------------------------------------------------------------------- function tools


def _begin_tool(kwargs: dict[str, Any]) -> ToolCall | None:
    try:
        tool = kwargs.get("function_tool")
        context = kwargs.get("context")
        name = getattr(tool, "name", None)
        if not isinstance(name, str):
            return None
        schema = getattr(tool, "params_json_schema", None)
        description = getattr(tool, "description", None)
        call_id = getattr(context, "tool_call_id", None)
        arguments = kwargs.get("arguments")
    except Exception as err:
        _runtime.internal_error("agents.tool", err)
        return None
    return start_tool(
        name,
        arguments if arguments is not None else {},
        description=description if isinstance(description, str) and description else None,
        schema=schema if isinstance(schema, dict) else None,
        call_id=call_id if isinstance(call_id, str) and call_id else None,
    )


def _sdk_error(tool: Any) -> BaseException:
    """The failure behind an SDK-generated error output that no exception reached us for: a timeout."""
    try:
        from agents.exceptions import ToolTimeoutError

        return ToolTimeoutError(tool_name=tool.name, timeout_seconds=tool.timeout_seconds or 0.0)
    except Exception:
        return TimeoutError(f"tool {getattr(tool, 'name', '?')} timed out")


def _gateway_spec(kwargs: dict[str, Any]) -> tuple[ToolSpec, dict[str, Any]] | None:
    """The gateway's view of a function tool call: its spec and parsed arguments."""
    try:
        tool = kwargs.get("function_tool")
        name = getattr(tool, "name", None)
        if not isinstance(name, str):
            return None
        schema = getattr(tool, "params_json_schema", None)
        description = getattr(tool, "description", None)
        raw = kwargs.get("arguments")
        parsed = parse_arguments(raw if raw is not None else {})
        spec = ToolSpec(
            name,
            side_effect=_runtime.get().config.tools.is_side_effect(name),
            description=description if isinstance(description, str) and description else None,
            schema=schema if isinstance(schema, dict) else None,
            accepts_key=schema_accepts_key(schema),
        )
        return spec, parsed if isinstance(parsed, dict) else {}
    except Exception as err:
        _runtime.internal_error("agents.gateway", err)
        return None


async def _through_gateway(
    gateway: Any, wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any], spec: ToolSpec, arguments: Any
) -> Any:

    async def attempt(key: str | None) -> tuple[Any, BaseException | None]:
        call_kwargs = kwargs if key is None else {**kwargs, "arguments": json.dumps({**arguments, KEY_ARGUMENT: key})}
        handled: list[BaseException] = []
        token = _HANDLED.set(handled)
        try:
            outcome = await wrapped(*args, **call_kwargs)
        finally:
            _HANDLED.reset(token)
        if handled:
            return outcome, handled[-1]
        if getattr(outcome, "is_sdk_generated_error", False):
            return outcome, _sdk_error(kwargs.get("function_tool"))
        return outcome, None

    result = await gateway.call_async(spec, arguments, attempt, _AGENTS_READER)
    return result[0]


_AGENTS_READER = HandledFailure(lambda outcome: getattr(outcome, "output", outcome))


def _replayed_tool(tool: Any) -> Any:
    """A copy of the function tool whose invocation answers from the active replay.

    A recorded error goes through the tool's failure function, as the SDK's own
    invocation does, so the model sees the same message it saw live.
    """
    handle = replay_hook.ACTIVE
    name = getattr(tool, "name", "")

    async def on_invoke_tool(ctx: Any, arguments: str) -> Any:
        try:
            return handle.tool_answer(name, parse_arguments(arguments))
        except ReplayDivergence:
            raise
        except Exception as err:
            from agents.tool import maybe_invoke_function_tool_failure_error_function

            message = await maybe_invoke_function_tool_failure_error_function(
                function_tool=tool, context=ctx, error=err
            )
            if message is None:
                raise
            return message

    replayed = copy.copy(tool)
    replayed.on_invoke_tool = on_invoke_tool
    return replayed


async def _invoke_tool_wrapper(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    if not active():
        return await wrapped(*args, **kwargs)
    if replay_hook.ACTIVE is not None:  # inside agentwatch.replay(): the tool answers from the recording
        kwargs = {**kwargs, "function_tool": _replayed_tool(kwargs.get("function_tool"))}
    gateway = active_gateway()
    if gateway is not None:
        routed = _gateway_spec(kwargs)
        if routed is not None:
            return await _through_gateway(gateway, wrapped, args, kwargs, *routed)
    call = _begin_tool(kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    handled: list[BaseException] = []
    token = _HANDLED.set(handled)
    try:
        outcome = await wrapped(*args, **kwargs)
    except BaseException as exc:
        call.finish(exc=exc)
        raise
    finally:
        _HANDLED.reset(token)
    try:
        if handled:
            error: BaseException | None = handled[-1]
        elif getattr(outcome, "is_sdk_generated_error", False):
            error = _sdk_error(kwargs.get("function_tool"))
        else:
            error = None
        output = getattr(outcome, "output", outcome)
    except Exception as err:
        _runtime.internal_error("agents.tool.result", err)
        call.finish()
        return outcome
    if error is not None:
        call.finish(exc=error)
    else:
        call.finish(output)
    return outcome


async def _failure_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    error = kwargs.get("error")
    if isinstance(error, StopRun) and active():
        # An enforced budget or loop rule stopped a call inside the tool: that ends the run,
        # it is not a tool error for the model to read and work around.
        raise error
    result = await wrapped(*args, **kwargs)
    holder = _HANDLED.get()
    if holder is not None and result is not None and isinstance(error, BaseException):
        holder.append(error)
    return result


# --------------------------------------------------------------------------- handoffs


def _begin_handoff(kwargs: dict[str, Any]) -> ToolCall | None:
    try:
        chosen = (kwargs.get("run_handoffs") or [None])[0]
        tool_call = getattr(chosen, "tool_call", None)
        name = getattr(tool_call, "name", None)
        if not isinstance(name, str):
            return None
        source = getattr(kwargs.get("public_agent"), "name", None)
        target = getattr(getattr(chosen, "handoff", None), "agent_name", None)
        extra: dict[str, Any] = {}
        if isinstance(source, str) and source:
            extra[sc.HANDOFF_FROM_AGENT] = source
        if isinstance(target, str) and target:
            extra[sc.HANDOFF_TO_AGENT] = target
        call_id = getattr(tool_call, "call_id", None)
        arguments = getattr(tool_call, "arguments", None)
    except Exception as err:
        _runtime.internal_error("agents.handoff", err)
        return None
    return start_tool(
        name,
        arguments if arguments else {},
        call_id=call_id if isinstance(call_id, str) and call_id else None,
        extra=extra,
    )


async def _handoff_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not active():
        return await wrapped(*args, **kwargs)
    call = _begin_handoff(kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    try:
        step = await wrapped(*args, **kwargs)
    except BaseException as exc:
        call.finish(exc=exc)
        raise
    try:
        agent = getattr(getattr(step, "next_step", None), "new_agent", None)
        name = getattr(agent, "name", None)
        if isinstance(name, str) and name:  # the agent the handoff resolved to (it may differ from the name asked)
            call.span.set_attribute(sc.HANDOFF_TO_AGENT, name)
        call.finish({"assistant": name})
    except Exception as err:
        _runtime.internal_error("agents.handoff.result", err)
        call.finish()
    return step


def patch() -> DeferredPatch:
    return DeferredPatch(
        (
            ("agents.run", "AgentRunner", "run", _run_wrapper),
            ("agents.run", "AgentRunner", "run_streamed", _run_streamed_wrapper),
            (
                "agents.run_internal.tool_execution",
                "",
                "_invoke_function_tool_with_metadata",
                _invoke_tool_wrapper,
            ),
            ("agents.tool", "", "maybe_invoke_function_tool_failure_error_function", _failure_wrapper),
            ("agents.run_internal.turn_resolution", "", "execute_handoffs", _handoff_wrapper),
        ),
    )
