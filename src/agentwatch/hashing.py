"""Privacy-safe fingerprints of tool arguments and results.

``args_hash`` is the contract's: the first 16 hex digits of SHA-256 over the
canonical JSON of the arguments (keys sorted, no whitespace, UTF-8). The same
arguments give the same hash in every process and on every machine, so loops
and duplicate writes can be found without storing the arguments themselves.

Every input is bounded (docs/limits.md). Arguments nested deeper than
:data:`MAX_DEPTH` levels, or argument text longer than
:data:`MAX_ARGUMENT_CHARS`, are not canonicalised: argument *text* over a limit
is kept unparsed (:class:`Unparsed`) and hashed over its raw UTF-8 bytes; a
Python *value* over the depth limit is hashed over its canonical JSON with every
container below level ``MAX_DEPTH`` replaced by :data:`DEPTH_MARKER`. Both are
stable across processes; neither ever raises.
"""

from __future__ import annotations

import hashlib
import json
import re
from itertools import accumulate
from json.decoder import JSONDecoder
from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]
from typing import Any

MAX_DEPTH = 128  # nesting levels (arrays and objects) canonicalised exactly; serde_json's default too
MAX_ARGUMENT_CHARS = 1_048_576  # argument text longer than this is hashed raw, never parsed
DEPTH_MARKER = "[depth limit]"  # stands for a container nested deeper than MAX_DEPTH
_SHORT = 2 * MAX_DEPTH  # text this short cannot nest deeper than MAX_DEPTH: no scan


class Unparsed(str):
    """Argument text left unparsed because it is over a limit (too long or too deeply nested).

    ``args_hash`` hashes its raw text; the schema check treats it as unverifiable.
    """

    __slots__ = ()


def _default(obj: Any) -> Any:
    """Make common non-JSON values hashable deterministically (pydantic models, sets, bytes)."""
    dump = getattr(obj, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, tuple):
        return list(obj)
    return repr(obj)


# --------------------------------------------------------------------------- depth of JSON text

# A JSON string (escapes included), written as an unrolled loop: linear, no nested choice.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}.__getitem__


def text_too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON ``text`` nests arrays/objects more than ``limit`` levels deep.

    Brackets inside strings do not count. Almost all text is shorter than twice
    the limit or has fewer brackets than the limit in total, and is answered
    without a scan.
    """
    if len(text) <= 2 * limit or text.count("[") + text.count("{") <= limit:
        return False  # each level takes two characters
    skeleton = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return bool(skeleton) and max(accumulate(map(_STEP, skeleton))) > limit


# --------------------------------------------------------------------------- canonical JSON

# Hashing runs on every tool call: the C encoder is called directly with the
# canonical settings (sorted keys, compact separators, UTF-8 kept, NaN allowed,
# cycles detected), without ``json.dumps``' Python layers. Same output, a third
# of the time.
_C_ENCODER = c_make_encoder if c_make_encoder is not None and c_encode_basestring is not None else None


def _encode(value: Any) -> str:
    if _C_ENCODER is not None:
        encode = _C_ENCODER({}, _default, c_encode_basestring, None, ":", ",", True, False, True)
        return "".join(encode(value, 0))
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def _cut(value: Any, level: int) -> Any:
    """``value`` with containers below nesting level :data:`MAX_DEPTH` replaced by the marker."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if not isinstance(value, (dict, list, tuple)):
        try:
            value = _default(value)
        except Exception:
            return repr(value)
        if not isinstance(value, (dict, list)):
            return value
    if level > MAX_DEPTH:
        return DEPTH_MARKER
    if isinstance(value, dict):
        return {k: _cut(v, level + 1) for k, v in value.items()}
    return [_cut(v, level + 1) for v in value]


def _bounded(value: Any) -> str:
    """Canonical JSON of ``value`` cut at :data:`MAX_DEPTH`; its ``repr`` if even that fails."""
    try:
        return _encode(_cut(value, 1))
    except (ValueError, TypeError, RecursionError):
        try:
            return json.dumps(repr(value), ensure_ascii=False)
        except RecursionError:
            return json.dumps(f"<{type(value).__name__}>")


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, non-ASCII kept as UTF-8.

    Values JSON cannot express are converted deterministically; a cyclic object
    falls back to its ``repr``; a value nested deeper than :data:`MAX_DEPTH` to
    its canonical JSON cut at that depth. Never raises.
    """
    try:  # _encode, inlined: this runs for every tool call
        if _C_ENCODER is not None:
            encode = _C_ENCODER({}, _default, c_encode_basestring, None, ":", ",", True, False, True)
            text = "".join(encode(value, 0))
        else:
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)
    except RecursionError:
        return _bounded(value)
    except (ValueError, TypeError):
        try:
            return json.dumps(repr(value), ensure_ascii=False)
        except RecursionError:
            return _bounded(value)
    if len(text) > _SHORT and text_too_deep(text):
        return _bounded(value)
    return text


# --------------------------------------------------------------------------- parsing model text

_SCAN = JSONDecoder().scan_once  # type: ignore[attr-defined]


def parse_arguments(raw: Any) -> Any:
    """Arguments as a model sends them (a JSON string) or as Python passes them.

    A string that is not valid JSON is returned unchanged: it is hashed as a
    JSON string, so a malformed argument still gets a stable fingerprint. Text
    over :data:`MAX_ARGUMENT_CHARS` or nested deeper than :data:`MAX_DEPTH` is
    returned as :class:`Unparsed` without being parsed.
    """
    cls = raw.__class__
    if cls is str:
        text = raw
    elif cls is Unparsed:
        return raw
    elif isinstance(raw, str):
        text = raw
    elif isinstance(raw, (bytes, bytearray)):
        text = raw.decode("utf-8", "replace")
    else:
        return raw
    if len(text) > _SHORT and (len(text) > MAX_ARGUMENT_CHARS or text_too_deep(text)):
        return Unparsed(text)
    try:  # the common case, a compact JSON object from a model, without json.loads' checks
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    except RecursionError:  # pragma: no cover - text_too_deep keeps the depth far below the stack
        return Unparsed(text)
    if not text.strip():
        return {}
    try:  # leading or trailing whitespace, or not JSON at all
        return json.loads(text)
    except ValueError:
        return text
    except RecursionError:  # pragma: no cover - as above
        return Unparsed(text)


def digest(text: str) -> str:
    """First 16 hex digits of SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def args_hash(arguments: Any) -> str:
    """The contract's ``agentwatch.tool.args_hash`` of already-parsed or JSON-text arguments.

    Text over a limit (:class:`Unparsed`) is hashed over its raw text instead.
    """
    if arguments.__class__ is not dict:  # a parsed object needs no parsing
        arguments = parse_arguments(arguments)
        if arguments.__class__ is Unparsed:
            return digest(arguments)
    return digest(canonical_json(arguments))


def value_hash(value: Any) -> str:
    """Fingerprint of a tool result (or any value): used to tell new results from repeats."""
    return digest(canonical_json(value))
