"""The raw-response proxy: calls whose body the caller reads later.

``with_streaming_response.create(...)`` and ``with_raw_response.create(stream=True)``
return the SDK's response object before the body is read (the OpenAI Agents
SDK's ``Runner.run_streamed`` and LangChain's ``include_response_headers``
streaming go this way). The LLM span must stay open until the caller has read
the body, and record the response as it is read:

- ``parse()`` of a stream hands the call to a stream proxy (the span ends with
  the stream); ``parse()`` of a plain body records it and ends the span;
- ``read()``/``text()``/``json()`` of a plain body record it (through the SDK's
  own cached ``parse()``) and end the span;
- ``close()`` (the context manager's exit) and garbage collection end it with
  whatever was read. A body read as raw bytes or lines is not decoded here.
"""

from __future__ import annotations

import inspect
from typing import Any

from .. import _runtime
from ._calls import LLMCall
from ._stream import Proxy, is_stream, stream_proxy


class ResponseProxy(Proxy):
    """Wraps an SDK API response (``APIResponse``, ``LegacyAPIResponse``, async ones too)."""

    __slots__ = ("_self_call", "_self_operation", "_self_provider", "_self_stream", "_self_streamed")

    def __init__(self, wrapped: Any, call: LLMCall, provider: Any, operation: str, streamed: bool) -> None:
        super().__init__(wrapped)
        self._self_call: LLMCall | None = call
        self._self_provider = provider
        self._self_operation = operation
        self._self_streamed = streamed  # the request asked for a stream
        self._self_stream: Any = None

    # ------------------------------------------------------------------ reading the body

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        result = self.__wrapped__.parse(*args, **kwargs)
        if inspect.isawaitable(result):
            return self._self_parse_async(result)
        return self._self_parsed(result)

    async def _self_parse_async(self, pending: Any) -> Any:
        return self._self_parsed(await pending)

    def _self_parsed(self, result: Any) -> Any:
        known = self._self_stream
        if known is not None and known.__wrapped__ is result:  # parse() is cached by the SDK: same proxy
            return known
        call = self._self_call
        if call is None or call.finished:
            return result
        try:
            if is_stream(result):
                proxy = stream_proxy(result, call, self._self_provider.chunk_handler(self._self_operation))
                self._self_call = None
                self._self_stream = proxy
                return proxy
            self._self_provider.read_response(call, self._self_operation, result)
        except Exception as err:
            _runtime.internal_error(f"{self._self_provider.name}.response", err)
        call.finish(None)
        return result

    def read(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_after_body(self.__wrapped__.read(*args, **kwargs))

    def text(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_after_body(self.__wrapped__.text(*args, **kwargs))

    def json(self, *args: Any, **kwargs: Any) -> Any:
        return self._self_after_body(self.__wrapped__.json(*args, **kwargs))

    def _self_after_body(self, result: Any) -> Any:
        if inspect.isawaitable(result):
            return self._self_after_body_async(result)
        if self._self_wants_body():
            try:
                parsed = self.__wrapped__.parse()
            except Exception:  # a body the SDK cannot parse: the call ends with what is known
                self._self_end()
                return result
            if inspect.isawaitable(parsed):  # pragma: no cover - a sync reader with an async parse
                if inspect.iscoroutine(parsed):
                    parsed.close()
                self._self_end()
            else:
                self._self_parsed(parsed)
        return result

    async def _self_after_body_async(self, pending: Any) -> Any:
        result = await pending
        if self._self_wants_body():
            try:
                parsed = self.__wrapped__.parse()
                if inspect.isawaitable(parsed):
                    parsed = await parsed
            except Exception:  # a body the SDK cannot parse: the call ends with what is known
                self._self_end()
                return result
            self._self_parsed(parsed)
        return result

    def _self_wants_body(self) -> bool:
        """A plain (not streamed) body was just read and the call still waits for it."""
        call = self._self_call
        return call is not None and not call.finished and not self._self_streamed

    # ------------------------------------------------------------------ the end

    def close(self, *args: Any, **kwargs: Any) -> Any:
        try:
            result = self.__wrapped__.close(*args, **kwargs)
        except BaseException:
            self._self_end()
            raise
        if inspect.isawaitable(result):
            return self._self_close_async(result)
        self._self_end()
        return result

    async def _self_close_async(self, pending: Any) -> Any:
        try:
            return await pending
        finally:
            self._self_end()

    def _self_end(self) -> None:
        """The body is done with: end the call, or the stream proxy that holds it."""
        call = self._self_call
        self._self_call = None
        if call is not None:
            call.finish(None)
        stream = self._self_stream
        if stream is not None:
            stream._self_end(None)

    def __del__(self) -> None:
        try:
            call = self._self_call
        except AttributeError:
            return
        if call is not None and not call.finished:
            call.finish(None)
