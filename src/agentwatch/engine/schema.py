"""``TOOL_ARG_MISMATCH``: arguments checked against the tool's declared JSON Schema.

Compiling a validator costs far more than using one, so validators are cached:
first by the schema object's identity (the instrumentation hands the same dict
for every call of a tool), then by the schema's canonical JSON (a collector
rebuilds the dict for every span). A schema that is itself invalid, or that
cannot be resolved (a remote ``$ref``), is the integration's problem, not the
agent's: it is counted, never flagged.
"""

from __future__ import annotations

from typing import Any

import jsonschema
from jsonschema.exceptions import best_match

from ..hashing import canonical_json

_IDENTITY_MAX = 256
_CANONICAL_MAX = 1024
_INVALID = object()  # cached marker: the schema itself is invalid


class SchemaChecker:
    """Validate arguments against schemas with bounded validator caches."""

    __slots__ = ("_by_id", "_by_text")

    def __init__(self) -> None:
        self._by_id: dict[int, tuple[Any, Any]] = {}  # id(schema) -> (schema, validator | _INVALID)
        self._by_text: dict[str, Any] = {}

    def _validator(self, schema: Any) -> Any:
        hit = self._by_id.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        text = canonical_json(schema)
        validator = self._by_text.get(text)
        if validator is None:
            validator = _compile(schema)
            if len(self._by_text) >= _CANONICAL_MAX:
                self._by_text.clear()
            self._by_text[text] = validator
        if len(self._by_id) >= _IDENTITY_MAX:
            self._by_id.clear()
        self._by_id[id(schema)] = (schema, validator)  # holding the schema keeps its id unique
        return validator

    def check(self, schema: Any, arguments: Any) -> tuple[bool, str | None]:
        """``(schema_ok, problem)``: ``problem`` says why ``arguments`` do not validate, else ``None``."""
        if not isinstance(schema, (dict, bool)):
            return False, None
        validator = self._validator(schema)
        if validator is _INVALID:
            return False, None
        try:
            if validator.is_valid(arguments):
                return True, None
            error = best_match(validator.iter_errors(arguments))
        except Exception:  # unresolvable $ref, pathological pattern, recursion: not the agent's fault
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


def _compile(schema: Any) -> Any:
    try:
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        cls.check_schema(schema)
        return cls(schema)
    except Exception:
        return _INVALID
