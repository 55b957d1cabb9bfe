"""Strict validation of configuration against the published JSON Schemas.

The schemas in ``data/agentwatch.schema.json`` and ``data/collector.schema.json``
are the single source of truth for every key, type and range: the same files
editors use to complete and check ``agentwatch.yaml`` and the collector's
config. This module turns schema violations into one :class:`ConfigError`
that names the source, the full dotted key and, for a typo, the closest known
key ("did you mean ..."). Numbers must be finite: JSON has no NaN or infinity,
but YAML does (``.nan``, ``1e999``), so the type checker rejects them.

A key marked ``"x-agentwatch-not-implemented": true`` in the schema is part of
the published shape (contract section 6) but is rejected with "not implemented
yet": removing that marker (and the description's prefix) is the one change
that makes the key accepted once its feature exists.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from .errors import ConfigError
from .semconv import Flag, Severity

AGENT_SCHEMA = "agentwatch.schema.json"
COLLECTOR_SCHEMA = "collector.schema.json"
NOT_IMPLEMENTED = "x-agentwatch-not-implemented"

Path = tuple[Any, ...]
Label = Callable[[Path], str]

# Messages for the schema's patterns (a regex is no help to a user).
_PATTERN_MESSAGES = {
    "^[\\x20-\\x7E\\t]*$": "may hold only visible ASCII characters, spaces and tabs (no CR, LF or other control "
    "characters)",
    "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$": "is not a valid header name (letters, digits and !#$%&'*+.^_`|~- only)",
}


def _is_number(_checker: Any, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int)


def _is_integer(_checker: Any, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    return isinstance(value, int)


_Validator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many({"number": _is_number, "integer": _is_integer}),
)


@cache
def schema(name: str) -> dict[str, Any]:
    """A shipped schema; the agent schema's flag and severity lists come from the code (a test keeps the file equal)."""
    data: dict[str, Any] = json.loads(resources.files("agentwatch").joinpath(f"data/{name}").read_text("utf-8"))
    if name == AGENT_SCHEMA:
        data["$defs"]["flag"] = {"enum": [f.value for f in Flag]}
        data["$defs"]["severity"] = {"enum": [s.value for s in Severity]}
    return data


@cache
def _validator(name: str) -> Any:
    registry: Registry[Any] = Registry().with_resource(
        AGENT_SCHEMA, Resource.from_contents(schema(AGENT_SCHEMA))
    )
    return _Validator(schema(name), registry=registry)


