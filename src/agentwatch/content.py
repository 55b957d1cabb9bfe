"""Opt-in content capture: what may leave the process, redacted and truncated.

Content (messages, tool arguments and results) is recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for it. Both the
official GenAI utilities' mode names (``NO_CONTENT``, ``SPAN_ONLY``,
``EVENT_ONLY``, ``SPAN_AND_EVENT``) and the older ``true``/``false`` are
accepted. Whatever is captured has the values under secret-looking keys (the
built-in ones plus ``agent.logging.redact``) and every secret-shaped string
(see :mod:`agentwatch.redaction`) replaced by ``[REDACTED]``, and is cut to
``max_content_chars``. Request headers are never recorded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .hashing import _default
from .redaction import BUILTIN_REDACT_KEYS, is_secret_key, normalise_key, redact_text
from .redaction import REDACTED as _REDACTED
from .semconv import ENV_CAPTURE_CONTENT

REDACTED = _REDACTED
"""What a secret is replaced with (re-exported from :mod:`agentwatch.redaction`)."""


@dataclass(frozen=True)
class CaptureMode:
    on_span: bool
    as_event: bool

    @property
    def enabled(self) -> bool:
        return self.on_span or self.as_event


NO_CAPTURE = CaptureMode(False, False)
_MODES = {
    "no_content": NO_CAPTURE,
    "false": NO_CAPTURE,
    "0": NO_CAPTURE,
    "": NO_CAPTURE,
    "span_only": CaptureMode(True, False),
    "true": CaptureMode(True, False),
    "1": CaptureMode(True, False),
    "event_only": CaptureMode(False, True),
    "span_and_event": CaptureMode(True, True),
}
_last: tuple[str | None, CaptureMode] = (None, NO_CAPTURE)


def capture_mode() -> CaptureMode:
    """Read the switch on every call (cheap; cached by value) so tests and operators can flip it."""
    global _last
    raw = os.environ.get(ENV_CAPTURE_CONTENT)
    if raw == _last[0]:
        return _last[1]
    mode = _MODES.get((raw or "").strip().lower(), NO_CAPTURE)
    _last = (raw, mode)
    return mode


class Redactor:
    """Removes secrets from structured values and text, then truncates.

    ``keys`` add to :data:`~agentwatch.redaction.BUILTIN_REDACT_KEYS`; they never replace them.
    """

    def __init__(self, keys: Iterable[str], max_chars: int) -> None:
        self._keys = tuple(dict.fromkeys((*BUILTIN_REDACT_KEYS, *(normalise_key(k) for k in keys))))
        self._max = max_chars

    def _secret_key(self, key: str) -> bool:
        return is_secret_key(key, self._keys)

    def scrub(self, value: Any, _depth: int = 0) -> Any:
        """A copy of ``value`` with values under secret-looking keys replaced."""
        if _depth > 32:
            return "[DEPTH LIMIT]"
        if isinstance(value, dict):
            return {
                k: (REDACTED if isinstance(k, str) and self._secret_key(k) else self.scrub(v, _depth + 1))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.scrub(v, _depth + 1) for v in value]
        if isinstance(value, str):
            return redact_text(value)
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            try:
                return self.scrub(dump(mode="json"), _depth + 1)
            except Exception:
                return repr(value)
        return value

    def text(self, text: str) -> str:
        text = redact_text(text)
        if len(text) > self._max:
            cut = len(text) - self._max
            text = f"{text[: self._max]}…[truncated {cut} chars]"
        return text

    def render_messages(self, messages: list[Any]) -> str:
        """JSON of a message list that stays valid JSON however long the conversation.

        Each string is redacted and cut to ``max_content_chars``; when the whole is
        still over eight times that, the oldest messages give way to a marker.
        """
        scrubbed = [self._cut(self.scrub(m)) for m in messages]
        budget = self._max * 8
        dropped = 0
        while True:
            kept = scrubbed[dropped:]
            if dropped:
                kept = [{"role": "system", "parts": [{"type": "text",
                                                      "content": f"[{dropped} earlier messages truncated]"}]},
                        *kept]
            text = json.dumps(kept, ensure_ascii=False, default=_default)
            if len(text) <= budget or dropped >= len(scrubbed) - 1:
                return text
            dropped += 1

    def _cut(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self._cut(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._cut(v) for v in value]
        return value

    def render(self, value: Any) -> str:
        """Redacted, truncated JSON text of ``value`` for a span attribute."""
        if isinstance(value, str):
            return self.text(value)
        try:
            text = json.dumps(self.scrub(value), ensure_ascii=False, default=_default)
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
        return self.text(text)
