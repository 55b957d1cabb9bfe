"""LangChain tools and LangGraph graphs: tool spans and run spans, no callbacks to register.

Hooks (tested with langchain-core 1.7 and langgraph 1.2):

* ``langchain_core.tools.base.BaseTool.run`` / ``BaseTool.arun`` — ``invoke``,
  ``ainvoke``, ``run``, ``arun`` and LangGraph's ``ToolNode`` all end there, so
  every tool call is one ``execute_tool`` span carrying the model's
  ``tool_call_id`` and the tool's argument schema.
* ``langchain_core.tools.base._handle_tool_error`` / ``_handle_validation_error``
  — a tool with ``handle_tool_error`` returns its exception as text; the hook
  hands the exception to the span so the call still counts as failed.
* ``langgraph.pregel.main.Pregel.stream`` / ``Pregel.astream`` — ``invoke`` and
  ``ainvoke`` iterate these, so every way of running a compiled graph is one
  ``invoke_agent {graph name}`` run span, open while the stream is consumed.
* ``langgraph.prebuilt.tool_node._handle_tool_error`` — with
  ``handle_tool_errors=True`` a ``ToolNode`` would hand any exception to the
  model as text; an enforced agentwatch stop ends the run instead.

Nesting: a graph invoked while a run is current joins that run (subgraphs run
from a node, or a graph inside the user's ``agentwatch.run``): one attempt,
one run span, not one per node or subgraph. A graph invoked from inside a tool
call (an agent used as a tool) is a sub-agent and gets a nested run.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from .. import _runtime
from ..errors import StopRun
from ..forensics import replay_hook
from ..gateway.executor import HandledFailure, ToolSpec, active_gateway, schema_accepts_key
from ..gateway.idempotency import KEY_ARGUMENT
from ._calls import ToolCall, active, add_agent_namer, start_tool
from ._frameworks import DetachedRun, limit_handled, opens_run
from ._patching import DeferredPatch, text_value

_FILTERED = frozenset({"run_manager", "callbacks", "config", "runtime", "state", "store", "tool_call_id"})


# --------------------------------------------------------------------------- tools

# Exceptions a tool's own handle_tool_error turned into text during the current call.
_HANDLED: ContextVar[list[BaseException] | None] = ContextVar("agentwatch_langchain_handled", default=None)


def _arguments(tool: Any, tool_input: Any) -> Any:
    """The arguments as the model sent them: injected values (state, runtime, callbacks) left out."""
    if isinstance(tool_input, dict):
        try:
            return tool._filter_injected_args(tool_input)
        except Exception:
            return {k: v for k, v in tool_input.items() if k not in _FILTERED}
    if isinstance(tool_input, str):
        try:
            fields = list(tool.args)
        except Exception:
            fields = []
        if len(fields) == 1:  # a single-input tool called with a bare string
            return {fields[0]: tool_input}
    return tool_input


def _schema(tool: Any) -> dict[str, Any] | None:
    schema = tool.tool_call_schema  # memoized per tool by langchain-core
    if isinstance(schema, dict):
        return schema
    dump = getattr(schema, "model_json_schema", None)
    return dump() if callable(dump) else None


def _begin(tool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolCall | None:
    """Open the tool span; ``None`` to pass through. Deliberate stops propagate."""
    try:
        name = getattr(tool, "name", None)
        if not isinstance(name, str):
            return None
        tool_input = args[0] if args else kwargs.get("tool_input")
        arguments = _arguments(tool, tool_input)
        try:
            schema = _schema(tool)
        except Exception:
            schema = None
        description = getattr(tool, "description", None)
        call_id = kwargs.get("tool_call_id")
    except Exception as err:
        _runtime.internal_error("langchain.tool", err)
        return None
    return start_tool(
        name,
        arguments if arguments is not None else {},
        description=description if isinstance(description, str) and description else None,
        schema=schema,
        call_id=call_id if isinstance(call_id, str) and call_id else None,
    )


def _result(output: Any) -> Any:
    """What the tool returned: a ToolMessage's content (JSON text counts as its value)."""
    if type(output).__name__ == "Command":  # a LangGraph state update, not a result
        return None
    content = getattr(output, "content", output)
    return text_value(content) if isinstance(content, str) else content


def _finish(call: ToolCall, output: Any, handled: list[BaseException]) -> None:
    if handled:
        call.finish(exc=handled[-1])
        return
    try:
        value = _result(output)
    except Exception as err:
        _runtime.internal_error("langchain.result", err)
        call.finish()
        return
    if value is None:
        call.finish()
    else:
        call.finish(value)


