"""Tell substance from noise: masked fingerprints and similarity sketches of tool calls.

A loop is the same call bringing nothing new, but real tools rarely answer
byte-for-byte the same: a web page carries a fresh timestamp or an ad, an API
reply a new request id. Three helpers, all bounded and cheap, computed once
where the value is at hand (at record time in process, or from captured
content out of process) and carried as ``agentwatch.*`` attributes:

* :func:`args_key` — the arguments' fingerprint with volatile values masked
  (ISO date-times and values under volatile keys such as ``timestamp``,
  ``nonce``, ``request_id``): a search repeated with a fresh timestamp is the
  same call. Identifiers in arguments (UUIDs, hex ids) are *not* masked: a
  call for another document is another call. Equal to ``args_hash`` when
  nothing was masked.
* :func:`result_key` — the result's fingerprint with the same masking plus
  UUIDs, long hex strings (request ids, nonces, hashes) and times of day;
  whitespace-only text and empty containers share one "empty" fingerprint
  (:data:`EMPTY_RESULT_HASHES`), which never counts as new. Equal to
  ``result_hash`` when nothing was masked.
* :func:`sketch` — a bottom-k MinHash sketch (the :data:`SKETCH_K` smallest
  CRC-32 values of the text's word 3-shingles) of a long result. Two
  sketches are compared with :func:`containment`, which
  estimates what share of one text's shingles the other contains. Bottom-k
  needs one hash per shingle and no random permutations, so a 4 KB text costs
  about 0.2 ms; shorter results than :data:`MIN_SKETCH_CHARS` get no sketch
  (their masked fingerprint decides).

Results are *near-identical* when each contains at least
:data:`RESULT_SIMILARITY` (0.8) of the other's word 3-shingles: an estimate
with a standard error of about 0.07 at k = 32, well apart from the 0.2-0.5 of
two different pages of one site.
"""

from __future__ import annotations

import re
from typing import Any
from zlib import crc32

from ..hashing import args_hash, canonical_json, value_hash

SKETCH_K = 32
MIN_SKETCH_CHARS = 512  # shorter text results are compared by their masked fingerprint only
MAX_SKETCH_CHARS = 4096  # the sketch reads the text's first 4 KB: bounded cost per call
MAX_MASK_CHARS = 256_000  # longer strings are not masked (their exact fingerprint is used)
MAX_MASK_NODES = 2_000
MAX_MASK_DEPTH = 32
RESULT_SIMILARITY = 0.8

_EMPTIES: tuple[Any, ...] = (None, "", [], {})
EMPTY_RESULT_HASHES = frozenset(value_hash(v) for v in _EMPTIES)
_EMPTY = value_hash("")
_MASK = "<volatile>"

# Keys whose values change on every call by design (snake-case, lower-case; ``*_at`` too).
_VOLATILE_KEYS = frozenset(
    {
        "timestamp",
        "ts",
        "time_stamp",
        "now",
        "nonce",
        "request_id",
        "req_id",
        "trace_id",
        "span_id",
        "correlation_id",
        "etag",
        "server_time",
        "elapsed",
        "elapsed_ms",
        "duration_ms",
        "latency_ms",
        "took",
        "cache_buster",
    }
)
_DATETIME = (
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    r"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2}(?: GMT| [+-]\d{4})?"
)
_IDS = (
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
    r"|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{16,}\b"
    r"|\b\d{1,2}:\d{2}:\d{2}(?:\.\d+)?\b"
)
_KEYED = r'"(?:[A-Za-z_]*_at|' + "|".join(sorted(_VOLATILE_KEYS)) + r')"\s*:\s*(?:"[^"\\]{0,200}"|-?\d[\d.eE+-]{0,30})'
_ARGS_TEXT = re.compile(_DATETIME)
_RESULT_TEXT = re.compile(f"{_DATETIME}|{_IDS}")
_KEYED_TEXT = re.compile(_KEYED)
_WORDS = re.compile(r"\w+").findall
_HAS_DIGIT = re.compile(r"\d").search


def _volatile_key(key: str) -> bool:
    low = key.lower().replace("-", "_")
    return low in _VOLATILE_KEYS or (low.endswith("_at") and len(low) > 3)


def _mask_text(text: str, rx: re.Pattern[str]) -> str:
    if len(text) > MAX_MASK_CHARS or not _HAS_DIGIT(text):
        return text
    out = rx.sub(_MASK, text)
    if '":' in out or '" :' in out:
        out = _KEYED_TEXT.sub(_MASK, out)
    return out


