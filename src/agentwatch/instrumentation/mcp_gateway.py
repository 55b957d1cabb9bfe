"""MCP ``call_tool`` through the tool gateway.

An MCP tool that fails usually answers with ``isError`` and a text, not an
exception. The gateway reads that as a failed attempt: the span fails with the
error class the text suggests, the breaker counts it, and it is retried when
the text names a retryable HTTP status ("HTTP 503", "status: 429",
"502 Bad Gateway"). The caller gets the last result exactly as the server sent
it. ``outputSchema`` from the tool listing validates ``structuredContent``; an
``idempotency_key`` is added to the arguments only when the tool's
``inputSchema`` declares one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from .. import semconv as sc
from ..gateway.executor import Gateway, ResultReader, ToolSpec, schema_accepts_key
from ..gateway.idempotency import KEY_ARGUMENT

_PHRASES = "|".join(re.escape(s.phrase) for s in HTTPStatus if s.value >= 400)
# "HTTP 503", "status: 429", "status_code=504" (any case), or a code followed by its
# reason phrase as servers write it ("502 Bad Gateway"; case-sensitive, so "order 503 not
# found" is not a status).
_STATUS_IN_TEXT = re.compile(
    rf"\b(?i:HTTP(?:/\d(?:\.\d)?)?|status(?:[ _]code)?)\s*[:=]?\s*([1-5]\d\d)\b|\b([1-5]\d\d)\s+(?:{_PHRASES})\b"
)
_MAX_SCAN = 2000


def status_in_text(text: str) -> int | None:
    """The HTTP status an error text names, if it names one the usual ways."""
    match = _STATUS_IN_TEXT.search(text[:_MAX_SCAN])
    if match is None:
        return None
    return int(match.group(1) or match.group(2))


class MCPResultReader(ResultReader):
    """Reads ``CallToolResult`` objects (mcp 1.x camelCase and 2.x snake_case fields)."""

    def __init__(
        self,
        field: Callable[..., Any],
        texts: Callable[[Any], list[str]],
        failure_of: Callable[[str], tuple[str, Any, str]],
        finish: Callable[[Any, Any], None],
    ) -> None:
        self._field = field
        self._texts = texts
        self._failure_of = failure_of
        self._finish = finish

    def failure(self, result: Any) -> tuple[tuple[str, Any, str], int | None] | None:
        if self._field(result, "is_error", "isError") is not True:
            return None
        text = "\n".join(self._texts(result)) or "isError"
        return self._failure_of(text), status_in_text(text)

    def value(self, result: Any) -> Any:
        return self._field(result, "structured_content", "structuredContent")

    def finish(self, call: Any, result: Any) -> None:
        self._finish(call, result)


async def call_through_gateway(
    gateway: Gateway,
    reader: MCPResultReader,
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    name: str,
    arguments: Any,
    schema: Any,
    output_schema: Any,
    description: str | None,
    server: str | None,
    side_effect: bool,
) -> Any:
    spec = ToolSpec(
        name, side_effect=side_effect, description=description, schema=schema, output_schema=output_schema,
        accepts_key=schema_accepts_key(schema), tool_type="extension",
        attributes={sc.TOOL_SERVER: server} if server else None,
    )
    plain = arguments if isinstance(arguments, dict) else {}

    async def attempt(key: str | None) -> Any:
        if key is None:
            return await wrapped(*args, **kwargs)
        with_key = {**plain, KEY_ARGUMENT: key}
        if len(args) > 1:
            return await wrapped(args[0], with_key, *args[2:], **kwargs)
        return await wrapped(*args, **{**kwargs, "arguments": with_key})

    return await gateway.call_async(spec, plain, attempt, reader)