def _gateway_spec(tool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[ToolSpec, Any] | None:
    """The gateway's view of a LangChain tool call: its spec and the model's arguments."""
    try:
        name = getattr(tool, "name", None)
        if not isinstance(name, str):
            return None
        arguments = _arguments(tool, args[0] if args else kwargs.get("tool_input"))
        try:
            schema = _schema(tool)
        except Exception:
            schema = None
        description = getattr(tool, "description", None)
        spec = ToolSpec(
            name,
            side_effect=_runtime.get().config.tools.is_side_effect(name),
            description=description if isinstance(description, str) and description else None,
            schema=schema,
            accepts_key=schema_accepts_key(schema),
        )
        return spec, arguments if arguments is not None else {}
    except Exception as err:
        _runtime.internal_error("langchain.gateway", err)
        return None


def _keyed(args: tuple[Any, ...], kwargs: dict[str, Any], key: str | None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The call's arguments with ``idempotency_key`` added to a dict tool input."""
    if key is None:
        return args, kwargs
    tool_input = args[0] if args else kwargs.get("tool_input")
    if not isinstance(tool_input, dict):
        return args, kwargs
    keyed = {**tool_input, KEY_ARGUMENT: key}
    if args:
        return (keyed, *args[1:]), kwargs
    return args, {**kwargs, "tool_input": keyed}


def _attempt_sync(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    def attempt(key: str | None) -> tuple[Any, BaseException | None]:
        call_args, call_kwargs = _keyed(args, kwargs, key)
        handled: list[BaseException] = []
        token = _HANDLED.set(handled)
        try:
            output = wrapped(*call_args, **call_kwargs)
        finally:
            _HANDLED.reset(token)
        return output, handled[-1] if handled else None

    return attempt


def _attempt_async(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    async def attempt(key: str | None) -> tuple[Any, BaseException | None]:
        call_args, call_kwargs = _keyed(args, kwargs, key)
        handled: list[BaseException] = []
        token = _HANDLED.set(handled)
        try:
            output = await wrapped(*call_args, **call_kwargs)
        finally:
            _HANDLED.reset(token)
        return output, handled[-1] if handled else None

    return attempt


_READER = HandledFailure(_result)


def _replayed(wrapped: Any, tool: Any) -> Any:
    """``run``/``arun`` of a copy of TOOL whose function answers from the active replay.

    LangChain's own ``run`` still formats the output and applies ``handle_tool_error``
    to a recorded error, so the model sees what it saw live.
    """
    handle = replay_hook.ACTIVE
    name = getattr(tool, "name", "")

    def answer(*args: Any, **kwargs: Any) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if k not in _FILTERED}
        return handle.tool_answer(name, kwargs if kwargs or not args else {"arg0": args[0]})

    async def aanswer(*args: Any, **kwargs: Any) -> Any:
        return answer(*args, **kwargs)

    replayed = copy.copy(tool)
    if getattr(tool, "func", None) is not None or getattr(tool, "coroutine", None) is not None:
        object.__setattr__(replayed, "func", answer)
        object.__setattr__(replayed, "coroutine", aanswer)
    else:  # a BaseTool subclass with its own _run/_arun
        object.__setattr__(replayed, "_run", answer)
        object.__setattr__(replayed, "_arun", aanswer)
    return functools.partial(wrapped.__func__, replayed)


def _run_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not active():
        return wrapped(*args, **kwargs)
    if replay_hook.ACTIVE is not None:  # inside agentwatch.replay(): the tool answers from the recording
        wrapped = _replayed(wrapped, instance)
    gateway = active_gateway()
    if gateway is not None:
        routed = _gateway_spec(instance, args, kwargs)
        if routed is not None:
            return gateway.call_sync(*routed, _attempt_sync(wrapped, args, kwargs), _READER)[0]
    call = _begin(instance, args, kwargs)
    if call is None:
        return wrapped(*args, **kwargs)
    handled: list[BaseException] = []
    token = _HANDLED.set(handled)
    try:
        output = wrapped(*args, **kwargs)
    except BaseException as exc:
        call.finish(exc=exc)
        raise
    finally:
        _HANDLED.reset(token)
    _finish(call, output, handled)
    return output


async def _arun_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not active():
        return await wrapped(*args, **kwargs)
    if replay_hook.ACTIVE is not None:  # inside agentwatch.replay(): the tool answers from the recording
        wrapped = _replayed(wrapped, instance)
    gateway = active_gateway()
    if gateway is not None:
        routed = _gateway_spec(instance, args, kwargs)
        if routed is not None:
            return (await gateway.call_async(*routed, _attempt_async(wrapped, args, kwargs), _READER))[0]
    call = _begin(instance, args, kwargs)
    if call is None:
        return await wrapped(*args, **kwargs)
    handled: list[BaseException] = []
    token = _HANDLED.set(handled)
    try:
        output = await wrapped(*args, **kwargs)
    except BaseException as exc:
        call.finish(exc=exc)
        raise
    finally:
        _HANDLED.reset(token)
    _finish(call, output, handled)
    return output


def _handled_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    content = wrapped(*args, **kwargs)
    holder = _HANDLED.get()
    error = args[0] if args else kwargs.get("e")
    if holder is not None and isinstance(error, BaseException):
        holder.append(error)
    return content


def _tool_node_error_wrapper(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    error = args[0] if args else kwargs.get("e")
    if isinstance(error, StopRun) and active():
        # An enforced budget, loop or deny rule ends the run; it is not a tool error for the model.
        raise error
    return wrapped(*args, **kwargs)


# --------------------------------------------------------------------------- graphs


def _graph_name(graph: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    config = args[1] if len(args) > 1 else kwargs.get("config")
    if isinstance(config, dict) and isinstance(config.get("run_name"), str) and config["run_name"]:
        return str(config["run_name"])
    name = getattr(graph, "name", None)
    return name if isinstance(name, str) and name else "LangGraph"


def _start(graph: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> DetachedRun | None:
    if not active() or not opens_run():
        return None
    try:
        return DetachedRun(_graph_name(graph, args, kwargs))
    except Exception as err:
        _runtime.internal_error("langgraph.run", err)
        return None


# LangGraph's prebuilt agent answers this instead of calling the model when its steps ran out.
NEED_MORE_STEPS = "Sorry, need more steps to process this request."


def _last_message_text(item: Any) -> Any:
    if isinstance(item, tuple) and item:  # (mode, chunk) or (namespace, mode, chunk)
        item = item[-1]
    if not isinstance(item, dict):
        return None
    messages = item.get("messages")
    if messages is None and len(item) == 1:  # stream_mode="updates": {node: {"messages": [...]}}
        update = next(iter(item.values()))
        messages = update.get("messages") if isinstance(update, dict) else None
    if isinstance(messages, list) and messages:
        return getattr(messages[-1], "content", None)
    return None


def _note_limit(run: DetachedRun, item: Any) -> None:
    """The graph answered that it needs more steps: it stopped at its own step limit."""
    try:
        if _last_message_text(item) == NEED_MORE_STEPS:
            limit_handled(run.run, "LangGraph agent ran out of steps (remaining_steps) and said so")
    except Exception as err:
        _runtime.internal_error("langgraph.limit", err)


def graph_node() -> str | None:
    """The LangGraph node (path through subgraphs) running now: the agent of a multi-agent graph."""
    config = _child_config.get() if _child_config is not None else None
    metadata = config.get("metadata") if isinstance(config, dict) else None
    if not isinstance(metadata, dict):
        return None
    path = metadata.get("langgraph_checkpoint_ns")
    if isinstance(path, str) and path:
        return "/".join(part.split(":", 1)[0] for part in path.split("|"))
    node = metadata.get("langgraph_node")
    return node if isinstance(node, str) else None


_child_config: Any = None


def _iterate(stream: Any, run: DetachedRun) -> Any:
    """Yield the graph's stream items; the run's context is current only while the graph works."""
    iterator = iter(stream)
    error: BaseException | None = None
    try:
        while True:
            try:
                with run.entered():
                    item = next(iterator)
            except StopIteration:
                return
            _note_limit(run, item)
            yield item
    except GeneratorExit:  # the consumer stopped early: close the graph inside its run
        close = getattr(iterator, "close", None)
        if close is not None:
            with run.entered():
                close()
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        run.end(error)


async def _aiterate(stream: Any, run: DetachedRun) -> Any:
    iterator = stream.__aiter__()
    error: BaseException | None = None
    try:
        while True:
            try:
                with run.entered():
                    item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            _note_limit(run, item)
            yield item
    except GeneratorExit:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            with run.entered():
                await aclose()
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        run.end(error)


def _graph_wrapper(iterate: Callable[[Any, DetachedRun], Any]) -> Any:
    """A wrapper for ``Pregel.stream`` (``iterate=_iterate``) or ``astream`` (``_aiterate``)."""

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        _name_agents()
        run = _start(instance, args, kwargs)
        if run is None:
            return wrapped(*args, **kwargs)
        try:
            stream = wrapped(*args, **kwargs)
        except BaseException as exc:
            run.end(exc)
            raise
        return iterate(stream, run)

    return wrapper


def _name_agents() -> None:
    """Name each LLM call's agent after its graph node (once langchain-core is loaded)."""
    global _child_config
    if _child_config is None:
        try:
            from langchain_core.runnables.config import var_child_runnable_config
        except Exception:
            return
        _child_config = var_child_runnable_config
        add_agent_namer(graph_node)


def patch() -> DeferredPatch:
    tools = "langchain_core.tools.base"
    return DeferredPatch(
        (
            (tools, "BaseTool", "run", _run_wrapper),
            (tools, "BaseTool", "arun", _arun_wrapper),
            (tools, "", "_handle_tool_error", _handled_wrapper),
            (tools, "", "_handle_validation_error", _handled_wrapper),
            ("langgraph.pregel.main", "Pregel", "stream", _graph_wrapper(_iterate)),
            ("langgraph.pregel.main", "Pregel", "astream", _graph_wrapper(_aiterate)),
            ("langgraph.prebuilt.tool_node", "", "_handle_tool_error", _tool_node_error_wrapper),
        )
    )
