"""``TOOL_ARG_MISMATCH``: arguments checked against the tool's declared JSON Schema.

Schemas come from anywhere (``@tool(schema=)``, the tools offered to a model,
an untrusted MCP server, a span's ``agentwatch.tool.schema`` attribute in the
collector), and so do the arguments, so every check is bounded
(docs/limits.md):

* ``pattern`` and ``patternProperties`` (and ``additionalProperties``, which
  consults them) run on RE2 (``google-re2``), whose matching time is linear in
  the text: no pattern can backtrack catastrophically. A pattern RE2 cannot
  express (lookaround, backreferences) is skipped as unverifiable, logged once;
  ``unevaluatedProperties`` beside ``patternProperties`` likewise (jsonschema
  would match those patterns with Python's backtracking ``re``).
* Strings longer than :data:`MAX_PATTERN_INPUT_CHARS` are not matched against
  patterns; patterns longer than :data:`MAX_PATTERN_CHARS` are skipped.
* A schema longer than :data:`MAX_SCHEMA_CHARS` (canonical JSON) or nested
  deeper than :data:`MAX_SCHEMA_DEPTH`, and arguments nested deeper than
  :data:`~agentwatch.hashing.MAX_DEPTH` or left unparsed, are unverifiable.
* One check evaluates at most :data:`MAX_EVALUATIONS` keywords, a reference
  counting as 25 (a ``$ref`` fan-out can be exponential in the schema's size).
  Compiling a schema (its check against the meta-schema, once per distinct
  schema) is linear in its size, which is bounded.
* A ``$schema`` below the root is unverifiable: jsonschema would switch to
  its stock validator class there, with Python's ``re`` and no budget.

Unverifiable is never a finding: the check reports ``schema_ok=False`` and the
engine counts it in ``schema_invalid``, as for a schema that is itself invalid
or cannot be resolved (a remote ``$ref``) -- the integration's problem, not the
agent's.

Compiling a validator costs far more than using one, so validators are cached:
first by the schema object's identity (the instrumentation hands the same dict
for every call of a tool), then by the schema's canonical JSON (a collector
rebuilds the dict for every span). Both caches, and the compiled patterns, are
bounded.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError, best_match

from ..hashing import MAX_DEPTH, Unparsed, canonical_json, text_too_deep

try:
    import re2 as _re2
except ImportError:  # pragma: no cover - a required dependency; without it patterns are unverifiable
    _re2 = None

log = logging.getLogger("agentwatch.engine")

MAX_SCHEMA_CHARS = 65_536  # canonical JSON of one schema
MAX_SCHEMA_DEPTH = 64  # JSON nesting of one schema
MAX_PATTERN_CHARS = 1_000  # a longer pattern is skipped
MAX_PATTERN_INPUT_CHARS = 65_536  # a longer string (or property name) is not matched against patterns
MAX_EVALUATIONS = 20_000  # keyword evaluations in one check of arguments (a reference counts 25)

_IDENTITY_MAX = 256
_CANONICAL_MAX = 1024
_CANONICAL_CHARS_MAX = 4_000_000  # total schema text kept as cache keys
_PATTERN_MAX = 1024
_LOGGED_MAX = 256
_INVALID = object()  # cached marker: the schema is invalid or unverifiable


class _OverBudget(Exception):
    """A check or compile reached its keyword-evaluation budget."""


class _Budget(threading.local):
    left = MAX_EVALUATIONS


_budget = _Budget()
_logged: set[str] = set()


def _log_once(what: str, detail: str, per: str = "") -> None:
    """Log ``what`` once (once per ``per`` when given: a pattern), however often it recurs."""
    key = f"{what}:{per[:200]}"
    if key in _logged:
        return
    if len(_logged) >= _LOGGED_MAX:
        _logged.clear()
    _logged.add(key)
    log.warning("agentwatch: %s (%s)", what, detail[:200])


# --------------------------------------------------------------------------- patterns on RE2


class _Pattern:
    """One compiled pattern: ``search(text)`` says whether it matches anywhere in ``text``.

    Uses the bindings' core matcher directly when it is there (no match object,
    a sixth of ``re2.search``'s time on short strings), else the public ``search``.
    """

    __slots__ = ("_anchor", "_match", "_search")

    def __init__(self, compiled: Any) -> None:
        self._search = compiled.search
        self._anchor = getattr(getattr(_re2, "_Anchor", None), "UNANCHORED", None)
        match = getattr(getattr(compiled, "_regexp", None), "Match", None)
        self._match = match if self._anchor is not None else None

    def search(self, text: str) -> bool:
        match = self._match
        if match is None:
            try:
                return self._search(text) is not None
            except UnicodeEncodeError:  # lone surrogates: match the text with them replaced
                return self._search(text.encode("utf-8", "replace").decode("utf-8")) is not None
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            data = text.encode("utf-8", "replace")
        return bool(match(self._anchor, data, 0, len(data))[0][0] >= 0)


_UNSUPPORTED = object()  # cached marker: a pattern RE2 cannot run (or too long): skipped
_BAD = object()  # cached marker: not a regular expression in any dialect: the schema is invalid
_patterns: dict[str, Any] = {}


def _options() -> Any:
    options = _re2.Options()
    options.log_errors = False  # a rejected pattern is ours to report, not stderr's
    options.never_capture = True  # only "does it match" is asked
    return options


_OPTIONS = _options() if _re2 is not None else None


def _pattern(pattern: str) -> Any:
    """The compiled pattern, :data:`_UNSUPPORTED` or :data:`_BAD`; cached."""
    hit = _patterns.get(pattern)
    if hit is not None:
        return hit
    compiled: Any = _UNSUPPORTED
    if _re2 is not None and len(pattern) <= MAX_PATTERN_CHARS:
        try:
            compiled = _Pattern(_re2.compile(pattern, _OPTIONS))
        except Exception:
            try:  # only compiled, never matched: Python's re only judges the syntax
                re.compile(pattern)
            except re.error:
                compiled = _BAD
            except Exception:  # e.g. RecursionError on deeply nested groups
                pass
    if compiled is _UNSUPPORTED:
        _log_once("schema pattern not checked: not RE2 syntax (lookaround, backreference) or long", pattern, pattern)
    if len(_patterns) >= _PATTERN_MAX:
        _patterns.clear()
    _patterns[pattern] = compiled
    return compiled


def _matches(pattern: str, text: str) -> bool | None:
    """Whether ``pattern`` matches somewhere in ``text``; ``None`` when that cannot be told safely."""
    if len(text) > MAX_PATTERN_INPUT_CHARS:
        _log_once("schema pattern not checked on a string over MAX_PATTERN_INPUT_CHARS", f"{len(text)} characters")
        return None
    compiled = _pattern(pattern)
    if compiled is _UNSUPPORTED or compiled is _BAD:
        return None
    return bool(compiled.search(text))


def _pattern_format(instance: object) -> bool:
    """The meta-schema's ``regex`` format: a pattern either engine accepts (or too long to try)."""
    return not isinstance(instance, str) or _pattern(instance) is not _BAD


