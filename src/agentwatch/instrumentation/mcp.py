"""MCP client: every ``tools/call`` is an ``execute_tool`` span.

Hooks ``mcp.ClientSession.call_tool`` (every client path ends there:
``ClientSessionGroup``, agent-framework adapters, raw sessions) and, on mcp 2.x,
``mcp.Client.call_tool``, so a call the high-level client drives over several
``input_required`` rounds or a ``HEADER_MISMATCH`` re-list is still one span.
``list_tools`` results are remembered per session (bounded) so each call
carries the tool's ``inputSchema`` for the ``TOOL_ARG_MISMATCH`` detector, and
``initialize`` results give the server's name (``agentwatch.tool.server``).

A result with ``isError`` is not an exception: the user gets it back
unchanged, and the span records it as a failure with an error class read from
the error text. A framework tool that merely forwards to an MCP tool of the
same name (Agents SDK MCP servers, LangChain MCP adapters) already has its
span; the MCP call then only adds the server name to it instead of counting
the tool twice.
"""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from .. import _runtime
from .. import semconv as sc
from ..classify import error_class, error_type
from ..forensics import replay_hook
from ..gateway.executor import active_gateway
from ..semconv import ErrorClass
from ._calls import ToolCall, active, current_tool_call, start_tool
from ._patching import DeferredPatch, text_value
from .mcp_gateway import MCPResultReader, call_through_gateway

MAX_TOOLS_PER_SESSION = 512
"""Tool definitions remembered per session; the oldest listed is forgotten first."""

_MAX_ERROR_TEXT = 2000

# The session whose call_tool already has a span in this context (mcp.Client.call_tool → session.call_tool).
_IN_CALL: ContextVar[Any] = ContextVar("agentwatch_mcp_in_call", default=None)


# Checked in order: what an ``isError`` result's text says about the failure.
_ERROR_PATTERNS: tuple[tuple[re.Pattern[str], ErrorClass], ...] = (
    (re.compile(r"timed?[\s_-]?out|deadline exceeded", re.I), ErrorClass.TIMEOUT),
    (re.compile(r"rate[\s_-]?limit|too many requests|quota exceeded", re.I), ErrorClass.RATE_LIMIT),
    (
        re.compile(
            r"unauthori[sz]ed|forbidden|not authenticated|authentication|permission denied|access denied"
            r"|invalid (?:api[\s_-]?)?(?:key|token)|credential",
            re.I,
        ),
        ErrorClass.AUTH,
    ),
)


def tool_failure(text: str) -> tuple[str, ErrorClass, str]:
    """``(error.type, error class, message)`` for an ``isError`` result with this text.

    ``error.type`` is ``tool_error``, as the OpenTelemetry MCP conventions say for a
    tool that reported an error in its result rather than failing the request.
    """
    text = text[:_MAX_ERROR_TEXT]
    for pattern, cls in _ERROR_PATTERNS:
        if pattern.search(text):
            return "tool_error", cls, text
    return "tool_error", ErrorClass.ERROR, text


# --------------------------------------------------------------------------- per-session memory


class _SessionInfo:
    """What agentwatch learned about one session: the server's name and the tools it listed."""

    __slots__ = ("__weakref__", "outputs", "server", "tools")

    def __init__(self) -> None:
        self.server: str | None = None
        self.tools: OrderedDict[str, tuple[dict[str, Any] | None, str | None]] = OrderedDict()
        self.outputs: dict[str, dict[str, Any]] = {}  # tool name -> outputSchema, for the gateway

    def remember(
        self, name: str, schema: dict[str, Any] | None, description: str | None,
        output_schema: dict[str, Any] | None = None,
    ) -> None:
        self.tools[name] = (schema, description)
        self.tools.move_to_end(name)
        if output_schema is not None:
            self.outputs[name] = output_schema
        while len(self.tools) > MAX_TOOLS_PER_SESSION:
            gone, _ = self.tools.popitem(last=False)
            self.outputs.pop(gone, None)


_SESSIONS: weakref.WeakKeyDictionary[Any, _SessionInfo] = weakref.WeakKeyDictionary()


def _info(session: Any) -> _SessionInfo:
    info = _SESSIONS.get(session)
    if info is None:
        info = _SESSIONS[session] = _SessionInfo()
    return info