def dotted(path: Path) -> str:
    """``('agent', 'entities', 'patterns', 0, 'regex')`` -> ``agent.entities.patterns[0].regex``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _got(value: Any) -> str:
    """What a wrong value is, with a hint for the usual YAML slips (quoted numbers and booleans)."""
    if value is None:
        return "got null"
    if isinstance(value, float) and not math.isfinite(value):
        return f"got {value!r} (numbers must be finite)"
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false", "yes", "no", "on", "off"):
            return f"got the string {_show(value)} (a quoted boolean: write true or false without quotes)"
        try:
            float(lowered)
        except ValueError:
            return f"got the string {_show(value)}"
        return f"got the string {_show(value)} (a quoted number: write it without quotes)"
    kinds = {bool: "a boolean", int: "an integer", float: "a number", list: "a list", dict: "a mapping"}
    return f"got {kinds.get(type(value), type(value).__name__)} {_show(value)}"


_TYPE_NAMES = {
    "integer": "an integer",
    "number": "a finite number",
    "boolean": "true or false",
    "string": "a string",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def _describe(error: ValidationError, label: Label) -> list[str]:
    """One message per problem in ``error`` (an unknown-keys error may name several keys)."""
    path = tuple(error.absolute_path)
    where = label(path)
    kind = error.validator
    value = error.instance
    schema_node: Mapping[str, Any] = error.schema if isinstance(error.schema, Mapping) else {}
    in_names = "propertyNames" in error.relative_schema_path
    if in_names:
        if kind == "enum":
            choices = [str(c) for c in _items(error.validator_value)]
            return [f"{where} has an unknown key {value!r}{suggest(str(value), choices)}; known: {', '.join(choices)}"]
        if kind == "pattern":
            why = _PATTERN_MESSAGES.get(str(error.validator_value), "is invalid")
            return [f"{where} has a key {value!r} that {why}"]
        return [f"{where} has an invalid key {value!r}: {error.message}"]
    if kind == "additionalProperties" and isinstance(value, Mapping):
        known = sorted(schema_node.get("properties", {}))
        out = []
        for key in value:
            if key in known:
                continue
            hint = suggest(key, known)
            if not hint and path == () and isinstance(key, str):
                # A flat mapping where the 'agent:' level was left out.
                agent_keys = schema(AGENT_SCHEMA)["$defs"]["agent"]["properties"]
                if key in agent_keys and "agent" in known:
                    hint = f" (did you mean 'agent.{key}'?)"
            out.append(f"unknown key {label((*path, key))!r}{hint}; known keys here: {', '.join(known)}")
        return out
    if kind == "type":
        expected: Any = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        text = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        return [f"{where} must be {text}, {_got(value)}"]
    if kind == "enum":
        choices = [str(c) for c in _items(error.validator_value)]
        return [f"{where} must be one of {', '.join(choices)}; got {_show(value)}{suggest(str(value), choices)}"]
    if kind == "required":
        missing = [k for k in _items(error.validator_value) if isinstance(value, Mapping) and k not in value]
        return [f"{label((*path, k))} is required" for k in missing] or [f"{where}: {error.message}"]
    bounds = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
    if kind in bounds:
        return [f"{where} must be {bounds[kind]} {error.validator_value:g}, got {_show(value)}"]
    if kind == "minLength":
        return [f"{where} must not be empty"]
    if kind == "minProperties":
        return [f"{where} must not be an empty mapping"]
    if kind == "uniqueItems":
        return [f"{where} lists an item twice: {_show(value)}"]
    if kind == "pattern":  # the value is not shown: patterns guard header values, which may be secrets
        return [f"{where} {_PATTERN_MESSAGES.get(str(error.validator_value), 'has an invalid format')}"]
    if kind == "anyOf":
        return [f"{where} is not a known value: {_show(value)}"]
    return [f"{where}: {error.message}"]


def not_implemented(node: Mapping[str, Any], data: Any, base: str = AGENT_SCHEMA, path: Path = ()) -> list[Path]:
    """Paths in ``data`` (set, not null) whose schema entry is marked not implemented yet."""
    node, base = _follow(node, data, base)
    found: list[Path] = []
    if not isinstance(data, Mapping):
        return found
    props = node.get("properties", {})
    for key, value in data.items():
        sub = props.get(key)
        if sub is None or value is None:
            continue
        sub, sub_base = _follow(sub, value, base)
        if sub.get(NOT_IMPLEMENTED):
            found.append((*path, key))
        else:
            found.extend(not_implemented(sub, value, sub_base, (*path, key)))
    return found


def _follow(node: Mapping[str, Any], data: Any, base: str) -> tuple[Mapping[str, Any], str]:
    """Resolve ``$ref`` and ``if``/``then``/``else`` to the schema node that applies to ``data``."""
    for _ in range(8):
        if "$ref" in node:
            file, _, pointer = str(node["$ref"]).partition("#")
            base = file or base
            target: Any = schema(base)
            for part in pointer.strip("/").split("/"):
                if part:
                    target = target[part]
            node = target
        elif "if" in node:
            branch = "then" if _Validator(node["if"]).is_valid(data) else "else"
            node = node.get(branch, {})
        else:
            break
    return node, base


_MAX_PROBLEMS = 20  # a hostile or badly broken file gets a readable error, not thousands of lines


def problems(name: str, data: Any, label: Label = dotted) -> list[str]:
    """Every problem with ``data`` under schema ``name``, one message each (empty when valid)."""
    blocked = not_implemented(schema(name), data, name)
    out = [
        f"{label(p)} is not implemented yet in this version; remove it (agentwatch never ignores a key)"
        for p in blocked
    ]
    errors = sorted(_validator(name).iter_errors(data), key=_order)
    for error in errors:
        path = tuple(error.absolute_path)
        if any(path[: len(b)] == b for b in blocked):
            continue  # already reported as not implemented
        for message in _describe(error, label):
            if message not in out:
                out.append(message)
    return out


def _order(error: ValidationError) -> list[tuple[int, int, str]]:
    """Errors in document order of their paths (list indexes numerically)."""
    return [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.absolute_path]


def check(name: str, data: Any, source: str, label: Label = dotted) -> None:
    """Raise one :class:`ConfigError` listing every problem, each naming ``source`` and the key."""
    found = problems(name, data, label)
    if not found:
        return
    if len(found) == 1:
        raise ConfigError(f"{source}: {found[0]}")
    shown = found[:_MAX_PROBLEMS]
    if len(found) > _MAX_PROBLEMS:
        shown.append(f"... and {len(found) - _MAX_PROBLEMS} more")
    raise ConfigError(f"{source}: {len(found)} problems:\n  - " + "\n  - ".join(shown))
