"""Patching at the one choke point of Stainless-generated clients (openai, anthropic).

Every method of these SDKs — ``create``, the ``.stream()`` helpers, ``parse``,
``with_raw_response`` — ends in ``SyncAPIClient.request`` /
``AsyncAPIClient.request``. Wrapping there covers them all with one wrapper
per client class, and retries happen inside it, so one logical call is one
span. A provider module supplies a :class:`Provider`: which paths are LLM
operations, how to read the request body, the response and stream chunks.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Protocol

import wrapt
from opentelemetry import trace
from opentelemetry.instrumentation.utils import unwrap

from .. import _runtime
from .. import semconv as sc
from ..content import capture_mode
from ..forensics import replay_hook
from ..runs import current_run
from ._calls import LLMCall, RequestInfo, active, start_llm
from ._response import ResponseProxy
from ._stream import AsyncStreamProxy, StreamProxy, is_stream


def numeric_params(body: dict[str, Any], names: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """``gen_ai.request.*`` attributes for the numeric request parameters present in ``body``."""
    attrs: dict[str, Any] = {}
    for key, attr in names:
        value = body.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attrs[attr] = value
    return attrs


class Provider(Protocol):
    name: str  # gen_ai.provider.name

    def route(self, method: str, path: str) -> str | None:
        """The GenAI operation for an endpoint, or ``None`` to pass the call through untouched."""

    def read_request(self, operation: str, body: dict[str, Any], deep: bool, capture: bool) -> RequestInfo:
        """``deep``: also read the messages (system/user text, new input); only runs and
        content capture need them, so a bare call skips the walk. ``capture``: also
        convert them to the GenAI message shape for captured content."""

    def read_response(self, call: LLMCall, operation: str, response: Any) -> None: ...

    def chunk_handler(self, operation: str) -> Any:
        """A fresh ``(call, chunk) -> None`` accumulator for one stream."""


_DEFAULT_PORTS = {"https": 443, "http": 80}
_SERVERS: dict[int, tuple[Any, tuple[str | None, int | None]]] = {}


def _server(client: Any) -> tuple[str | None, int | None]:
    """``server.address``/``server.port`` of a client, remembered per base URL object."""
    try:
        # The SDK keeps the parsed URL in ``_base_url``; the public property re-checks it on every read.
        url = getattr(client, "_base_url", None) or client.base_url
        cached = _SERVERS.get(id(url))
        if cached is not None and cached[0] is url:
            return cached[1]
        # The URL omits a scheme's default port; the conventions want it whenever the address is set.
        found = (url.host or None, url.port or _DEFAULT_PORTS.get(url.scheme))
        if len(_SERVERS) > 256:
            _SERVERS.clear()
        _SERVERS[id(url)] = (url, found)
        return found
    except Exception:
        return None, None


_ROUTES: dict[tuple[str, str, str], str | None] = {}


def _route(provider: Provider, options: Any) -> str | None:
    """The provider's operation for a request, remembered per (method, path): routing runs on every call."""
    method, path = str(getattr(options, "method", "post")), str(options.url)
    key = (provider.name, method, path)
    try:
        return _ROUTES[key]
    except KeyError:
        pass
    operation = provider.route(method, path)
    if len(_ROUTES) < 1024:
        _ROUTES[key] = operation
    return operation


def _implicit_run(body: dict[str, Any]) -> Any:
    """The implicit run (contract §8) of a call made outside any run; ``None`` when switched off."""
    try:
        table = _runtime.get().implicit
        return table.for_request(body) if table is not None else None
    except Exception as err:  # the call goes on, outside any run
        _runtime.internal_error("implicit.request", err)
        return None


