"""Tell substance from noise: masked fingerprints and similarity sketches of tool calls.

A loop is the same call bringing nothing new, but real tools rarely answer
byte-for-byte the same: a web page carries a fresh timestamp or an ad, an API
reply a new request id. Three helpers, all bounded and cheap, computed once
where the value is at hand (at record time in process, or from captured
content out of process) and carried as ``agentwatch.*`` attributes:

* :func:`args_key` — the arguments' fingerprint with volatile values masked
  (ISO date-times with a time of day, and values under volatile keys such as
  ``timestamp``, ``nonce``, ``request_id``, ``*_at``; plain dates stay): a search repeated with a fresh timestamp is the
  same call. Identifiers in arguments (UUIDs, hex ids) are *not* masked: a
  call for another document is another call. Equal to ``args_hash`` when
  nothing was masked.
* :func:`result_key` — the result's fingerprint with the same masking plus
  UUIDs and, in short texts, hex strings of 16+ (request ids, nonces, digests);
  whitespace-only text and empty containers share one "empty" fingerprint
  (:data:`EMPTY_RESULT_HASHES`), which never counts as new. Equal to
  ``result_hash`` when nothing was masked.
* :func:`sketch` — a bottom-k MinHash sketch (the :data:`SKETCH_K` smallest
  CRC-32 values of the text's word 3-shingles) of a long text result (prose,
  not JSON). Two
  sketches are compared with :func:`containment`, which
  estimates what share of one text's shingles the other contains. Bottom-k
  needs one hash per shingle and no random permutations; it reads the first
  2 KB only (about 350 shingles), and results shorter than
  :data:`MIN_SKETCH_CHARS` get none (their masked fingerprint decides).

Results are *near-identical* when each contains at least
:data:`RESULT_SIMILARITY` (0.8) of the other's word 3-shingles: an estimate
with a standard error of about 0.07 at k = 32, well apart from the 0.2-0.5 of
two different pages of one site.
"""

from __future__ import annotations

import re
from typing import Any
from zlib import crc32

from ..hashing import canonical_json, digest, parse_arguments, value_hash