# --------------------------------------------------------------------------- keywords

Keyword = Callable[[Any, Any, Any, Any], Any]


def _pattern_keyword(validator: Any, patrn: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and isinstance(patrn, str) and _matches(patrn, instance) is False:
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(validator: Any, patterns: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object") or not isinstance(patterns, Mapping):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if isinstance(key, str) and _matches(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, extra: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """``additionalProperties``: the properties neither ``properties`` nor a pattern covers.

    A property whose match cannot be told (unsupported pattern, over-long name)
    counts as covered: never a finding from an unverifiable part.
    """
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = []
    for key in instance:
        if key in named:
            continue
        if isinstance(key, str) and any(_matches(p, key) is not False for p in patterns):
            continue
        extras.append(key)
    if not extras:
        return
    if validator.is_type(extra, "object"):
        for key in extras:
            yield from validator.descend(instance[key], extra, path=key)
    elif not extra:
        names = ", ".join(repr(k) for k in sorted(extras, key=str))
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            yield ValidationError(f"{names} {verb} not match any of the regexes: "
                                  + ", ".join(repr(p) for p in sorted(patterns)))
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({names} {verb} unexpected)")


def _equality_key(value: Any) -> Any:
    """A hashable stand-in equal for JSON-equal values: 1 and 1.0 alike, ``true`` and 1 not."""
    if value is True or value is False:
        return (bool, value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return (dict, frozenset((k, _equality_key(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (list, tuple(_equality_key(v) for v in value))
    return value  # numbers (1 == 1.0, same hash), None, other hashables


def _unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    """``uniqueItems`` in linear time (jsonschema compares objects pairwise: 4 s for 2,000 of them)."""
    if not unique or not validator.is_type(instance, "array") or len(instance) < 2:
        return
    try:
        seen = {_equality_key(item) for item in instance}
    except TypeError:  # an unhashable non-JSON value: not checkable
        return
    if len(seen) < len(instance):
        yield ValidationError("the array has non-unique elements")  # not its repr: it may be huge


def _skipped(validator: Any, value: Any, instance: Any, schema: Any) -> None:
    """A keyword left unchecked (``unevaluatedProperties`` beside ``patternProperties``)."""
    return None


# Resolving a reference costs about twenty-five times an applicator keyword.
_COST = {"$ref": 25, "$dynamicRef": 25, "$recursiveRef": 25}
# Keywords that never evaluate a subschema are not counted: every call of one
# comes from a counted evaluation, and its own work is bounded by the schema's
# and the arguments' sizes. (Draft 3's "type" may hold schemas: counted there.)
_LEAF = frozenset({
    "$comment", "const", "dependentRequired", "enum", "exclusiveMaximum", "exclusiveMinimum", "format",
    "maxItems", "maxLength", "maxProperties", "maximum", "minItems", "minLength", "minProperties", "minimum",
    "multipleOf", "pattern", "required", "uniqueItems",
})


def _counted(keyword: Keyword, cost: int) -> Keyword:
    """``keyword`` spending ``cost`` evaluations of the thread's budget first."""

    def counted(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        budget = _budget
        left = budget.left - cost
        if left < 0:
            raise _OverBudget
        budget.left = left
        return keyword(validator, value, instance, schema)

    counted.__name__ = getattr(keyword, "__name__", "keyword")
    return counted


_classes: dict[tuple[Any, bool], Any] = {}
_class_lock = threading.Lock()


def _bounded_class(base: Any, skip_unevaluated: bool) -> Any:
    """``base`` (a jsonschema draft) with RE2 patterns and every keyword counted against the budget."""
    key = (base, skip_unevaluated)
    cls = _classes.get(key)
    if cls is not None:
        return cls
    keywords: dict[str, Keyword] = dict(base.VALIDATORS)
    if "pattern" in keywords:
        keywords["pattern"] = _pattern_keyword
    if "patternProperties" in keywords:
        keywords["patternProperties"] = _pattern_properties
    if "additionalProperties" in keywords:
        keywords["additionalProperties"] = _additional_properties
    if "uniqueItems" in keywords:
        keywords["uniqueItems"] = _unique_items
    if skip_unevaluated and "unevaluatedProperties" in keywords:
        keywords["unevaluatedProperties"] = _skipped
    checker = jsonschema.FormatChecker(())
    checker.checkers = {**base.FORMAT_CHECKER.checkers, "regex": (_pattern_format, (Exception,))}
    leaf = _LEAF | {"type"} if base is not jsonschema.Draft3Validator else _LEAF
    counted = {name: fn if name in leaf else _counted(fn, _COST.get(name, 1)) for name, fn in keywords.items()}
    cls = jsonschema.validators.extend(base, counted, format_checker=checker)
    with _class_lock:
        _classes[key] = cls
    return cls


# --------------------------------------------------------------------------- the checker


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _too_deep(value: Any, limit: int) -> bool:
    """Whether containers in ``value`` nest deeper than ``limit`` (level by level: any depth is safe)."""
    level = [value]
    for _ in range(limit):
        below: list[Any] = []
        for node in level:
            if node.__class__ is dict or isinstance(node, Mapping):
                children: Iterable[Any] = node.values()
            elif node.__class__ is list or isinstance(node, (list, tuple)):
                children = node
            else:
                continue
            below.extend([child for child in children if child.__class__ not in _SCALARS])
        if not below:
            return False
        level = below
    return any(isinstance(node, (Mapping, list, tuple)) for node in level)


class SchemaChecker:
    """Validate arguments against schemas with bounded validator caches."""

    __slots__ = ("_by_id", "_by_text", "_text_chars")

    def __init__(self) -> None:
        # id(schema) -> (schema, compiled | _INVALID); compiled = (validator, has references)
        self._by_id: dict[int, tuple[Any, Any]] = {}
        self._by_text: dict[str, Any] = {}
        self._text_chars = 0

    def _validator(self, schema: Any) -> Any:
        hit = self._by_id.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        text = canonical_json(schema)
        if len(text) > MAX_SCHEMA_CHARS or text_too_deep(text, MAX_SCHEMA_DEPTH):
            _log_once("tool schema not checked: over MAX_SCHEMA_CHARS or MAX_SCHEMA_DEPTH", f"{len(text)} characters")
            validator: Any = _INVALID  # not kept by text: big texts would fill the cache
        else:
            validator = self._by_text.get(text)
            if validator is None:
                validator = _compile(schema, text)
                if len(self._by_text) >= _CANONICAL_MAX or self._text_chars > _CANONICAL_CHARS_MAX:
                    self._by_text.clear()
                    self._text_chars = 0
                self._by_text[text] = validator
                self._text_chars += len(text)
        if len(self._by_id) >= _IDENTITY_MAX:
            self._by_id.clear()
        self._by_id[id(schema)] = (schema, validator)  # holding the schema keeps its id unique
        return validator

    def check(self, schema: Any, arguments: Any) -> tuple[bool, str | None]:
        """``(schema_ok, problem)``: ``problem`` says why ``arguments`` do not validate, else ``None``.

        ``schema_ok`` is ``False`` when the schema is invalid or the check is
        unverifiable (a limit tripped); then there is never a problem.
        """
        if not isinstance(schema, (dict, bool)):
            return False, None
        compiled = self._validator(schema)
        if compiled is _INVALID or arguments.__class__ is Unparsed:
            return False, None
        validator, recursive = compiled
        # Without references validation descends no deeper than the schema (bounded);
        # through them, as deep as the arguments go: bound those first.
        if recursive and _too_deep(arguments, MAX_DEPTH):
            return False, None
        _budget.left = MAX_EVALUATIONS
        try:
            if validator.is_valid(arguments):
                return True, None
            error = best_match(validator.iter_errors(arguments))
        except _OverBudget:
            _log_once("tool arguments not checked: over the evaluation budget", f"{MAX_EVALUATIONS} evaluations")
            return False, None
        except Exception:  # unresolvable $ref, recursion: not the agent's fault
            return False, None
        if error is None:  # pragma: no cover - is_valid said otherwise
            return True, None
        return True, _reason(error)


_NAMES_ONLY = frozenset({"required", "additionalProperties", "dependentRequired", "unevaluatedProperties"})


def _reason(error: Any) -> str:
    """Why the arguments fail, told from the schema's side only.

    jsonschema's own message quotes the offending value ("'sk-…' is not of type
    'integer'"), and the reason leaves the process as an event and a log line.
    """
    where = "/".join(str(p) for p in error.absolute_path)
    if error.validator in _NAMES_ONLY:  # these messages name properties, never quote a value
        message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
        return f"{message} (at {where or 'top level'})"
    try:
        expected = canonical_json(error.validator_value)
    except Exception:
        expected = "?"
    if len(expected) > 120:
        expected = expected[:117] + "..."
    return f"fails {error.validator} {expected} (at {where or 'top level'})"


def _compile(schema: Any, text: str) -> Any:
    """``(validator, has references)`` for ``schema``, or :data:`_INVALID` (invalid schema, limit tripped)."""
    try:
        base = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        if text.count('"$schema":') > (1 if isinstance(schema, dict) and "$schema" in schema else 0):
            _log_once("tool schema not checked: a $schema below its root", text[:80])
            return _INVALID  # jsonschema would validate that part with its stock, unbounded classes
        # jsonschema would match patternProperties' patterns with Python's re for unevaluatedProperties.
        skip = '"patternProperties":' in text and '"unevaluatedProperties":' in text
        if skip:
            _log_once("unevaluatedProperties not checked beside patternProperties", text[:80])
        cls = _bounded_class(base, skip)
        meta_cls = _bounded_class(jsonschema.validators.validator_for(base.META_SCHEMA, default=base), False)
        meta = meta_cls(base.META_SCHEMA, format_checker=meta_cls.FORMAT_CHECKER)
        _budget.left = MAX_EVALUATIONS
        for _ in meta.iter_errors(schema):
            return _INVALID
        recursive = any(f'"{ref}":' in text for ref in _COST)
        return cls(schema), recursive
    except Exception:  # including _OverBudget
        return _INVALID
