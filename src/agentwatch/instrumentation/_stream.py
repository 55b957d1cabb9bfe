"""The one stream proxy every provider shares.

Streams must behave exactly as without agentwatch: the proxy forwards every
attribute, returns itself from ``__iter__``/``__enter__`` so the span sees each
chunk, and finishes the span exactly once — on exhaustion, error, ``close()``,
context exit, or garbage collection of an abandoned stream. Per-chunk
bookkeeping is guarded: a surprise in a chunk never reaches the user.

The proxy has exactly the protocols of the stream it wraps. A generic object
proxy (wrapt's, in 2.x) defines ``__enter__``/``__aenter__``/``__iter__`` on
every proxy, so ``async with`` a sync stream would fail with AttributeError
instead of TypeError and ``hasattr(s, "__aenter__")`` would lie; so each
proxied stream type gets its own small proxy class (built once, cached) with
only the methods that type has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import _runtime
from ._calls import LLMCall

ChunkHandler = Callable[[LLMCall, Any], None]


class Proxy:
    """Forwards attribute access, ``isinstance`` and ``repr`` to the wrapped object.

    Defines no special methods of its own beyond those: subclasses add the
    protocols the wrapped object has. State lives in ``_self_*`` slots.
    """

    __slots__ = ("__weakref__", "__wrapped__")

    def __init__(self, wrapped: Any) -> None:
        object.__setattr__(self, "__wrapped__", wrapped)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(proxy, openai.Stream) stays true
        return type(self.__wrapped__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_self_") or name == "__wrapped__":
            object.__setattr__(self, name, value)
        else:
            setattr(self.__wrapped__, name, value)

    def __delattr__(self, name: str) -> None:
        if name.startswith("_self_"):
            object.__delattr__(self, name)
        else:
            delattr(self.__wrapped__, name)

    def __dir__(self) -> list[str]:
        return dir(self.__wrapped__)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


class _Base(Proxy):
    __slots__ = ("_self_call", "_self_first", "_self_on_chunk")

    def __new__(cls, wrapped: Any, *args: Any, **kwargs: Any) -> Any:
        # One subclass per (proxy kind, stream type), with that type's protocols only.
        return object.__new__(_variant(cls, type(wrapped)))

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
        try:
            call = self._self_call
        except AttributeError:
            return
        if call is not None and not call.finished:
            call.finish(None)


class StreamProxy(_Base):
    """Wraps a provider's sync stream (``openai.Stream``, ``anthropic.Stream``)."""

    __slots__ = ()

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

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_end(None)


class _SyncContext:
    """``with stream:`` — added only when the wrapped stream is a sync context manager."""

    __slots__ = ()

    def __enter__(self: Any) -> Any:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self: Any, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._self_end(exc)


class AsyncStreamProxy(_Base):
    """Wraps a provider's async stream (``openai.AsyncStream``, ``anthropic.AsyncStream``)."""

    __slots__ = ()

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

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_end(None)


class _AsyncContext:
    """``async with stream:`` — added only when the wrapped stream is an async context manager."""

    __slots__ = ()

    async def __aenter__(self: Any) -> Any:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self: Any, exc_type: Any, exc: BaseException | None, tb: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._self_end(exc)


_VARIANTS: dict[tuple[type, type], type] = {}


def _variant(kind: type, wrapped_type: type) -> type:
    """``kind`` (or a cached subclass of it) with the context protocol ``wrapped_type`` has, if any."""
    key = (kind, wrapped_type)
    found = _VARIANTS.get(key)
    if found is not None:
        return found
    bases: tuple[type, ...] = (kind,)
    if issubclass(kind, StreamProxy) and hasattr(wrapped_type, "__enter__") and hasattr(wrapped_type, "__exit__"):
        bases = (kind, _SyncContext)
    elif issubclass(kind, AsyncStreamProxy) and hasattr(wrapped_type, "__aenter__") and hasattr(
        wrapped_type, "__aexit__"
    ):
        bases = (kind, _AsyncContext)
    found = kind if len(bases) == 1 else type(kind.__name__, bases, {"__slots__": ()})
    if len(_VARIANTS) < 256:
        _VARIANTS[key] = found
    return found


_STREAM_TYPES: dict[type, bool] = {}


def is_stream(result: Any) -> bool:
    """Whether an SDK call returned a stream of events (``Stream``/``AsyncStream`` or a look-alike)."""
    cls = type(result)
    known = _STREAM_TYPES.get(cls)
    if known is None:
        known = cls.__name__ in ("Stream", "AsyncStream") or (
            hasattr(cls, "response") and (hasattr(cls, "__next__") or hasattr(cls, "__anext__"))
        )
        if len(_STREAM_TYPES) < 256:
            _STREAM_TYPES[cls] = known
    return known


def stream_proxy(stream: Any, call: LLMCall, on_chunk: ChunkHandler) -> _Base:
    """The sync or async proxy that fits ``stream``."""
    if hasattr(type(stream), "__anext__"):
        return AsyncStreamProxy(stream, call, on_chunk)
    return StreamProxy(stream, call, on_chunk)
