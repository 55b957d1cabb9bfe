"""Per-tool deadlines.

An async tool is cancelled at its deadline (``asyncio.wait_for``). A sync tool
runs in a helper thread and the caller gets ``ToolTimeout`` (a ``TimeoutError``)
at the deadline; Python cannot stop a thread, so the abandoned work runs on in
that daemon thread until it returns by itself, and its result is discarded.
Tools with side effects should therefore also have an idempotency key. No
thread is used when the tool has no timeout configured.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any


class ToolTimeout(TimeoutError):
    """A tool did not finish within its configured ``timeouts_s``."""

    def __init__(self, tool: str, seconds: float) -> None:
        super().__init__(f"tool {tool} did not finish within {seconds:g} s")
        self.tool = tool
        self.seconds = seconds


def call_sync(tool: str, seconds: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)`` with a deadline; the caller's context (OTel span, run) goes along."""
    ctx = contextvars.copy_context()
    done = threading.Event()
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = ctx.run(func, *args, **kwargs)
        except BaseException as exc:  # handed to the caller unchanged
            box["error"] = exc
        finally:
            done.set()

    worker = threading.Thread(target=work, name=f"agentwatch-tool:{tool}"[:60], daemon=True)
    worker.start()
    if not done.wait(seconds):
        raise ToolTimeout(tool, seconds)
    if "error" in box:
        raise box["error"]
    return box["result"]


async def call_async(tool: str, seconds: float, awaitable: Awaitable[Any]) -> Any:
    """Await with a deadline; the tool's task is cancelled when it passes."""
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError as exc:
        if isinstance(exc, ToolTimeout):
            raise
        raise ToolTimeout(tool, seconds) from None
