"""Exception → tool error class and run stop reason."""

from __future__ import annotations

import asyncio

import pytest

from agentwatch.classify import error_class, error_type, stop_reason_for
from agentwatch.errors import BudgetExceeded, LoopDetected, ToolDenied
from agentwatch.semconv import ErrorClass, StopReason


class Resp:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class HTTPStatusError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.response = Resp(status)


class ReadTimeout(Exception):
    pass


class SchemaValidationError(Exception):
    pass


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (HTTPStatusError(429), ErrorClass.RATE_LIMIT),
        (HTTPStatusError(401), ErrorClass.AUTH),
        (HTTPStatusError(504), ErrorClass.TIMEOUT),
        (HTTPStatusError(500), ErrorClass.ERROR),
        (ReadTimeout(), ErrorClass.TIMEOUT),
        (asyncio.TimeoutError(), ErrorClass.TIMEOUT),
        (SchemaValidationError(), ErrorClass.OUTPUT_INVALID),
        (ToolDenied("no"), ErrorClass.DENIED),
        (RuntimeError(), ErrorClass.ERROR),
    ],
)
def test_error_class(exc: BaseException, cls: ErrorClass) -> None:
    assert error_class(exc) is cls


def test_stop_reasons() -> None:
    assert stop_reason_for(BudgetExceeded("x", stop_reason="cost_budget")) is StopReason.COST_BUDGET
    assert stop_reason_for(LoopDetected("x")) is StopReason.LOOP_DETECTED
    assert stop_reason_for(asyncio.CancelledError()) is StopReason.CANCELLED
    assert stop_reason_for(ValueError()) is StopReason.INTERNAL_ERROR


def test_error_type_names() -> None:
    assert error_type(ValueError()) == "ValueError"
    assert error_type(HTTPStatusError(1)).endswith("HTTPStatusError")
