"""``@agentwatch.tool``: each call of a decorated function is one ``execute_tool`` span."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, cast, overload

from . import _runtime
from .forensics import replay_hook
from .gateway.executor import ToolSpec, accepts_idempotency_key, active_gateway, declare
from .gateway.idempotency import KEY_ARGUMENT
from .instrumentation._calls import start_tool

F = TypeVar("F", bound=Callable[..., Any])


def _argument_reader(func: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """Name positional arguments the way a model names them in a tool call's JSON.

    Only arguments actually passed are included (defaults are not), ``self``/``cls``
    are dropped and ``**kwargs`` are flattened, so ``get_order("ord_555")`` and a
    model's ``{"id": "ord_555"}`` give the same args hash.
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return lambda args, kwargs: {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    params = list(sig.parameters.values())
    skip_first = bool(params) and params[0].name in ("self", "cls")
    var_kw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)

    def read(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            bound = sig.bind_partial(*args, **kwargs)
        except TypeError:
            return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
        out = dict(bound.arguments)
        if skip_first:
            out.pop(params[0].name, None)
        if var_kw and var_kw in out:
            out.update(out.pop(var_kw))
        return out

    return read


@overload
def tool(name: F) -> F: ...
@overload
def tool(
    name: str | None = None,
    *,
    side_effect: bool = False,
    description: str | None = None,
    schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    reversible: bool | None = None,
) -> Callable[[F], F]: ...


def tool(
    name: Any = None,
    *,
    side_effect: bool = False,
    description: str | None = None,
    schema: dict[str, Any] | None = None,
    output_schema: dict[str, Any] | None = None,
    reversible: bool | None = None,
) -> Any:
    """Mark a sync or async function as a tool.

    ``side_effect=True`` marks a write (``ticket.create``, ``email.send``) so a
    repeat with the same arguments and no idempotency key is flagged
    ``DUPLICATE_SIDE_EFFECT``. ``schema`` is the JSON Schema of the arguments,
    checked by the ``TOOL_ARG_MISMATCH`` detector (and enforced with
    ``validation.input.strict``); ``output_schema`` that of the result
    (``TOOL_OUTPUT_INVALID``, or refused with ``validation.output.fail_closed``).
    ``reversible`` says whether a write can be undone (forensics lists
    irreversible writes first). Usable as ``@tool`` or ``@tool("search.read", ...)``.
    """
    if callable(name):
        return tool()(name)

    def decorate(func: F) -> F:
        tool_name = name or getattr(func, "__name__", "tool")
        doc = inspect.getdoc(func)
        desc = description or (doc.splitlines()[0] if doc else None)
        read = _argument_reader(func)
        spec = ToolSpec(
            tool_name, side_effect=side_effect, description=desc, schema=schema, output_schema=output_schema,
            reversible=reversible, accepts_key=accepts_idempotency_key(func),
        )
        declare(spec)

        def arguments_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            try:
                return read(args, kwargs)
            except Exception as err:
                _runtime.internal_error("tool.arguments", err)
                return {}

        def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return start_tool(
                tool_name, arguments_of(args, kwargs), side_effect=side_effect, description=desc, schema=schema,
                reversible=reversible,
            )

        def replayed(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            """Inside ``agentwatch.replay()``: a stand-in answering from the recording (forensics.replay)."""
            return replay_hook.ACTIVE.tool_function(tool_name, func, arguments_of(args, kwargs))

        def with_key(kwargs: dict[str, Any], key: str | None) -> dict[str, Any]:
            return kwargs if key is None else {**kwargs, KEY_ARGUMENT: key}

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                run = func if replay_hook.ACTIVE is None else replayed(args, kwargs)
                gateway = active_gateway()
                if gateway is not None:
                    return await gateway.call_async(
                        spec, arguments_of(args, kwargs), lambda key: run(*args, **with_key(kwargs, key))
                    )
                call = begin(args, kwargs)
                if call is None:
                    return await run(*args, **kwargs)
                try:
                    result = await run(*args, **kwargs)
                except BaseException as exc:
                    call.finish(exc=exc)
                    raise
                call.finish(result)
                return result

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(func)
            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                run = func if replay_hook.ACTIVE is None else replayed(args, kwargs)
                gateway = active_gateway()
                if gateway is not None:
                    return gateway.call_sync(
                        spec, arguments_of(args, kwargs), lambda key: run(*args, **with_key(kwargs, key))
                    )
                call = begin(args, kwargs)
                if call is None:
                    return run(*args, **kwargs)
                try:
                    result = run(*args, **kwargs)
                except BaseException as exc:
                    call.finish(exc=exc)
                    raise
                call.finish(result)
                return result

            wrapper = sync_wrapper
        wrapper.tool_name = tool_name
        wrapper.tool_schema = schema
        wrapper.tool_side_effect = side_effect
        wrapper.tool_output_schema = output_schema
        wrapper.tool_reversible = reversible
        return cast(F, wrapper)

    return decorate