def _field(obj: Any, *names: str) -> Any:
    """A field under its mcp 2.x (snake_case) or 1.x (camelCase) name."""
    for name in names:
        value = getattr(obj, name, None)
        if value is not None:
            return value
    return None


def _server_name(session: Any) -> str | None:
    info = _SESSIONS.get(session)
    if info is not None and info.server:
        return info.server
    server = getattr(session, "server_info", None)  # mcp 2.x: from initialize or discover
    name = getattr(server, "name", None)
    return name if isinstance(name, str) and name else None


def _remember_listing(session: Any, result: Any) -> None:
    tools = getattr(result, "tools", None)
    if not isinstance(tools, list):
        return
    info = _info(session)
    for tool in tools:
        name = getattr(tool, "name", None)
        if not isinstance(name, str):
            continue
        schema = _field(tool, "input_schema", "inputSchema")
        description = getattr(tool, "description", None)
        output = _field(tool, "output_schema", "outputSchema")
        info.remember(
            name,
            schema if isinstance(schema, dict) else None,
            description if isinstance(description, str) else None,
            output if isinstance(output, dict) else None,
        )


# --------------------------------------------------------------------------- results


def _texts(result: Any) -> list[str]:
    content = getattr(result, "content", None)
    out: list[str] = []
    for block in content if isinstance(content, list) else ():
        text = getattr(block, "text", None)
        if isinstance(text, str):
            out.append(text)
    return out


def _finish(call: ToolCall | Enclosed, result: Any) -> None:
    """Close the span from a ``call_tool`` return value (the value itself is not touched)."""
    try:
        if _field(result, "is_error", "isError") is True:
            outcome: tuple[str, Any] = ("error", tool_failure("\n".join(_texts(result)) or "isError"))
        elif not hasattr(result, "content"):  # InputRequiredResult, a claimed extension shape
            outcome = ("none", None)
        else:
            structured = _field(result, "structured_content", "structuredContent")
            if structured is not None:
                outcome = ("result", structured)
            else:
                values = [text_value(t) for t in _texts(result)]
                outcome = ("result", values[0] if len(values) == 1 else values)
    except Exception as err:
        _runtime.internal_error("mcp.result", err)
        outcome = ("none", None)
    kind, value = outcome
    if kind == "error":
        call.finish(failed=value)
    elif kind == "result":
        call.finish(value)
    else:
        call.finish()


# --------------------------------------------------------------------------- wrappers


def _enclosing_tool(name: str) -> ToolCall | None:
    """The framework tool call this MCP call merely implements (same tool name), if any."""
    call = current_tool_call()
    if call is not None and call.name == name and call.span.is_recording():
        return call
    return None


def _mcp_attributes(session: Any, server: str | None) -> dict[str, Any]:
    """The MCP conventions' attributes of a ``tools/call`` (session id where the transport has one)."""
    attrs: dict[str, Any] = {sc.MCP_METHOD_NAME: "tools/call"}
    if server:
        attrs[sc.TOOL_SERVER] = server
    session_id = _session_id(session)
    if session_id:
        attrs[sc.MCP_SESSION_ID] = session_id
    return attrs


def _session_id(session: Any) -> str | None:
    """The ``Mcp-Session-Id`` of a streamable-HTTP session, when the SDK exposes it."""
    for holder in (session, getattr(session, "_transport", None)):
        get = getattr(holder, "get_session_id", None)
        if callable(get):
            try:
                value = get()
            except Exception:
                continue
            if isinstance(value, str) and value:
                return value[:256]
    return None


def _begin(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ToolCall | Enclosed | None:
    """Open the span; ``None`` to pass through. Deliberate stops (budget, loop, deny) propagate.

    Inside a framework tool span of the same name, no second span: the framework's
    span gains the MCP attributes and, through :class:`Enclosed`, the call's outcome.
    """
    try:
        name = args[0] if args else kwargs.get("name")
        if not isinstance(name, str):
            return None
        arguments = args[1] if len(args) > 1 else kwargs.get("arguments")
        server = _server_name(session)
        attrs = _mcp_attributes(session, server)
        outer = _enclosing_tool(name)
        if outer is not None:
            outer.span.set_attributes({sc.GEN_AI_TOOL_TYPE: "extension", **attrs})
            return Enclosed(outer)
        info = _SESSIONS.get(session)
        schema, description = info.tools.get(name, (None, None)) if info is not None else (None, None)
    except Exception as err:
        _runtime.internal_error("mcp.call_tool", err)
        return None
    return start_tool(
        name,
        arguments if arguments is not None else {},
        description=description,
        schema=schema,
        tool_type="extension",
        extra=attrs,
    )


class Enclosed:
    """An MCP call inside the framework tool call it implements: its failure becomes that call's."""

    __slots__ = ("outer",)

    def __init__(self, outer: ToolCall) -> None:
        self.outer = outer

    def finish(self, result: Any = None, exc: BaseException | None = None, *, failed: Any = None) -> None:
        if failed is not None:
            self.outer.failure = failed
        elif exc is not None:
            cls = error_class(exc)
            self.outer.failure = (error_type(exc), cls, f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_TEXT])


