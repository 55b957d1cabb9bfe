"""Ids as people and tools write them: one normal form, and every value a run could have learnt one from.

:mod:`.entities` decides what is an id *worth checking* (strict shapes, id-ish
keys). Grounding must also know every id the agent *could* have read, written
however it was written, so the two sides of the comparison differ on purpose:

* :func:`normalise_id` — the form ids are compared in: surrounding decoration
  (``#``, quotes, brackets, trailing punctuation, whitespace) removed and case
  folded; a number and its decimal text (``9523456873`` and
  ``"9523456873"``) are the same id. Ids compare case-insensitively whatever
  their type (booking codes, order numbers and UUIDs are all written in
  either case by users and models alike).
* :func:`learnable_ids` — liberal: every scalar that could be an id (a
  string without whitespace, an integer of three or more digits), and every
  word with a digit in longer text, wherever it sits in a tool result, a user
  or system message or a declared entity, under any key. These are only ever
  *learnt* (they can only silence an accusation), never reported, and they
  stay in the engine: no attribute carries them.

Bounded like the extractor: nodes visited, characters read, ids returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

MAX_LEARN_NODES = 20_000
MAX_LEARN_CHARS = 64_000  # read from each string
MAX_LEARN_IDS = 4096
MAX_LEARN_DEPTH = 64
MAX_ID_LEN = 128

_DECORATION = " \t\r\n#'\"`.,;:!?()[]{}<>*_~|\u2018\u2019\u201c\u201d\u00ab\u00bb"
_TOKENS = re.compile(r"[\w\-./:#@+]+").findall
_HAS_DIGIT = re.compile(r"\d").search
_HAS_SPACE = re.compile(r"\s").search


def normalise_id(raw: Any) -> str:
    """The comparison form of an id: decoration stripped, case folded, numbers as their decimal text."""
    if raw.__class__ is int:
        return str(raw)
    if isinstance(raw, float) and raw.is_integer():
        return str(int(raw))
    text = str(raw).strip(_DECORATION)
    return text.lower()


def _words(text: str) -> Iterator[str]:
    """The id candidates of a text: the whole when it is one word, else its words with a digit."""
    text = text[:MAX_LEARN_CHARS]
    stripped = text.strip()
    if 0 < len(stripped) <= MAX_ID_LEN and not _HAS_SPACE(stripped):
        yield stripped
    if not _HAS_DIGIT(text):
        return
    for word in _TOKENS(text):
        if _HAS_DIGIT(word):
            yield word
            # "order#W9300146" or "id:123": the parts between separators too
            for part in re.split(r"[#:/@]", word):
                if part and part != word and _HAS_DIGIT(part):
                    yield part


def learnable_ids(value: Any, limit: int = MAX_LEARN_IDS) -> list[str]:
    """Every id, in normal form, that ``value`` shows to whoever reads it (see the module doc)."""
    out: dict[str, None] = {}
    stack: list[tuple[Any, int]] = [(value, 0)]
    nodes = 0
    while stack and len(out) < limit:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_LEARN_NODES:
            break
        if isinstance(node, str):
            lead = node.lstrip()[:1]
            if lead in ("{", "[") and len(node) <= MAX_LEARN_CHARS * 4 and depth < MAX_LEARN_DEPTH:
                try:
                    parsed = json.loads(node)
                except (ValueError, RecursionError):
                    parsed = None
                if isinstance(parsed, (dict, list)):
                    stack.append((parsed, depth + 1))
                    continue
            for word in _words(node):
                norm = normalise_id(word)
                if len(norm) >= 2:
                    out[norm] = None
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, (int, float)):
            if isinstance(node, int) or node.is_integer():
                norm = normalise_id(node)
                if len(norm.lstrip("-")) >= 3:
                    out[norm] = None
        elif depth >= MAX_LEARN_DEPTH:
            continue
        elif isinstance(node, Mapping):
            for key, child in node.items():
                if isinstance(key, str) and _HAS_DIGIT(key):
                    stack.append((key, depth + 1))
                stack.append((child, depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((child, depth + 1) for child in node)
    if len(out) > limit:
        return list(out)[:limit]
    return list(out)
