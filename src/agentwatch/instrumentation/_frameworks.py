"""What agent-framework integrations share: when to open a run, runs that outlive a frame, stops.

Nesting rule (every framework): an entry point (``Runner.run``, a graph's
``invoke``) opens a run span unless a run is already current; inside a tool
call it opens a nested run (an agent used as a tool is a sub-agent); otherwise
it joins the current run, so one attempt is one run span.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import context as otel_context
from opentelemetry import trace

from .. import _runtime
from .. import semconv as sc
from ..classify import stop_reason_for
from ..errors import StopRun
from ..runs import Run, current_run
from ..runs import run as open_run
from ..semconv import StopReason


def opens_run() -> bool:
    """Whether a framework entry point should open its own run span.

    Yes outside any run, and inside a tool call (an agent used as a tool is a
    sub-agent: a nested run). No when a run is already current and the call is
    its body (``with agentwatch.run(...)`` around ``Runner.run``, a subgraph
    invoked from a graph node): the calls join that run instead of creating a
    second run span for the same attempt.
    """
    if current_run() is None:
        return True
    attrs = getattr(trace.get_current_span(), "attributes", None) or {}
    return attrs.get(sc.GEN_AI_OPERATION_NAME) == sc.OP_EXECUTE_TOOL


class DetachedRun:
    """A run span for work that outlives the calling frame (streams, background tasks).

    The run is entered in a private copy of the context, so the caller's context
    is untouched; callers enter it (:meth:`entered`) around each piece of work
    and call :meth:`end` exactly once, from anywhere.
    """

    def __init__(self, name: str) -> None:
        self._ctx = contextvars.copy_context()
        self._scope = open_run(name)
        self.run: Run = self._ctx.run(self._scope.__enter__)
        self.context = self._ctx.run(otel_context.get_current)
        self._ended = False

    @contextmanager
    def entered(self) -> Iterator[None]:
        """The run's context is current inside the block, and only there."""
        token = otel_context.attach(self.context)
        try:
            yield
        finally:
            otel_context.detach(token)

    def end(self, exc: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        try:
            stop_for(self.run, exc)
            self._ctx.run(self._scope.__exit__, type(exc) if exc else None, exc, None)
        except Exception as err:
            _runtime.internal_error("run.end", err)


def wrapped_stop(exc: BaseException) -> StopRun | None:
    """agentwatch's own deliberate stop (``BudgetExceeded``...) inside a framework's wrapper exception.

    The Agents SDK re-raises anything from a tool call as ``UserError``; the
    user enforced a budget and catches ``agentwatch.BudgetExceeded``, so the
    run's entry point raises the stop itself.
    """
    if isinstance(exc, StopRun):
        return None
    cause, seen = exc.__cause__, 0
    while cause is not None and seen < 8:
        if isinstance(cause, StopRun):
            return cause
        cause, seen = cause.__cause__, seen + 1
    return None


def stop_for(run: Run, exc: BaseException | None) -> None:
    """Record why a framework run stopped, with the exception's message as the detail."""
    if exc is None or run.stop_reason is not None:
        return
    reason = stop_reason_for(exc)
    if reason is not StopReason.INTERNAL_ERROR:
        run.stop(reason, str(exc)[:200] or None)


def limit_handled(run: Run, detail: str) -> None:
    """The framework hit its own step limit and answered anyway: the run stopped at a step budget."""
    if run.stop_reason is None:
        run.stop(StopReason.STEP_BUDGET, detail[:200])