_READER = MCPResultReader(_field, _texts, tool_failure, _finish)


def _gateway_route(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
    """The facts the gateway needs about this call, or ``None`` when a framework tool span already covers it."""
    try:
        name = args[0] if args else kwargs.get("name")
        if not isinstance(name, str) or _enclosing_tool(name) is not None:
            return None
        arguments = args[1] if len(args) > 1 else kwargs.get("arguments")
        info = _SESSIONS.get(session)
        schema, description = info.tools.get(name, (None, None)) if info is not None else (None, None)
        output = info.outputs.get(name) if info is not None else None
        side_effect = _runtime.get().config.tools.is_side_effect(name)
        return (name, arguments, schema, output, description, _server_name(session), side_effect)
    except Exception as err:
        _runtime.internal_error("mcp.gateway", err)
        return None


def _replayed(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any]:
    """A stand-in for ``call_tool`` that answers from the active replay (see forensics.replay)."""
    name = args[0] if args else kwargs.get("name")
    arguments = args[1] if len(args) > 1 else kwargs.get("arguments")
    handle = replay_hook.ACTIVE

    async def answer(*_: Any, **__: Any) -> Any:
        return await handle.mcp_result(str(name), arguments if arguments is not None else {})

    return answer


def _call_tool_wrapper(session_of: Callable[[Any], Any]) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not active():
            return await wrapped(*args, **kwargs)
        try:
            session = session_of(instance)
        except Exception:  # mcp.Client outside its context: let the client raise its own error
            return await wrapped(*args, **kwargs)
        if _IN_CALL.get() is session:
            return await wrapped(*args, **kwargs)
        if replay_hook.ACTIVE is not None:  # inside agentwatch.replay(): answered from the recording
            wrapped = _replayed(args, kwargs)
        gateway = active_gateway()
        if gateway is not None:
            routed = _gateway_route(session, args, kwargs)
            if routed is not None:
                token = _IN_CALL.set(session)
                try:
                    return await call_through_gateway(gateway, _READER, wrapped, args, kwargs, *routed)
                finally:
                    _IN_CALL.reset(token)
        call = _begin(session, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        token = _IN_CALL.set(session)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.finish(exc=exc)
            raise
        finally:
            _IN_CALL.reset(token)
        _finish(call, result)
        return result

    return wrapper


def _list_tools_wrapper(session_of: Callable[[Any], Any]) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = await wrapped(*args, **kwargs)
        if active():
            try:
                _remember_listing(session_of(instance), result)
            except Exception as err:
                _runtime.internal_error("mcp.list_tools", err)
        return result

    return wrapper


async def _initialize_wrapper(
    wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    result = await wrapped(*args, **kwargs)
    if active():
        try:
            name = getattr(_field(result, "server_info", "serverInfo"), "name", None)
            if isinstance(name, str) and name:
                _info(instance).server = name
        except Exception as err:
            _runtime.internal_error("mcp.initialize", err)
    return result


def _own(session: Any) -> Any:
    return session


def _client_session(client: Any) -> Any:
    return client.session


def patch() -> DeferredPatch:
    session, client = "mcp.client.session", "mcp.client.client"
    return DeferredPatch(
        (
            (session, "ClientSession", "call_tool", _call_tool_wrapper(_own)),
            (session, "ClientSession", "list_tools", _list_tools_wrapper(_own)),
            (session, "ClientSession", "initialize", _initialize_wrapper),
            # mcp 2.x high-level client: one span across input_required rounds and re-lists;
            # its list_tools can be served from a response cache without reaching the session.
            (client, "Client", "call_tool", _call_tool_wrapper(_client_session)),
            (client, "Client", "list_tools", _list_tools_wrapper(_client_session)),
        ),
    )
