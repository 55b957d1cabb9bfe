"""Find entity ids (``cust_789``, ``ord_555``, UUIDs, ...) in arguments, results and free text.

The grounding detectors compare the ids a tool call references with the ids the
run has seen, so extraction must find the same id the same way wherever it
appears: as a value under an id-ish key (``customer_id``, ``userId``, ``id``),
inside a JSON string (tool results usually are one), or in prose ("my user id
is mia_li_3668"). It runs on the span-processing path, so it is bounded
(nodes visited, characters scanned, entities returned) and every regex is
compiled once per extractor.

Rules, in the order they apply:

* a string or integer directly under an id-ish key is an id when it has no
  whitespace, is 3..128 characters long and has a digit or matches a pattern;
  its type comes from the key (``customer_id`` -> ``customer``; a bare ``id``
  takes the type of its value's prefix, else of the enclosing key);
* every other string is scanned for prefixed ids (a configured prefix such as
  ``cust_`` followed by a tail with a digit), snake-case ids ending in three or
  more digits (``credit_card_4421486``, ``mia_li_3668``), UUIDs, and the
  configured ``(type, regex)`` patterns; the type is the prefix map's, else the
  prefix itself; upper-case codes mixing letters and digits (``ZFA04Y``,
  ``HAT136``, 5..12 characters) are typed ``code``;
* strings that look like JSON are parsed first and walked;
* a key named after a known entity type (a prefix-map or pattern type, singular
  or plural: ``"reservations": ["ZFA04Y"]``) marks its strings, not its numbers,
  as ids of that type;
* numbers and booleans outside id-ish keys are ignored;
* a credential is never an id: nothing under a credential-shaped key (``api_key``,
  ``aws_access_key_id``, ``client_secret``...) is extracted, nor a secret-shaped
  value (``sk-...``, ``AKIA...``, a JWT...), nor an id that follows a credential
  name in prose ("my API key is 3f2a...", "password: abc_123"); see
  :func:`credential_key` and :class:`_Credentials`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..config import EntityConfig
from ..hashing import text_too_deep
from ..redaction import is_secret_key, looks_secret, redact_text
from .record import Entity

MAX_ENTITIES = 256
MAX_NODES = 20_000
MAX_SCAN_CHARS = 200_000  # of one string
MAX_SCAN_TOTAL = 1_000_000  # of all strings in one extract() call
MAX_JSON_CHARS = 2_000_000
MAX_ID_LEN = 128
_KEY_CACHE_MAX = 4096

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SNAKE = r"[a-z]+(?:_[a-z]+)*_\d{3,}"
# booking references, confirmation codes, tracking numbers: upper-case letters *and* digits
_CODE = r"(?=[0-9]*[A-Z])(?=[A-Z]*[0-9])[A-Z0-9]{5,12}"
_CAMEL_ID = re.compile(r"^(?P<base>.*?[a-z0-9])(?:Id|ID|Ids|IDs)$")
_SNAKE_ID = re.compile(r"^(?P<base>.+?)[_\-. ](?:id|ids|uuid|guid)$", re.IGNORECASE)
_BARE_ID = frozenset({"id", "_id", "ids", "uuid", "guid", "@id"})
_CAMEL_SPLIT = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_HAS_DIGIT = re.compile(r"\d").search
# Every built-in id shape contains a digit: scan only the word-and-hyphen tokens that do.
# Tokens end at non-word characters, so word boundaries inside them are those of the text.
# (Tokens first, digit check second: a pattern requiring the digit would backtrack quadratically.)
_TOKENS = re.compile(r"[\w\-]+").finditer
_SNAKE_FULL = re.compile(_SNAKE).fullmatch
_HAS_SPACE = re.compile(r"\s").search
_JSON_START = frozenset({"{", "[", " ", "\n", "\t", "\r"})
_BARE = "\x00bare"  # marker type: a bare ``id`` key, resolved from the value or the enclosing key
_CREDENTIAL = "\x00credential"  # marker type: a credential-shaped key, whose values are skipped
_SOFT = "~"  # marks a key named after an entity type: its strings are ids, its numbers are not


def format_entities(entities: Iterable[Entity]) -> tuple[str, ...]:
    """``(type, id)`` pairs as the ``"type:id"`` strings span attributes carry."""
    return tuple(f"{etype}:{eid}" for etype, eid in entities)


def parse_entities(strings: Iterable[Any] | None) -> tuple[Entity, ...]:
    """Inverse of :func:`format_entities`. The id may contain ``:``; a string with none is typed ``id``.

    Non-string items and empty ids are skipped, so a malformed attribute never raises.
    """
    if not strings or isinstance(strings, (str, bytes)):
        return ()
    out: dict[Entity, None] = {}
    for item in strings:
        if not isinstance(item, str):
            continue
        etype, sep, eid = item.partition(":")
        if not sep:
            etype, eid = "id", item
        eid = eid.strip()
        if eid:
            out[(etype.strip() or "id", eid)] = None
    return tuple(out)


def normalise_type(name: str) -> str:
    """``customer_id`` / ``customerId`` / ``Customer`` -> ``customer``: how declared and found types meet."""
    key = _key_base(name)
    return key if key is not None and key != _BARE else _snake(name)


def _snake(name: str) -> str:
    return _CAMEL_SPLIT.sub("_", name.strip()).lower().replace("-", "_").replace(" ", "_")


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _key_base(key: str) -> str | None:
    """The entity type an id-ish key names, :data:`_BARE` for ``id`` itself, ``None`` if not id-ish."""
    if key.lower() in _BARE_ID:
        return _BARE
    m = _SNAKE_ID.match(key)
    if m is None:
        m = _CAMEL_ID.match(key)
    if m is None:
        return None
    base = _snake(m.group("base")).strip("_")
    return base or _BARE


# ---------------------------------------------------------------------------- credentials

_MIN_SECRET_LEN = 16  # every token shape agentwatch redacts is at least this long
_CONTEXT_CHARS = 48
_JOINERS = frozenset(".:@")
_CONTEXT_WORDS = ("pass", "pwd", "secret", "token", "key", "sig", "cred", "auth", "cookie", "bearer", "basic")
# a credential name right before the id: "api key is ", "password: ", "token=", "with password "
_CONTEXT = re.compile(
    r"(?:(?:pass(?:word|wd|phrase)|pwd)[\"']?\s{0,4}(?:[=:]|is|was)?"
    r"|(?:secret|token|signature|sig|credentials?|authorization|auth|cookie|apikey"
    r"|(?:api|access|private|secret|account)[\s_\-]?key)[\"']?\s{0,4}(?:[=:]|is|was|provided:?)"
    r"|bearer|basic)[\s\"']{0,4}$"
)


def credential_key(key: str) -> bool:
    """A mapping key that names a credential (``api_key``, ``aws_access_key_id``, ``x-auth-token``)."""
    if is_secret_key(key):
        return True
    base = _key_base(key)
    return base is not None and base != _BARE and is_secret_key(base)


def secret_value(text: str) -> bool:
    """A value that is itself secret-shaped (``sk-...``, ``AKIA...``, a JWT)."""
    return len(text) >= _MIN_SECRET_LEN and looks_secret(text)


def mentions_credentials(text: str) -> bool:
    """Whether ``text`` names a credential anywhere (then ids in it get the context check)."""
    low = text.lower()
    return (
        "pass" in low or "pwd" in low or "secret" in low or "token" in low or "key" in low or "sig" in low
        or "cred" in low or "auth" in low or "cookie" in low or "bearer" in low or "basic" in low
    )


def _joined(text: str, start: int, end: int) -> bool:
    """Is the token joined to a neighbour by ``.``, ``:`` or ``@`` (``a.b.c``, ``user:pass@host``)?"""
    before = text[start - 2 : start] if start >= 2 else ""
    if len(before) == 2 and before[1] in _JOINERS and (before[0].isalnum() or before[0] in "_-"):
        return True
    after = text[end : end + 2]
    return len(after) == 2 and after[0] in _JOINERS and (after[1].isalnum() or after[1] in "_-")


def _credential_at(text: str, start: int, end: int, context: bool) -> bool:
    """Is the token ``text[start:end]`` (or the chunk it is part of) a credential, or named as one just before?

    ``context`` is :func:`mentions_credentials` of the whole text, computed once per text.
    """
    if end - start >= _MIN_SECRET_LEN and looks_secret(text[start:end]):
        return True
    # multi-part shapes (JWT, SendGrid, user:pass@host) join tokens with these characters
    if _joined(text, start, end):
        left = text[max(0, start - 200) : start]
        cut = max(left.rfind(" "), left.rfind("\n"), left.rfind("\t"))
        chunk_start = start - len(left) + cut + 1
        right = text[end : end + 200]
        stops = [i for i in (right.find(" "), right.find("\n"), right.find("\t")) if i >= 0]
        chunk_end = end + (min(stops) if stops else len(right))
        if chunk_end - chunk_start >= 20 and looks_secret(text[chunk_start:chunk_end]):
            return True
    if not context:
        return False
    before = text[max(0, start - _CONTEXT_CHARS) : start].lower()
    return any(w in before for w in _CONTEXT_WORDS) and _CONTEXT.search(before) is not None


_TEXT_CACHE_SIZE = 1024  # texts remembered per extractor (cleared when full)
_TEXT_CACHE_CHARS = 8192  # longer texts are scanned every time (they rarely repeat)


class EntityExtractor:
    """Extract ``(type, id)`` entities from a parsed JSON value or free text; see the module doc."""

    __slots__ = ("_key_cache", "_patterns", "_prefix_re", "_prefixes", "_scan", "_text_cache", "_types")

    def __init__(self, config: EntityConfig | None = None) -> None:
        config = config if config is not None else EntityConfig()
        self._prefixes: dict[str, str] = {str(k).lower(): str(v) for k, v in config.prefixes.items()}
        self._types = frozenset(_snake(t) for t in self._prefixes.values()) | frozenset(
            _snake(str(t)) for t, _ in config.patterns
        )
        parts: list[str] = []
        if self._prefixes:
            alternation = "|".join(sorted((re.escape(p) for p in self._prefixes), key=len, reverse=True))
            # a configured prefix, "_" or "-", then a tail that contains a digit (cust_789, ord-A12)
            parts.append(rf"(?P<p>\b(?i:{alternation})[_\-](?=[A-Za-z0-9]*\d)[A-Za-z0-9]{{1,64}}\b)")
        parts.append(rf"(?P<s>\b{_SNAKE}\b)")
        parts.append(rf"(?P<u>\b{_UUID}\b)")
        parts.append(rf"(?P<c>\b{_CODE}\b)")
        self._scan = re.compile("|".join(parts))
        self._prefix_re = re.compile(r"^([A-Za-z]+)[_\-]")
        self._patterns: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
            (str(etype), re.compile(regex)) for etype, regex in config.patterns
        )
        self._key_cache: dict[str, str | None] = {}
        self._text_cache: dict[str, tuple[Entity, ...]] = {}

    # ------------------------------------------------------------------ public

    def extract(self, value: Any, *, limit: int = MAX_ENTITIES) -> tuple[Entity, ...]:
        """Entities in ``value`` (parsed JSON, a JSON string, or prose): deduplicated, in document order."""
        if value.__class__ is str and len(value) <= _TEXT_CACHE_CHARS and limit == MAX_ENTITIES:
            # Agents send the same texts again and again (the system prompt, the history of
            # every earlier turn): scan each once. The result depends only on the text.
            hit = self._text_cache.get(value)
            if hit is None:
                hit = self._extract(value, limit)
                if len(self._text_cache) >= _TEXT_CACHE_SIZE:
                    self._text_cache.clear()
                self._text_cache[value] = hit
            return hit
        return self._extract(value, limit)

    def _extract(self, value: Any, limit: int) -> tuple[Entity, ...]:
        out: dict[Entity, None] = {}
        if value is None or limit <= 0:
            return ()
        try:
            self._walk(value, out, limit)
        except RecursionError:  # pragma: no cover - the walk is iterative; json.loads may still recurse
            pass
        return tuple(out)

    def prefix_type(self, entity_id: str) -> str | None:
        """The type the configured prefix map gives an id (``cust_789`` -> ``customer``), if any."""
        m = self._prefix_re.match(entity_id)
        if m is None:
            return None
        return self._prefixes.get(m.group(1).lower())

    def looks_like_id(self, text: str) -> bool:
        """Could ``text`` under an id-ish key be an id? (no spaces, 3..128 chars, a digit or a pattern)."""
        n = len(text)
        if n < 3 or n > MAX_ID_LEN or _HAS_SPACE(text):
            return False
        if _HAS_DIGIT(text):
            return True
        return any(rx.fullmatch(text) for _, rx in self._patterns)

    # ------------------------------------------------------------------ walking

    def _id_type(self, key: str) -> str | None:
        """The id type a key names: ``customer_id`` -> ``customer``; a soft ``~order`` for ``orders``."""
        cache = self._key_cache
        try:
            return cache[key]
        except KeyError:
            pass
        # {"api_key": ...}: a credential, never an entity (cached with the rest)
        base: str | None = _CREDENTIAL if credential_key(key) else _key_base(key)
        if base is None and not _HAS_DIGIT(key):
            name = _singular(_snake(key))
            if name in self._types:
                base = _SOFT + name  # strings only: {"orders": ["A1B2"]}, not {"invoice": 250}
        if len(cache) >= _KEY_CACHE_MAX:
            cache.clear()
        cache[key] = base
        return base

    def _snake_type(self, found: str) -> str:
        stem = found.rsplit("_", 1)[0]
        return self._prefixes.get(stem) or self._prefixes.get(stem.split("_", 1)[0]) or stem

    def _resolve_bare(self, entity_id: str, context: str | None) -> str:
        """Type of a value under a bare ``id`` key: its prefix, else the enclosing key, else ``id``."""
        ptype = self.prefix_type(entity_id)
        if ptype is not None:
            return ptype
        if _SNAKE_FULL(entity_id):
            return self._snake_type(entity_id)
        if context and not _HAS_DIGIT(context):
            ctx = self._id_type(context)
            if ctx is not None and ctx != _BARE and ctx is not _CREDENTIAL:
                return ctx[1:] if ctx[0] == _SOFT else ctx
            return _singular(_snake(context))
        return "id"

    def _walk(self, root: Any, out: dict[Entity, None], limit: int) -> None:
        # stack items: (value, id-type if directly under an id-ish key, the key that names the
        # value's container -- what a bare ``id`` inside it is an id *of*)
        stack: list[tuple[Any, str | None, str | None]] = [(root, None, None)]
        pop = stack.pop
        push = stack.append
        id_type_of = self._id_type
        nodes = 0
        budget = MAX_SCAN_TOTAL  # characters left to scan as prose
        while stack:
            value, id_type, context = pop()
            nodes += 1
            if nodes > MAX_NODES:
                return
            cls = value.__class__
            if cls is str or (cls is not dict and isinstance(value, str)):
                if id_type is not None:
                    text = value.strip()
                    if len(text) >= _MIN_SECRET_LEN and looks_secret(text):
                        continue  # {"customer_id": "sk-..."}: a secret, nor any piece of it, is no id
                    if self.looks_like_id(text):
                        if id_type == _BARE:
                            etype = self._resolve_bare(text, context)
                        else:
                            etype = id_type[1:] if id_type[0] == _SOFT else id_type
                        out[(etype, text)] = None
                        if len(out) >= limit:
                            return
                        continue
                if value[:1] in _JSON_START and self._maybe_json(value, stack, id_type, context):
                    continue
                if budget <= 0:
                    continue
                text = value[: min(budget, MAX_SCAN_CHARS)]
                budget -= len(text)
                if self._scan_text(text, out, limit):
                    return
            elif cls is dict or isinstance(value, Mapping):
                items = list(value.items())
                for key, _ in items:  # ids used as keys ({"credit_card_4421486": {...}}), in order
                    if key.__class__ is str and budget > 0 and _HAS_DIGIT(key):
                        budget -= min(len(key), MAX_SCAN_CHARS)
                        if self._scan_text(key, out, limit):
                            return
                for key, child in reversed(items):
                    if key.__class__ is str:
                        key_type = id_type_of(key)
                        if key_type is _CREDENTIAL:
                            continue
                        push((child, key_type, context if key_type == _BARE else key))
                    else:
                        push((child, None, context))
            elif cls is list or cls is tuple or isinstance(value, (list, tuple)):
                for child in reversed(value):
                    push((child, id_type, context))
            elif (
                id_type is not None
                and id_type[0] != _SOFT
                and isinstance(value, int)
                and not isinstance(value, bool)
                and abs(value) >= 100
            ):
                text = str(value)
                etype = self._resolve_bare(text, context) if id_type == _BARE else id_type
                out[(etype, text)] = None
                if len(out) >= limit:
                    return

    @staticmethod
    def _maybe_json(
        text: str, stack: list[tuple[Any, str | None, str | None]], id_type: str | None, context: str | None
    ) -> bool:
        stripped = text.lstrip()
        if not stripped or stripped[0] not in "{[" or len(text) > MAX_JSON_CHARS or text_too_deep(text):
            return False  # too deep: json.loads would raise RecursionError, or not, by stack depth
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            return False
        if isinstance(parsed, (dict, list)):
            stack.append((parsed, id_type, context))
            return True
        return False

    def _scan_text(self, text: str, out: dict[Entity, None], limit: int) -> bool:
        """Add the ids found in prose; ``True`` when ``limit`` is reached."""
        if len(text) > MAX_SCAN_CHARS:
            text = text[:MAX_SCAN_CHARS]
        if "PRIVATE KEY" in text:  # a PEM block's base64 lines are full of id-shaped fragments
            text = redact_text(text)
        scan = self._scan.finditer
        context: bool | None = None  # does the text name a credential anywhere? (asked once, lazily)
        for token in _TOKENS(text):
            word = token.group()
            if not _HAS_DIGIT(word):
                continue
            checked = False
            for m in scan(word):
                if not checked:  # once per token: is it (part of) a credential?
                    checked = True
                    if context is None:
                        context = mentions_credentials(text)
                    ts, te = token.span()
                    if (
                        context
                        or te - ts >= _MIN_SECRET_LEN
                        or text[te : te + 1] in _JOINERS
                        or text[ts - 1 : ts] in _JOINERS
                    ) and _credential_at(
                        text, ts, te, context
                    ):
                        break
                group = m.lastgroup
                found = m.group()
                if group == "u":
                    etype = "uuid"
                elif group == "c":
                    etype = "code"
                elif group == "p":
                    etype = self.prefix_type(found) or "id"
                else:
                    etype = self._snake_type(found)
                out[(etype, found)] = None
                if len(out) >= limit:
                    return True
        for etype, rx in self._patterns:
            for m in rx.finditer(text):
                found = m.group()
                if context is None:
                    context = mentions_credentials(text)
                if found and not _credential_at(text, m.start(), m.end(), context):
                    out[(etype, found)] = None
                    if len(out) >= limit:
                        return True
        return False
