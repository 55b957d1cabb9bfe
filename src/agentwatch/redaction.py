"""The one redaction boundary: what a secret looks like, and how text loses it.

Every string agentwatch derives from user, model, tool or provider content and
writes into an attribute, an event, a log record or a metric label passes
:func:`redact_text` first, whatever the content-capture mode: captured content
(via :class:`agentwatch.content.Redactor`), anomaly reasons, span status
descriptions, exception events (message *and* stack trace), run stop details
and agentwatch's own error log lines. Entity extraction asks
:func:`looks_secret` and :func:`is_secret_key` so a credential is never
recorded as an id.

What counts as a secret:

* vendor token shapes: OpenAI/Anthropic/DeepSeek ``sk-…``, GitHub ``ghp_``/
  ``gho_``/``ghu_``/``ghs_``/``ghr_``/``github_pat_``, GitLab ``glpat-``, Slack
  ``xox?-``/``xapp-``, Stripe ``sk_live_``/``rk_live_``/``whsec_``, Google
  ``AIza…`` and ``ya29.``, Hugging Face ``hf_``, npm ``npm_``, SendGrid
  ``SG.x.y``, AWS key ids (``AKIA``/``ASIA`` and the other IAM prefixes),
  JWTs, PEM private-key blocks (to the end of the text when the END line is
  missing);
* HTTP credentials: ``Bearer``/``bearer``/``Basic`` values, ``user:pass@`` in
  URLs;
* a value after a credential-shaped name in prose, JSON text, ``repr`` output
  or a query string: ``password=…``, ``"api_key": "…"``, ``?token=…``,
  ``aws_secret_access_key = …``, ``AccountKey=…``, ``sig=…``, ``API key
  provided: …``, ``my password is …``, ``with password …``.

Every pattern is linear: quantifiers are bounded or possessive, nothing is
nested, and each one starts at a boundary of its own character class, so two
attempts never rescan the same run of characters (a 1 MB adversarial string
takes milliseconds, see the tests). Text with no secret in it costs one regex
scan and comes back as the same object.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable
from typing import Any

from opentelemetry.trace import Span, Status, StatusCode

__all__ = [
    "BUILTIN_REDACT_KEYS",
    "REDACTED",
    "exception_attributes",
    "is_secret_key",
    "looks_secret",
    "normalise_key",
    "record_error",
    "redact_text",
    "set_error_status",
]

REDACTED = "[REDACTED]"

BUILTIN_REDACT_KEYS: tuple[str, ...] = (
    "authorization", "proxy_authorization", "cookie", "set_cookie", "token", "api_key", "apikey",
    "x_api_key", "password", "passwd", "passphrase", "pwd", "secret", "credential", "credentials",
    "private_key", "access_key", "secret_key", "account_key", "session_token",
    "client_secret", "signature",
)
"""Keys whose values are always redacted; ``agent.logging.redact`` adds to these, never removes one."""

MAX_STATUS_CHARS = 512
MAX_TRACE_CHARS = 16_384

# ---------------------------------------------------------------------------- token shapes
# Each alternative starts with its literal (so the engine skips ahead to candidate characters)
# and checks the boundary before it with a fixed-width look-behind over that literal.


def _shape(literal: str, rest: str, before: str = "A-Za-z0-9_\\-") -> str:
    return f"{re.escape(literal)}(?<![{before}].{{{len(literal)}}}){rest}"


_SHAPES: tuple[str, ...] = (
    # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-), DeepSeek and the like
    _shape("sk-", r"[A-Za-z0-9_\-]{16,}+"),
    # Stripe secret, restricted and publishable keys, webhook secrets
    *(_shape(f"{k}_{m}_", r"[A-Za-z0-9]{10,}+", "A-Za-z0-9_") for k in ("sk", "rk", "pk") for m in ("live", "test")),
    _shape("whsec_", r"[A-Za-z0-9]{16,}+", "A-Za-z0-9_"),
    # GitHub, GitLab
    *(_shape(f"gh{c}_", r"[A-Za-z0-9]{20,}+", "A-Za-z0-9_") for c in "pousr"),
    _shape("github_pat_", r"[A-Za-z0-9_]{20,}+", "A-Za-z0-9_"),
    _shape("glpat-", r"[A-Za-z0-9_\-]{16,}+"),
    # Slack
    *(_shape(f"xox{c}-", r"[A-Za-z0-9\-]{10,}+") for c in "abposre"),
    _shape("xapp-", r"[A-Za-z0-9\-]{10,}+"),
    # Google API keys and OAuth access tokens
    _shape("AIza", r"[0-9A-Za-z_\-]{30,}+"),
    _shape("ya29.", r"[0-9A-Za-z_\-]{20,}+"),
    # Hugging Face, npm, SendGrid
    _shape("hf_", r"[A-Za-z0-9]{30,}+", "A-Za-z0-9_"),
    _shape("npm_", r"[A-Za-z0-9]{36,}+", "A-Za-z0-9_"),
    _shape("SG.", r"[A-Za-z0-9_\-]{16,}+\.[A-Za-z0-9_\-]{16,}+"),
    # AWS access key ids: long-lived (AKIA), temporary (ASIA) and the other IAM unique-id prefixes
    *(
        _shape(p, r"[A-Z0-9]{16}(?![A-Za-z0-9])", "A-Za-z0-9")
        for p in ("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA")
    ),
    # JWTs: three base64url segments, the first a JSON header
    _shape("eyJ", r"[A-Za-z0-9_\-]{8,}+\.[A-Za-z0-9_\-]{4,}+\.[A-Za-z0-9_\-]{4,}+"),
    # HTTP authorization values
    *(_shape(b, r"[ \t]{1,4}+[A-Za-z0-9._~+/=\-]{8,}+", "A-Za-z0-9") for b in ("Bearer", "bearer", "BEARER")),
    _shape("Basic", r"[ \t]{1,4}+[A-Za-z0-9+/=]{12,}+", "A-Za-z0-9"),
    # credentials in a URL: scheme://user:pass@host (the "://" is kept, see _replace)
    r"://[^\s/@:]{1,256}+:[^\s/@]{1,256}+@",
    # PEM private keys: the block, or everything after an unterminated BEGIN line
    r"-----BEGIN [A-Z0-9 ]{0,32}?PRIVATE KEY(?: BLOCK)?-----(?:(?!-----END)[\s\S])*+"
    r"(?:-----END [A-Z0-9 ]{0,32}?PRIVATE KEY(?: BLOCK)?-----)?",
)
_SECRET = re.compile("|".join(_SHAPES))
_search = _SECRET.search


def _replace(m: re.Match[str]) -> str:
    text = m.group()
    if text.startswith("://"):  # URL userinfo: keep the scheme and host readable
        return "://" + REDACTED + "@"
    return REDACTED


# ---------------------------------------------------------------------------- name = value
# Matched on the lower-cased text, so every alternative starts with a plain literal and the
# engine skips ahead to candidate characters; the offsets are those of the original text.
_KEY_KINDS = ("api", "access", "private", "secret", "account", "signing", "encryption", "master", "license")
_NAME = "|".join(
    [
        "password", "passwd", "passphrase", "pwd", "secret", "token", "signature", "sig", "credentials?",
        "authorization", "auth", "cookie",
        *(rf"{kind}[ _.\-]?key" for kind in _KEY_KINDS),  # "key" alone is too common a word
    ]
)
# the value: a quoted string (its quotes kept: JSON stays JSON), else one run of non-separators;
# an HTTP auth scheme may come first
_VALUE = (
    r"(?:(?:bearer|basic|token|digest)[ \t]{1,4}+)?"
    r"(?:\"(?P<dq>[^\"\n]{1,1024}+)\"|'(?P<sq>[^'\n]{1,1024}+)'|[\"']?(?P<v>[^\s\"'&;,<>()\[\]{}]{1,}+))"
)
_KV = re.compile(
    "|".join(
        [
            # name, an optional closing quote, then "=" or ":", or "is"/"was"/"provided" (prose), then the value
            rf"(?:{_NAME})(?![a-z0-9])[\"']?[ \t]{{0,4}}+"
            r"(?:[=:]|(?<=[ \t])(?:is|was|provided)(?![a-z])[ \t]{0,4}+[=:]?+)[ \t]{0,4}+" + _VALUE,
            # "with password hunter2": a password word may be followed by the value alone
            r"(?:password|passwd|passphrase|pwd)[ \t]{1,4}+(?!(?:is|was|for|of|to|and|or|the|a|an)\b)"
            r"(?P<pw>[^\s\"'&;,<>()\[\]{}]{2,}+)",
        ]
    )
)
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_NAME_WORDS = (
    "password", "passwd", "passphrase", "pwd", "secret", "token", "signature", "sig", "credential",
    "authorization", "auth", "cookie", "key",
)
_PREFILTER_TRIES = 32


def _names_in(low: str) -> bool:
    """Whether a credential name may be in ``low``: a few ``str.find`` calls, so clean text skips the regex.

    An occurrence counts when no letter or digit follows it (``tokens`` and ``author`` do not);
    after a few dozen that do not count, the regex decides.
    """
    for word in _NAME_WORDS:
        i = low.find(word)
        tries = 0
        while i >= 0:
            end = i + len(word)
            if end >= len(low) or not low[end].isalnum() or (word == "credential" and low[end] == "s"):
                return True
            tries += 1
            if tries >= _PREFILTER_TRIES:
                return True
            i = low.find(word, end)
    return False


def _credential_values(text: str) -> list[tuple[int, int]]:
    """Spans of the values that follow a credential-shaped name in ``text``."""
    low = text.lower()
    if len(low) != len(text):  # a few non-ASCII letters lower to two characters: keep offsets aligned
        low = text.translate(_ASCII_LOWER)
    spans: list[tuple[int, int]] = []
    if not _names_in(low):
        return spans
    for m in _KV.finditer(low):
        group = m.lastgroup
        if group is None:
            continue
        start, end = m.span(group)
        if text[start:end] != REDACTED:
            spans.append((start, end))
    return spans


def redact_text(text: str) -> str:
    """``text`` with every secret replaced by ``[REDACTED]`` (the same object when there is none)."""
    if _search(text) is not None:
        text = _SECRET.sub(_replace, text)
    spans = _credential_values(text)
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    for start, end in spans:
        out.append(text[pos:start])
        out.append(REDACTED)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def looks_secret(text: str) -> bool:
    """Whether ``text`` contains a secret-shaped token (vendor key, JWT, AWS key id...)."""
    return _search(text) is not None


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def normalise_key(key: str) -> str:
    """``X-Api-Key`` / ``SecretAccessKey`` / ``api key`` -> ``x_api_key`` / ``secret_access_key`` / ``api_key``."""
    return _CAMEL.sub("_", key.strip()).lower().replace("-", "_").replace(" ", "_").replace(".", "_")


def is_secret_key(key: str, keys: Iterable[str] = BUILTIN_REDACT_KEYS) -> bool:
    """Whether a mapping key names a credential: one of ``keys``, or a name that starts or ends with one."""
    k = normalise_key(key)
    return any(k == s or k.endswith("_" + s) or k.startswith(s + "_") for s in keys)


# --------------------------------------------------------------------------- errors


def exception_attributes(exc: BaseException, escaped: bool = True) -> dict[str, Any]:
    """The OpenTelemetry ``exception`` event's attributes, message and stack trace redacted."""
    cls = type(exc)
    module = cls.__module__
    name = f"{module}.{cls.__qualname__}" if module and module != "builtins" else cls.__qualname__
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {cls.__qualname__}>"
    try:
        stack = "".join(traceback.format_exception(exc))
    except Exception:
        stack = ""
    if len(stack) > MAX_TRACE_CHARS:  # the end of a trace says most: the failing frame and message
        stack = "…" + stack[-MAX_TRACE_CHARS:]
    return {
        "exception.type": name,
        "exception.message": redact_text(message),
        "exception.stacktrace": redact_text(stack),
        "exception.escaped": str(escaped),
    }


def error_description(exc: BaseException) -> str:
    """``Type: message`` for a span status, redacted and cut to 512 characters."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:
        text = type(exc).__name__
    return redact_text(text[: MAX_STATUS_CHARS * 4])[:MAX_STATUS_CHARS]


def set_error_status(span: Span, description: str) -> None:
    """Mark ``span`` failed with a redacted description (free text from a tool or a server)."""
    span.set_status(Status(StatusCode.ERROR, redact_text(description[: MAX_STATUS_CHARS * 4])[:MAX_STATUS_CHARS]))


def record_error(span: Span, exc: BaseException, *, status: bool = True) -> None:
    """What ``span.record_exception(exc)`` + ``set_status`` do, with the message and trace redacted.

    The SDK's own ``record_exception`` copies ``str(exc)`` and the formatted
    trace verbatim; a provider's 401 body or a tool's error text would leave
    the process with them.
    """
    if not span.is_recording():
        return
    span.add_event("exception", exception_attributes(exc))
    if status:
        span.set_status(Status(StatusCode.ERROR, error_description(exc)))
