"""The one stream proxy every provider shares.

Streams must behave exactly as without agentwatch: the proxy forwards every
attribute, returns itself from ``__iter__``/``__enter__`` so the span sees each
chunk, and finishes the span exactly once — on exhaustion, error, ``close()``,
context exit, or garbage collection of an abandoned stream. Per-chunk
bookkeeping is guarded: a surprise in a chunk never reaches the user.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import wrapt

from .. import _runtime
from ._calls import LLMCall

ChunkHandler = Callable[[LLMCall, Any], None]


class _Base(wrapt.ObjectProxy):  # type: ignore[misc]
    def __init__(self, wrapped: Any, call: LLMCall, on_chunk: ChunkHandler) -> None:
        super().__init__(wrapped)
        self._self_call: LLMCall | None = call
        self._self_on_chunk = on_chunk
        self._self_first = True

    def _self_chunk(self, chunk: Any) -> None:
        call = self._self_call
        if call is None or call.finished:
            return
        try:
            if self._self_first:
                self._self_first = False
                call.time_to_first_chunk = (time.time_ns() - call.start) / 1e9
            self._self_on_chunk(call, chunk)
        except Exception as err:
            _runtime.internal_error("stream.chunk", err)

    def _self_end(self, exc: BaseException | None) -> None:
        call = self._self_call
        if call is not None:
            call.finish(exc)

    def _self_hand_over(self, stream: Any, proxy_type: type[_Base]) -> _Base | None:
        """Give this proxy's call to ``stream`` (rebuilt by an SDK helper); ``None`` if already done."""
        call = self._self_call
        if call is None or call.finished:
            return None
        self._self_call = None
        return proxy_type(stream, call, self._self_on_chunk)

    def __del__(self) -> None:
        call = getattr(self, "_self_call", None)
        if call is not None and not call.finished:
            call.finish(None)


class StreamProxy(_Base):
    """Wraps a provider's sync stream (``openai.Stream``, ``anthropic.Stream``)."""

    def __iter__(self) -> StreamProxy:
        return self

    def __next__(self) -> Any:
        try:
            chunk = self.__wrapped__.__next__()
        except StopIteration:
            self._self_end(None)
            raise
        except BaseException as exc:
            self._self_end(exc)
            raise
        self._self_chunk(chunk)
        return chunk

    def __enter__(self) -> StreamProxy:
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__exit__", None)
            return exit_(exc_type, exc, tb) if exit_ is not None else None
        finally:
            self._self_end(exc)

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_end(None)


class AsyncStreamProxy(_Base):
    """Wraps a provider's async stream (``openai.AsyncStream``, ``anthropic.AsyncStream``)."""

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_end(None)
            raise
        except BaseException as exc:
            self._self_end(exc)
            raise
        self._self_chunk(chunk)
        return chunk

    async def __aenter__(self) -> AsyncStreamProxy:
        enter = getattr(self.__wrapped__, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__aexit__", None)
            return await exit_(exc_type, exc, tb) if exit_ is not None else None
        finally:
            self._self_end(exc)

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_end(None)
