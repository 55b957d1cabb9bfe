"""Configuration: arguments win over ``AGENTWATCH_*`` variables, which win over a YAML file.

The file has the shape of seed 004's safe-default config (``agent.budgets``,
``agent.loop_detection``, ``agent.tools.allow``/``deny``, ``agent.logging.redact``)
plus agentwatch's own sections (``agent.anomaly``, ``agent.entities``,
``agent.limits``, ``agent.prices``). It is found at ``$AGENTWATCH_CONFIG``, else
``./agentwatch.yaml`` when present. Built-in defaults live in
``data/defaults.yaml``.

Every layer (file, ``AGENTWATCH_*`` variables, the ``config=`` argument) is
checked on its own against ``data/agentwatch.schema.json`` (see
:mod:`agentwatch.config_schema`), so an error names the file or variable at
fault and the full dotted key; nothing unknown or mistyped is ignored.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .budget import Budget
from .config_schema import AGENT_SCHEMA, check, dotted
from .config_schema import Path as KeyPath
from .errors import ConfigError
from .gateway.settings import GatewaySettings, parse_gateway
from .redaction import BUILTIN_REDACT_KEYS

ENV_CONFIG_FILE = "AGENTWATCH_CONFIG"
DEFAULT_CONFIG_FILE = "agentwatch.yaml"


@dataclass(frozen=True)
class LoopConfig:
    repeated_calls_threshold: int = 3
    cycle_repeats: int = 2
    no_progress_threshold: int = 6


@dataclass(frozen=True)
class ToolPolicy:
    """Allow/deny globs (seed 004, section 2) and which tools write."""

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    enforce: bool = False
    side_effects: tuple[str, ...] = ()
    idempotency_keys: tuple[str, ...] = ("idempotency_key",)

    def denial(self, tool: str) -> str | None:
        """Why ``tool`` is denied, or ``None`` when it is allowed."""
        for pattern in self.deny:
            if fnmatch.fnmatchcase(tool, pattern):
                return f"tool {tool!r} matches deny pattern {pattern!r}"
        if self.allow and not any(fnmatch.fnmatchcase(tool, p) for p in self.allow):
            return f"tool {tool!r} is not in the allow list"
        return None

    def is_side_effect(self, tool: str) -> bool:
        return any(fnmatch.fnmatchcase(tool, p) for p in self.side_effects)


@dataclass(frozen=True)
class AnomalyConfig:
    inline: bool = True
    implicit_runs: bool = True  # group calls outside any run span into implicit runs (contract §8)
    token_spike_factor: float = 5.0
    token_spike_min_history: int = 2
    retry_storm_threshold: int = 3
    disabled: frozenset[str] = frozenset()
    severity: Mapping[str, str] = field(default_factory=dict)
    log_findings: bool = True


@dataclass(frozen=True)
class EntityConfig:
    prefixes: Mapping[str, str] = field(default_factory=dict)
    patterns: tuple[tuple[str, str], ...] = ()  # (entity type, regex)


@dataclass(frozen=True)
class Limits:
    max_runs: int = 10_000
    max_calls_per_run: int = 20_000
    max_entities_per_run: int = 10_000
    run_ttl_seconds: float = 3600.0


@dataclass(frozen=True)
class Config:
    """The resolved configuration every component reads (immutable; swap, don't mutate)."""

    budget: Budget = field(default_factory=Budget)
    loop: LoopConfig = LoopConfig()
    tools: ToolPolicy = ToolPolicy()
    anomaly: AnomalyConfig = AnomalyConfig()
    entities: EntityConfig = EntityConfig()
    limits: Limits = Limits()
    redact_keys: tuple[str, ...] = ()
    max_content_chars: int = 4096
    call_log: bool = False  # logging.structured: one record per tool call and run (calllog)
    call_log_include: tuple[str, ...] | None = None  # logging.include; None = every field
    log_level: str | None = None  # logging.level of agentwatch's own loggers
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    source: str = "defaults"


# --------------------------------------------------------------------------- loading


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    text = resources.files("agentwatch").joinpath("data/defaults.yaml").read_text("utf-8")
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def read_yaml(path: Path) -> dict[str, Any]:
    """Load a YAML mapping; every error names the file, and syntax errors the line and column."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise ConfigError(f"cannot read config file {path}: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def validate(data: Any, source: str, label: Callable[[KeyPath], str] = dotted) -> dict[str, Any]:
    """Check one layer (a file's content, a ``config=`` mapping) against the schema; return it as a dict."""
    check(AGENT_SCHEMA, data, source, label)
    agent = (data or {}).get("agent") or {}
    for i, item in enumerate((agent.get("entities") or {}).get("patterns") or []):
        try:
            re.compile(item["regex"])
        except re.error as exc:
            raise ConfigError(f"{source}: {label(('agent', 'entities', 'patterns', i, 'regex'))} is not a valid "
                              f"regular expression: {exc}") from None
    return dict(data or {})


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``; lists and scalars are replaced.

    A null section (``tools:`` with nothing under it) overrides nothing.
    """
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(out.get(key), dict) and (value is None or isinstance(value, Mapping)):
            if value is not None:
                out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------- environment

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_INTEGER = re.compile(r"[+-]?[0-9]+")


def _env_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError("must be true/false, 1/0 or yes/no")


def _env_int(value: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise ValueError("must be an integer")
    return int(value)


def _env_number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number") from None
    if not math.isfinite(number):
        raise ValueError("must be a finite number")
    return number


def _env_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


# AGENTWATCH_* variable -> (path in the agent section, parser). Ranges come from the schema.
ENV_VARIABLES: dict[str, tuple[tuple[str, ...], Callable[[str], Any]]] = {
    "AGENTWATCH_MAX_STEPS": (("budgets", "max_steps"), _env_int),
    "AGENTWATCH_MAX_TOOL_CALLS": (("budgets", "max_tool_calls"), _env_int),
    "AGENTWATCH_MAX_SECONDS": (("budgets", "max_seconds"), _env_number),
    "AGENTWATCH_MAX_USD": (("budgets", "max_usd"), _env_number),
    "AGENTWATCH_MAX_TOKENS": (("budgets", "max_tokens"), _env_int),
    "AGENTWATCH_MAX_UNIQUE_CALLS": (("budgets", "max_unique_calls"), _env_int),
    "AGENTWATCH_ENFORCE": (("budgets", "enforce"), _env_bool),
    "AGENTWATCH_LOOP_THRESHOLD": (("loop_detection", "repeated_calls_threshold"), _env_int),
    "AGENTWATCH_NO_PROGRESS_THRESHOLD": (("loop_detection", "no_progress_threshold"), _env_int),
    "AGENTWATCH_TOOLS_ALLOW": (("tools", "allow"), _env_list),
    "AGENTWATCH_TOOLS_DENY": (("tools", "deny"), _env_list),
    "AGENTWATCH_TOOLS_ENFORCE": (("tools", "enforce"), _env_bool),
    "AGENTWATCH_REDACT": (("logging", "redact"), _env_list),
    "AGENTWATCH_MAX_CONTENT_CHARS": (("logging", "max_content_chars"), _env_int),
    "AGENTWATCH_INLINE_DETECTION": (("anomaly", "inline"), _env_bool),
    "AGENTWATCH_IMPLICIT_RUNS": (("anomaly", "implicit_runs"), _env_bool),
    "AGENTWATCH_LOG_FINDINGS": (("anomaly", "log_findings"), _env_bool),
    "AGENTWATCH_DISABLED_FLAGS": (("anomaly", "disabled"), _env_list),
    # Contract section 6; rejected as "not implemented yet" until the tool gateway exists.
    "AGENTWATCH_SAFE_MODE": (("safe_mode", "enabled"), _env_bool),
}

# AGENTWATCH_* variables that are not configuration keys but are read elsewhere
# (add a variable here when code starts reading it; a test checks the source tree).
OTHER_ENV_VARIABLES = frozenset({
    ENV_CONFIG_FILE,
    # Grafana contact points of the bundled dashboards (collector/grafana, docker-compose.yml).
    "AGENTWATCH_PAGE_WEBHOOK_URL",
    "AGENTWATCH_URGENT_WEBHOOK_URL",
    "AGENTWATCH_DIGEST_WEBHOOK_URL",
})


def _env_label(path: KeyPath) -> str:
    """Name the variable (and the key it sets) for an error at ``path`` of the environment layer."""
    inner = path[1:] if path[:1] == ("agent",) else path
    for name, (target, _) in ENV_VARIABLES.items():
        n = min(len(target), len(inner))
        if n and tuple(inner[:n]) == target[:n]:
            return f"{name} ({dotted(('agent', *target))})"
    return dotted(path)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """The ``AGENTWATCH_*`` layer. An empty variable counts as unset (as for ``OTEL_*``)."""
    known = ENV_VARIABLES.keys() | OTHER_ENV_VARIABLES
    for name in env:
        if name.startswith("AGENTWATCH_") and name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(sorted(ENV_VARIABLES))}"
            raise ConfigError(f"unknown environment variable {name}{hint}")
    agent: dict[str, Any] = {}
    for name, (path, parse) in ENV_VARIABLES.items():
        raw = env.get(name)
        if raw is None or not raw.strip():
            continue
        try:
            value = parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}={raw!r} is invalid: {exc}") from None
        node = agent
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    layer = {"agent": agent} if agent else {}
    return validate(layer, "environment", _env_label) if layer else layer


# --------------------------------------------------------------------------- resolution


def _find_file(env: Mapping[str, str]) -> Path | None:
    named = env.get(ENV_CONFIG_FILE)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{ENV_CONFIG_FILE}={named!r}: no such file")
        return path
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


def load_file(path: Path) -> dict[str, Any]:
    """Read and validate one ``agentwatch.yaml``-shaped file (errors name the file and key)."""
    return validate(read_yaml(path), f"config file {path}")


def load_config(
    argument: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Resolve the configuration from defaults, file, environment and ``argument``.

    ``argument`` may be a ready :class:`Config` (used as is), a mapping in the
    seed-004 shape, or the path of a YAML file. Raises :class:`ConfigError`
    with the file, variable or key at fault.
    """
    if isinstance(argument, Config):
        return argument
    if argument is not None and not isinstance(argument, (Mapping, str, os.PathLike)):
        raise ConfigError(
            f"config must be an agentwatch.Config, a mapping ({{'agent': {{...}}}}) or the path of a YAML file, "
            f"got {type(argument).__name__}"
        )
    env = os.environ if env is None else env
    data = _defaults()
    sources = ["defaults"]
    path = _find_file(env)
    if path is not None:
        data = _merge(data, load_file(path))
        sources.append(str(path))
    data = _merge(data, _env_overrides(env))
    if isinstance(argument, (str, os.PathLike)):
        arg_path = Path(argument)
        if not arg_path.is_file():
            raise ConfigError(f"config file {arg_path}: no such file")
        data = _merge(data, load_file(arg_path))
        sources.append(str(arg_path))
    elif isinstance(argument, Mapping):
        data = _merge(data, validate(argument, "config argument"))
        sources.append("argument")
    return _build(data, "+".join(sources))


def _build(data: Mapping[str, Any], source: str) -> Config:
    """The :class:`Config` of a merged, already validated mapping."""
    agent = data.get("agent") or {}

    def section(name: str) -> dict[str, Any]:
        return dict(agent.get(name) or {})

    budgets = section("budgets")
    limits_given: dict[str, Any] = {
        k: (int(v) if isinstance(v, float) and k in _INT_BUDGET_KEYS else v) for k, v in budgets.items()
    }
    budget = Budget(**limits_given)

    loops = section("loop_detection")
    loop = LoopConfig(
        repeated_calls_threshold=int(loops.get("repeated_calls_threshold", 3)),
        cycle_repeats=int(loops.get("cycle_repeats", 2)),
        no_progress_threshold=int(loops.get("no_progress_threshold", 6)),
    )

    tools_raw = section("tools")
    tools = ToolPolicy(
        allow=tuple(tools_raw.get("allow") or ()),
        deny=tuple(tools_raw.get("deny") or ()),
        enforce=bool(tools_raw.get("enforce", False)),
        # idempotency_required globs are writes too: DUPLICATE_SIDE_EFFECT watches them.
        side_effects=tuple(tools_raw.get("side_effects") or ()) + tuple(tools_raw.get("idempotency_required") or ()),
        idempotency_keys=tuple(tools_raw.get("idempotency_keys", ["idempotency_key"])),
    )

    an = section("anomaly")
    anomaly = AnomalyConfig(
        inline=bool(an.get("inline", True)),
        implicit_runs=bool(an.get("implicit_runs", True)),
        token_spike_factor=float(an.get("token_spike_factor", 5.0)),
        token_spike_min_history=int(an.get("token_spike_min_history", 2)),
        retry_storm_threshold=int(an.get("retry_storm_threshold", 3)),
        disabled=frozenset(an.get("disabled") or ()),
        severity=dict(an.get("severity") or {}),
        log_findings=bool(an.get("log_findings", True)),
    )

    ent = section("entities")
    entities = EntityConfig(
        prefixes={str(k).lower(): str(v) for k, v in (ent.get("prefixes") or {}).items()},
        patterns=tuple((str(p.get("type", "id")), str(p["regex"])) for p in ent.get("patterns") or ()),
    )

    lim = section("limits")
    limits = Limits(
        max_runs=int(lim.get("max_runs", 10_000)),
        max_calls_per_run=int(lim.get("max_calls_per_run", 20_000)),
        max_entities_per_run=int(lim.get("max_entities_per_run", 10_000)),
        run_ttl_seconds=float(lim.get("run_ttl_seconds", 3600)),
    )

    log = section("logging")
    # Model names are looked up lower-cased, so the keys are too (else "My-Model" would never match).
    prices = {
        str(model).lower(): {str(k): float(v) for k, v in entry.items()}
        for model, entry in (agent.get("prices") or {}).items()
    }

    return Config(
        budget=budget,
        loop=loop,
        tools=tools,
        anomaly=anomaly,
        entities=entities,
        limits=limits,
        # agent.logging.redact adds to the built-in keys; it never removes one
        redact_keys=tuple(dict.fromkeys((*BUILTIN_REDACT_KEYS, *(k.lower() for k in log.get("redact") or ())))),
        max_content_chars=int(log.get("max_content_chars", 4096)),
        call_log=bool(log.get("structured", False)),
        call_log_include=tuple(log["include"]) if log.get("include") is not None else None,
        log_level=log.get("level"),
        prices=prices,
        gateway=parse_gateway(agent),
        source=source,
    )


_INT_BUDGET_KEYS = frozenset({"max_steps", "max_tool_calls", "max_tokens", "max_unique_calls"})
