"""Privacy-safe fingerprints of tool arguments and results.

``args_hash`` is the contract's: the first 16 hex digits of SHA-256 over the
canonical JSON of the arguments (keys sorted, no whitespace, UTF-8). The same
arguments give the same hash in every process and on every machine, so loops
and duplicate writes can be found without storing the arguments themselves.
"""

from __future__ import annotations

import hashlib
import json
from json.decoder import JSONDecoder
from json.encoder import c_encode_basestring, c_make_encoder  # type: ignore[attr-defined]
from typing import Any

_MISSING = object()


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


# Hashing runs on every tool call: the C encoder is called directly with the
# canonical settings (sorted keys, compact separators, UTF-8 kept, NaN allowed,
# cycles detected), without ``json.dumps``' Python layers. Same output, a third
# of the time.
_C_ENCODER = c_make_encoder if c_make_encoder is not None and c_encode_basestring is not None else None


def canonical_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, non-ASCII kept as UTF-8.

    Values JSON cannot express are converted deterministically; a cyclic object
    falls back to its ``repr`` so hashing never raises.
    """
    try:
        if _C_ENCODER is not None:
            encode = _C_ENCODER({}, _default, c_encode_basestring, None, ":", ",", True, False, True)
            return "".join(encode(value, 0))
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(repr(value), ensure_ascii=False)


_SCAN = JSONDecoder().scan_once  # type: ignore[attr-defined]


def parse_arguments(raw: Any) -> Any:
    """Arguments as a model sends them (a JSON string) or as Python passes them.

    A string that is not valid JSON is returned unchanged: it is hashed as a
    JSON string, so a malformed argument still gets a stable fingerprint.
    """
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, (bytes, bytearray)):
        text = raw.decode("utf-8", "replace")
    else:
        return raw
    try:  # the common case, a compact JSON object from a model, without json.loads' checks
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except (StopIteration, ValueError):
        pass
    if not text.strip():
        return {}
    try:  # leading or trailing whitespace, or not JSON at all
        return json.loads(text)
    except ValueError:
        return text


def digest(text: str) -> str:
    """First 16 hex digits of SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def args_hash(arguments: Any) -> str:
    """The contract's ``agentwatch.tool.args_hash`` of already-parsed or JSON-text arguments."""
    return digest(canonical_json(parse_arguments(arguments)))


def value_hash(value: Any) -> str:
    """Fingerprint of a tool result (or any value): used to tell new results from repeats."""
    return digest(canonical_json(value))
