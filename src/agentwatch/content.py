"""Opt-in content capture: what may leave the process, redacted and truncated.

Content (messages, tool arguments and results) is recorded only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` asks for it. Both the
official GenAI utilities' mode names (``NO_CONTENT``, ``SPAN_ONLY``,
``EVENT_ONLY``, ``SPAN_AND_EVENT``) and the older ``true``/``false`` are
accepted. Whatever is captured has secret-looking keys and token-shaped strings
replaced by ``[REDACTED]`` and is cut to ``max_content_chars``. Request headers
are never recorded.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .hashing import _default
from .semconv import ENV_CAPTURE_CONTENT

REDACTED = "[REDACTED]"

_TOKEN_PATTERNS = re.compile(
    "|".join(
        [
            r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}",  # OpenAI / Anthropic keys
            r"\bBearer\s+[A-Za-z0-9._~+/=\-]{8,}",  # HTTP bearer tokens
            r"\bBasic\s+[A-Za-z0-9+/=]{12,}",
            r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",  # JWTs
            r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub tokens
            r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",  # Slack tokens
            r"\bAKIA[0-9A-Z]{16}\b",  # AWS access key ids
            r"\bAIza[0-9A-Za-z_\-]{30,}",  # Google API keys
        ]
    )
)


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
    """Removes secrets from structured values and text, then truncates."""

    def __init__(self, keys: Iterable[str], max_chars: int) -> None:
        self._keys = tuple(k.lower().replace("-", "_") for k in keys)
        self._max = max_chars

    def _secret_key(self, key: str) -> bool:
        k = key.lower().replace("-", "_")
        return any(k == s or k.endswith("_" + s) or k.startswith(s + "_") for s in self._keys)

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
            return _TOKEN_PATTERNS.sub(REDACTED, value)
        dump = getattr(value, "model_dump", None)
        if callable(dump):
            try:
                return self.scrub(dump(mode="json"), _depth + 1)
            except Exception:
                return repr(value)
        return value

    def text(self, text: str) -> str:
        text = _TOKEN_PATTERNS.sub(REDACTED, text)
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