def mask(value: Any, *, result: bool = True) -> Any:
    """``value`` with volatile parts replaced by a placeholder (the same object when nothing changed).

    ``result=False`` masks the narrower argument set (date-times and volatile
    keys only). Bounded: at most :data:`MAX_MASK_NODES` containers and strings
    are visited, :data:`MAX_MASK_DEPTH` levels deep; the rest is kept as is.
    """
    rx = _RESULT_TEXT if result else _ARGS_TEXT
    budget = [MAX_MASK_NODES]

    def walk(node: Any, depth: int) -> Any:
        budget[0] -= 1
        if budget[0] < 0 or depth > MAX_MASK_DEPTH:
            return node
        if isinstance(node, str):
            return _mask_text(node, rx)
        if isinstance(node, dict):
            changed = False
            out: dict[Any, Any] = {}
            for k, v in node.items():
                if isinstance(k, str) and _volatile_key(k) and v not in (None, ""):
                    new: Any = _MASK
                else:
                    new = walk(v, depth + 1)
                changed = changed or new is not v
                out[k] = new
            return out if changed else node
        if isinstance(node, (list, tuple)):
            items = [walk(v, depth + 1) for v in node]
            if any(a is not b for a, b in zip(items, node, strict=True)):
                return items
            return node
        return node

    return walk(value, 0)


def args_key(arguments: Any, exact: str | None = None) -> str:
    """The loop key's arguments fingerprint: ``args_hash`` of the masked arguments."""
    masked = mask(arguments, result=False)
    if masked is arguments:
        return exact if exact is not None else args_hash(arguments)
    return args_hash(masked)


def result_key(result: Any, exact: str | None = None) -> str:
    """The result's fingerprint with volatile parts masked; one shared value for empty results."""
    if isinstance(result, str) and not result.strip():
        return _EMPTY
    masked = mask(result)
    if masked is result:
        return exact if exact is not None else value_hash(result)
    return value_hash(masked)


def is_empty(result_hash: str | None) -> bool:
    """An absent or empty result (``None``, blank text, ``[]``, ``{}``): never new."""
    return result_hash is None or result_hash in EMPTY_RESULT_HASHES


# ----------------------------------------------------------------------------- sketches


def _bottom_k(hashes: set[int]) -> str:
    return "".join(f"{h:08x}" for h in sorted(hashes)[:SKETCH_K])


def sketch(value: Any) -> str | None:
    """Bottom-k sketch of a long text result's word 3-shingles (masked first); ``None`` when short."""
    text = value if isinstance(value, str) else None
    if text is None:
        if value is None or isinstance(value, (bool, int, float)):
            return None
        text = canonical_json(value)
    if len(text) < MIN_SKETCH_CHARS:
        return None
    words = _WORDS(_mask_text(text[:MAX_SKETCH_CHARS], _RESULT_TEXT).lower())
    if len(words) < 3:
        return None
    shingles = map(" ".join, zip(words, words[1:], words[2:], strict=False))
    return _bottom_k(set(map(crc32, map(str.encode, shingles))))


def _decode(sk: str) -> list[int] | None:
    try:
        return [int(sk[i : i + 8], 16) for i in range(0, len(sk) - 7, 8)]
    except (TypeError, ValueError):
        return None


def containment(a: str, b: str) -> float | None:
    """Estimated share of ``a``'s shingles that ``b`` contains (``None`` for malformed sketches).

    Bottom-k: ``b`` holds every shingle of its text up to its largest kept hash
    (all of them when it kept fewer than k), so ``a``'s hashes in that range
    are a uniform sample of ``a`` whose membership in ``b`` is known exactly.
    """
    xs, ys = _decode(a), _decode(b)
    if not xs or not ys:
        return None
    limit = ys[-1] if len(ys) >= SKETCH_K else None
    ys_set = set(ys)
    sample = [x for x in xs if limit is None or x <= limit]
    if not sample:
        return 0.0
    return sum(1 for x in sample if x in ys_set) / len(sample)


def similar(a: str, b: str, threshold: float = RESULT_SIMILARITY) -> bool:
    """Each sketch's text contains at least ``threshold`` of the other's shingles."""
    forward = containment(a, b)
    if forward is None or forward < threshold:
        return False
    backward = containment(b, a)
    return backward is not None and backward >= threshold

