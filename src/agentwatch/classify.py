"""Map exceptions to the contract's tool error classes and run stop reasons.

Seed 004's lesson: if everything is "Error", on-call has no idea what to do.
Classification looks at HTTP status codes first (``status_code``/``status`` on
the exception or its ``response``), then at well-known exception types, then
at class names, so it works for any client library without importing them.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from .errors import StopRun
from .semconv import ErrorClass, StopReason

_STOP_ATTR = "_agentwatch_stop_reason"

_TOOL_STOP = {
    ErrorClass.TIMEOUT: StopReason.TOOL_TIMEOUT,
    ErrorClass.RATE_LIMIT: StopReason.TOOL_RATE_LIMIT,
    ErrorClass.AUTH: StopReason.TOOL_AUTH_FAILED,
    ErrorClass.OUTPUT_INVALID: StopReason.TOOL_OUTPUT_INVALID,
    ErrorClass.DENIED: StopReason.TOOL_DENIED,
    ErrorClass.CIRCUIT_OPEN: StopReason.CIRCUIT_OPEN,
    ErrorClass.ERROR: StopReason.TOOL_ERROR,
}


def status_code(exc: BaseException) -> int | None:
    for candidate in (exc, getattr(exc, "response", None)):
        for attr in ("status_code", "status", "code", "http_status"):
            value = getattr(candidate, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
                return value
    return None


def error_type(exc: BaseException) -> str:
    """``error.type``: the exception's qualified class name (GenAI convention)."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"


def error_class(exc: BaseException) -> ErrorClass:
    """``agentwatch.tool.error_class`` for a failed tool call."""
    if isinstance(exc, StopRun):
        if exc.stop_reason is StopReason.TOOL_DENIED:
            return ErrorClass.DENIED
        if exc.stop_reason is StopReason.CIRCUIT_OPEN:
            return ErrorClass.CIRCUIT_OPEN
        if exc.stop_reason is StopReason.TOOL_OUTPUT_INVALID:
            return ErrorClass.OUTPUT_INVALID
    code = status_code(exc)
    if code is not None:
        if code == 429:
            return ErrorClass.RATE_LIMIT
        if code in (401, 403, 407):
            return ErrorClass.AUTH
        if code in (408, 504):
            return ErrorClass.TIMEOUT
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return ErrorClass.TIMEOUT
    if isinstance(exc, json.JSONDecodeError):
        return ErrorClass.OUTPUT_INVALID
    names = " ".join(c.__name__.lower() for c in type(exc).__mro__[:-2])
    if "timeout" in names or "timedout" in names:
        return ErrorClass.TIMEOUT
    if "ratelimit" in names or "toomanyrequests" in names:
        return ErrorClass.RATE_LIMIT
    if any(k in names for k in ("auth", "unauthorized", "forbidden", "permissiondenied", "credential")):
        return ErrorClass.AUTH
    if "denied" in names:
        return ErrorClass.DENIED
    if any(k in names for k in ("validation", "outputinvalid", "schema", "decodeerror")):
        return ErrorClass.OUTPUT_INVALID
    return ErrorClass.ERROR


def mark(exc: BaseException, reason: StopReason) -> None:
    """Remember where an exception came from (a tool or an LLM call) for the run's stop reason."""
    try:
        if getattr(exc, _STOP_ATTR, None) is None:
            setattr(exc, _STOP_ATTR, reason)
    except (AttributeError, TypeError):  # exceptions with __slots__ cannot be marked
        pass


def tool_stop_reason(cls: ErrorClass) -> StopReason:
    return _TOOL_STOP[cls]


# Framework exceptions that end a run and say more than "it raised" (matched by class name,
# so no framework needs importing).
_NAMED = {
    "MaxTurnsExceeded": StopReason.STEP_BUDGET,  # OpenAI Agents SDK
    "GraphRecursionError": StopReason.STEP_BUDGET,  # LangGraph's recursion_limit
    "InputGuardrailTripwireTriggered": StopReason.INVALID_INPUT,  # OpenAI Agents SDK
}


def stop_reason_for(exc: BaseException) -> StopReason:
    """The stop reason of a run that ended with ``exc`` propagating out of it.

    Frameworks wrap a tool's exception in their own (the Agents SDK raises
    ``UserError`` from it), so an unclassified exception defers to its cause.
    """
    reason = _stop_reason(exc)
    cause, seen = exc.__cause__, 0
    while reason is StopReason.INTERNAL_ERROR and cause is not None and seen < 8:
        reason = _stop_reason(cause)
        cause, seen = cause.__cause__, seen + 1
    return reason


def _stop_reason(exc: BaseException) -> StopReason:
    if isinstance(exc, StopRun):
        return exc.stop_reason
    marked: Any = getattr(exc, _STOP_ATTR, None)
    if marked is not None:
        return StopReason(marked)
    named = _NAMED.get(type(exc).__name__)
    if named is not None:
        return named
    if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt)):
        return StopReason.CANCELLED
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return StopReason.TOOL_TIMEOUT
    return StopReason.INTERNAL_ERROR
