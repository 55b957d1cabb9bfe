"""Which tool failures are worth another attempt, and the attempt loop.

A failure is retryable when it carries an HTTP status in ``retryable_status``
(the exception's ``status_code``/``status``, or its ``response.status_code``,
read by :func:`agentwatch.classify.status_code`) or is a timeout. agentwatch's
own refusals (``StopRun``), cancellation and the user's other exceptions are
never retried. A write (``side_effect``) is retried only when the call carries
an idempotency key: retrying a write without one is how seed 004's incident
created 34 tickets.

The attempt loop is tenacity's (``Retrying``/``AsyncRetrying``): stop after
``max_attempts``, wait ``backoff_ms`` between attempts, re-raise the last
error unchanged. tenacity is small, pure Python, widely used and maintained,
and its attempt iterator lets each attempt open its own span.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from ..classify import status_code
from ..errors import StopRun
from .settings import RetryPolicy


def is_timeout(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return True
    names = " ".join(c.__name__.lower() for c in type(exc).__mro__[:-2])
    return "timeout" in names or "timedout" in names


def retryable(exc: BaseException, policy: RetryPolicy) -> bool:
    """Whether ``exc`` is a transient failure under ``policy`` (the user's other errors are final)."""
    if isinstance(exc, StopRun) or not isinstance(exc, Exception):
        return False
    code = status_code(exc)
    if code is not None:
        return code in policy.retryable_status
    return getattr(exc, "timed_out", False) is True or is_timeout(exc)


def _wait(policy: RetryPolicy, offset: int) -> Callable[[RetryCallState], float]:
    return lambda state: policy.wait_seconds(state.attempt_number + offset)


def attempts(policy: RetryPolicy, again: Callable[[BaseException], bool], first: int = 1) -> Retrying:
    """The sync attempt iterator from attempt ``first`` on: ``for attempt in attempts(...): with attempt: ...``.

    ``again(exc)`` decides, after each failure, whether another attempt may follow
    (retryable, a write with a key, the breaker still closed). The executor runs the
    first attempt itself and starts this iterator only after a retryable failure, so
    a call that succeeds pays nothing for retries.
    """
    return Retrying(
        stop=stop_after_attempt(policy.max_attempts - first + 1),
        wait=_wait(policy, first - 1),
        retry=retry_if_exception(again),
        reraise=True,
    )


def async_attempts(policy: RetryPolicy, again: Callable[[BaseException], bool], first: int = 1) -> AsyncRetrying:
    return AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts - first + 1),
        wait=_wait(policy, first - 1),
        retry=retry_if_exception(again),
        reraise=True,
    )


def attempt_number(attempt: Any, first: int = 2) -> int:
    """The 1-based attempt number of an iterator started at attempt ``first``."""
    return int(attempt.retry_state.attempt_number) + first - 1