SKETCH_K = 32
MIN_SKETCH_CHARS = 1024  # shorter results are compared by their masked fingerprint only
MAX_SKETCH_CHARS = 2048  # the sketch reads the text's first 2 KB: bounded cost per call
MAX_MASK_CHARS = 256_000  # longer strings are not masked (their exact fingerprint is used)
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
# Each pattern starts with a literal (":" or "-") and looks *back* for the rest of its head, so
# the regex engine jumps from one such character to the next instead of trying every position:
# a date-time ("2026-12-06T12:00" or "2026-12-06 12:00:01.5Z"), and a UUID.
_DATETIMES = re.compile(r":(?<=\d{4}-\d\d-\d\d[T ]\d\d:)\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?")
_DATETIME_HEAD = 13
_UUIDS = re.compile(r"-(?<=\b[0-9a-fA-F]{8}-)[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_UUID_HEAD = 8


def _sub_back(rx: re.Pattern[str], head: int, text: str) -> str:
    """Replace each match of ``rx`` *and the ``head`` characters its look-behind checked* by the mask."""
    parts: list[str] = []
    last = 0
    for m in rx.finditer(text):
        start = m.start() - head
        if start < last:
            continue
        parts.append(text[last:start])
        parts.append(_MASK)
        last = m.end()
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


_HEX = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{16,}\b")
_SHORT = 256
# a volatile key and its JSON value (a string or a number), in JSON text or canonical JSON
_KEYED = re.compile(
    r'"(?:[A-Za-z_]*_at|' + "|".join(sorted(_VOLATILE_KEYS)) + r')"\s*:\s*'
    r'(?:"(?:[^"\\]|\\.){0,256}"|-?\d[\d.eE+-]{0,30})'
)
_KEY_HINT = re.compile(r'"(?:' + "|".join(sorted(_VOLATILE_KEYS)) + r'|[A-Za-z_]*_at)"').search
_QUICK_ITEMS = 64


def _volatile_key(key: str) -> bool:
    low = key.lower().replace("-", "_")
    return low in _VOLATILE_KEYS or (low.endswith("_at") and len(low) > 3)


def _clean(value: Any, depth: int = 0) -> bool:
    """Cheap proof that a small mapping or list holds nothing to mask (no volatile key, no long string).

    Every maskable value is a string of 16+ characters or sits under a volatile
    key, so a few dozen short scalars are checked without serialising them.
    """
    if isinstance(value, dict):
        if len(value) > _QUICK_ITEMS or depth > 2:
            return False
        for k, v in value.items():
            if not isinstance(k, str) or _volatile_key(k) or not _clean(v, depth + 1):
                return False
        return True
    if isinstance(value, (list, tuple)):
        return len(value) <= _QUICK_ITEMS and depth <= 2 and all(_clean(v, depth + 1) for v in value)
    if isinstance(value, str):
        return len(value) < 16
    return value is None or isinstance(value, (bool, int, float))
_HAS_DIGIT = re.compile(r"\d").search


def _mask_text(text: str, result: bool) -> str:
    """``text`` with volatile parts replaced; the same object when there were none.

    Date-times and values under volatile keys always; in results also UUIDs and,
    in short texts, hex ids. Each pattern runs only when the text holds a
    character it needs, and every pattern starts with a literal or a digit, so
    a text of N characters costs a few linear scans.
    """
    if len(text) > MAX_MASK_CHARS or not _HAS_DIGIT(text):
        return text
    out = text
    if ":" in out:
        out = _sub_back(_DATETIMES, _DATETIME_HEAD, out)
        if '"' in out and _KEY_HINT(out):
            out = _KEYED.sub(lambda m: m.group().split(":", 1)[0] + ':"' + _MASK + '"', out)
    if result:
        if "-" in out:
            out = _sub_back(_UUIDS, _UUID_HEAD, out)
        if len(out) <= _SHORT:
            out = _HEX.sub(_MASK, out)
    return text if out == text else out


def args_key(arguments: Any, exact: str | None = None) -> str:
    """The loop key's arguments fingerprint: ``args_hash`` of the arguments with volatile values masked.

    Masks the canonical JSON text (the very text ``args_hash`` digests), so the
    key equals ``args_hash`` when nothing was masked.
    """
    if exact is not None and isinstance(arguments, dict) and _clean(arguments):
        return exact
    text = canonical_json(parse_arguments(arguments))
    masked = _mask_text(text, False)
    if masked is text:
        return exact if exact is not None else digest(text)
    return digest(masked)


def result_key(result: Any, exact: str | None = None) -> str:
    """The result's fingerprint with volatile parts masked; one shared value for empty results.

    Text is masked as it is (JSON text included: its volatile keys are found in
    the text); other values through their canonical JSON.
    """
    if isinstance(result, str):
        if not result.strip():
            return _EMPTY
        masked = _mask_text(result, True)
        if masked is result:
            return exact if exact is not None else value_hash(result)
        return value_hash(masked)
    if result is None or isinstance(result, (bool, int, float)) or (exact is not None and _clean(result)):
        return exact if exact is not None else value_hash(result)
    text = canonical_json(result)
    masked = _mask_text(text, True)
    if masked is text:
        return exact if exact is not None else digest(text)
    return digest(masked)


def is_empty(result_hash: str | None) -> bool:
    """An absent or empty result (``None``, blank text, ``[]``, ``{}``): never new."""
    return result_hash is None or result_hash in EMPTY_RESULT_HASHES


# ----------------------------------------------------------------------------- sketches


def _bottom_k(hashes: set[int]) -> str:
    return "".join(f"{h:08x}" for h in sorted(hashes)[:SKETCH_K])


def sketch(value: Any) -> str | None:
    """Bottom-k sketch of a long text result's word 3-shingles (its first 2 KB); ``None`` otherwise.

    Prose only (a page, a document, a long answer): structured results (a
    mapping, a list, JSON text) are compared by their masked fingerprint, so a
    status that changes inside an otherwise identical record stays new. Not
    masked: a fresh timestamp changes a handful of shingles out of hundreds,
    which the similarity threshold absorbs.
    """
    if not isinstance(value, str) or len(value) < MIN_SKETCH_CHARS or value.lstrip()[:1] in ("{", "["):
        return None
    words = value[:MAX_SKETCH_CHARS].lower().split()
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