def _prepare(provider: Provider, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Route and start the call; ``None`` means pass through. Deliberate stops propagate."""
    options = args[1] if len(args) > 1 else kwargs.get("options")
    if options is None:
        return None
    try:
        operation = _route(provider, options)
        if operation is None:
            return None
        body = getattr(options, "json_data", None)
        if type(body) is not dict:
            body = body if isinstance(body, dict) else {}
        capture = capture_mode()
        run = current_run()
        if run is None and operation != sc.OP_EMBEDDINGS:  # embeddings hold no conversation
            run = _implicit_run(body)
        info = provider.read_request(operation, body, capture.enabled or run is not None, capture.enabled)
        headers = getattr(options, "headers", None)
        raw_mode = headers.get("X-Stainless-Raw-Response") if isinstance(headers, dict) and headers else None
        streamed = body.get("stream") is True
    except Exception as err:
        _runtime.internal_error(f"{provider.name}.request", err)
        return None
    call = start_llm(provider.name, info, server=_server(client), capture=capture, run=run)
    if call is None:
        return None
    return call, operation, raw_mode, streamed


_TRACED_OPTIONS: dict[type, bool] = {}


def _sdk_records(client: Any) -> bool:
    """Whether the client's own tracer could record a span (copying options is wasted otherwise)."""
    tracer = getattr(client, "_tracer", None)
    if tracer is None or isinstance(tracer, trace.NoOpTracer):
        return False
    # A proxy tracer records only once a global SDK provider is set.
    unset = isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return not (isinstance(tracer, trace.ProxyTracer) and unset)


def _quiet_sdk_span(
    client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The request's arguments with the SDK's own span turned off for this one call.

    anthropic >= 2 traces itself: its ``request`` opens an ``anthropic.messages.create``
    span for every call whose options name one, and does not honour OpenTelemetry's
    suppression key. When agentwatch (or an outer instrumentation) already has the LLM
    span of the call, the SDK's would be a second one, so the call gets a copy of its
    options without the span name, which is the SDK's per-call switch. The client's
    ``open_telemetry`` option and ``ANTHROPIC_OPEN_TELEMETRY`` are left as they are.
    """
    try:
        positional = len(args) > 1
        options: Any = args[1] if positional else kwargs.get("options")
        cls = type(options)
        traced = _TRACED_OPTIONS.get(cls)
        if traced is None:  # asked once per class: a missing pydantic field is slow to ask for
            traced = _TRACED_OPTIONS[cls] = "span_name" in (getattr(cls, "model_fields", None) or {})
        if traced and options.span_name and _sdk_records(client):
            quiet = options.model_copy(update={"span_name": None})
            if positional:
                return (args[0], quiet, *args[2:]), kwargs
            return args, {**kwargs, "options": quiet}
    except Exception as err:
        _runtime.internal_error("sdk_span.quiet", err)
    return args, kwargs


def _after(
    provider: Provider, call: LLMCall, operation: str, raw_mode: Any, streamed: bool, result: Any, is_async: bool
) -> Any:
    """Record a returned value; wrap streams. Returns what the user receives."""
    call.detach()
    try:
        # with_streaming_response, or with_raw_response of a stream: the body is still
        # unread; the span records it as the caller reads it and ends when it is done.
        if raw_mode == "stream" or (raw_mode and (streamed or getattr(result, "_stream", False))):
            return ResponseProxy(result, call, provider, operation, streamed)
        if raw_mode:  # with_raw_response ("true"/"raw") of a plain body: parse() is cached, reading it is harmless
            parsed = result.parse()
            if inspect.isawaitable(parsed):  # an async response parses when the caller awaits it
                if inspect.iscoroutine(parsed):
                    parsed.close()
                return ResponseProxy(result, call, provider, operation, streamed)
            provider.read_response(call, operation, parsed)
            call.finish(None)
            return result
        if is_stream(result):
            handler = provider.chunk_handler(operation)
            return AsyncStreamProxy(result, call, handler) if is_async else StreamProxy(result, call, handler)
        provider.read_response(call, operation, result)
    except Exception as err:
        _runtime.internal_error(f"{provider.name}.response", err)
    call.finish(None)
    return result


def _replayed(provider: Provider, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
    """Inside ``agentwatch.replay()``: an LLM request goes to the replay's local server (see forensics.replay)."""
    options = args[1] if len(args) > 1 else kwargs.get("options")
    if options is None or _route(provider, options) is None:
        return args, kwargs
    return replay_hook.ACTIVE.llm_request(provider.name, args, kwargs)  # type: ignore[no-any-return]


def _sync_wrapper(provider: Provider) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not active():
            if _runtime.enabled():  # suppressed by an outer instrumentation: the SDK's span too
                args, kwargs = _quiet_sdk_span(instance, args, kwargs)
            return wrapped(*args, **kwargs)
        if replay_hook.ACTIVE is not None:
            args, kwargs = _replayed(provider, args, kwargs)
        prepared = _prepare(provider, instance, args, kwargs)
        if prepared is None:
            return wrapped(*args, **kwargs)
        call, operation, raw_mode, streamed = prepared
        args, kwargs = _quiet_sdk_span(instance, args, kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            raise
        return _after(provider, call, operation, raw_mode, streamed, result, False)

    return wrapper


def _async_wrapper(provider: Provider) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not active():
            if _runtime.enabled():  # suppressed by an outer instrumentation: the SDK's span too
                args, kwargs = _quiet_sdk_span(instance, args, kwargs)
            return await wrapped(*args, **kwargs)
        if replay_hook.ACTIVE is not None:
            args, kwargs = _replayed(provider, args, kwargs)
        prepared = _prepare(provider, instance, args, kwargs)
        if prepared is None:
            return await wrapped(*args, **kwargs)
        call, operation, raw_mode, streamed = prepared
        args, kwargs = _quiet_sdk_span(instance, args, kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.finish(exc)
            raise
        return _after(provider, call, operation, raw_mode, streamed, result, True)

    return wrapper


class StainlessPatch:
    """Installs and removes the wrappers on one SDK's base client module."""

    def __init__(self, module: str, provider: Provider) -> None:
        self.module = module
        self.provider = provider
        self.installed = False
        self._shadows: list[type] = []

    def available(self) -> bool:
        try:
            importlib.import_module(self.module)
        except Exception:
            return False
        return True

    def install(self) -> None:
        if self.installed or not self.available():
            return
        mod = importlib.import_module(self.module)
        for base, wrapper in (
            (mod.SyncAPIClient, _sync_wrapper(self.provider)),
            (mod.AsyncAPIClient, _async_wrapper(self.provider)),
        ):
            wrapt.wrap_function_wrapper(base, "request", wrapper)
            # Another instrumentation (OpenInference) may have set ``request`` on a
            # subclass, hiding the base method: wrap those too. Ours is then outer and
            # its suppression key keeps theirs quiet, so a call is still one span.
            for cls in _shadowing_subclasses(base):
                wrapt.wrap_function_wrapper(cls, "request", wrapper)
                self._shadows.append(cls)
        self.installed = True

    def uninstall(self) -> None:
        if not self.installed:
            return
        mod = importlib.import_module(self.module)
        for cls in self._shadows:
            unwrap(cls, "request")
        self._shadows = []
        unwrap(mod.SyncAPIClient, "request")
        unwrap(mod.AsyncAPIClient, "request")
        self.installed = False


def _shadowing_subclasses(base: type) -> list[type]:
    """Subclasses of ``base`` that define their own ``request``."""
    found: list[type] = []
    stack: list[type] = list(base.__subclasses__())
    seen: set[type] = set()
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if "request" in vars(cls):
            found.append(cls)
        stack.extend(cls.__subclasses__())
    return found
