"""Every string taken from a trace is hostile: redact secrets, then make it safe for where it is printed."""

from __future__ import annotations

import html
import re
from typing import Any

from ..redaction import redact_text

__all__ = ["clean", "html_text", "md_text"]

MAX_TEXT = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def clean(value: Any, limit: int = MAX_TEXT) -> str:
    """One line of plain text: secrets redacted, control and bidi characters (terminal escapes) replaced, bounded."""
    text = redact_text(str(value))
    text = _CONTROL.sub("\ufffd", text.replace("\r\n", " ").replace("\n", " ").replace("\t", " "))
    return text if len(text) <= limit else text[:limit] + "..."


def md_text(value: Any, limit: int = MAX_TEXT) -> str:
    """:func:`clean`, with Markdown's and HTML's special characters escaped (safe in a table cell)."""
    text = clean(value, limit).replace("&", "&amp;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def html_text(value: Any, limit: int = MAX_TEXT) -> str:
    """:func:`clean`, escaped for HTML text and attribute values."""
    return html.escape(clean(value, limit), quote=True)
