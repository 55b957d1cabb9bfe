"""Configuration: arguments win over ``AGENTWATCH_*`` variables, which win over a YAML file.

The file has the shape of seed 004's safe-default config (``agent.budgets``,
``agent.loop_detection``, ``agent.tools.allow``/``deny``, ``agent.logging.redact``)
plus agentwatch's own sections (``agent.anomaly``, ``agent.entities``,
``agent.limits``, ``agent.prices``). It is found at ``$AGENTWATCH_CONFIG``, else
``./agentwatch.yaml`` when present. Built-in defaults live in
``data/defaults.yaml``. Every error names the file or variable at fault.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .budget import Budget
from .errors import ConfigError
from .semconv import Flag, Severity

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
    prices: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
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
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
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


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``over`` into a copy of ``base``; lists and scalars are replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


# AGENTWATCH_* variable -> (path in the agent section, parser)
_ENV: dict[str, tuple[tuple[str, ...], Any]] = {
    "AGENTWATCH_MAX_STEPS": (("budgets", "max_steps"), int),
    "AGENTWATCH_MAX_TOOL_CALLS": (("budgets", "max_tool_calls"), int),
    "AGENTWATCH_MAX_SECONDS": (("budgets", "max_seconds"), float),
    "AGENTWATCH_MAX_USD": (("budgets", "max_usd"), float),
    "AGENTWATCH_MAX_TOKENS": (("budgets", "max_tokens"), int),
    "AGENTWATCH_MAX_UNIQUE_CALLS": (("budgets", "max_unique_calls"), int),
    "AGENTWATCH_ENFORCE": (("budgets", "enforce"), _bool),
    "AGENTWATCH_LOOP_THRESHOLD": (("loop_detection", "repeated_calls_threshold"), int),
    "AGENTWATCH_NO_PROGRESS_THRESHOLD": (("loop_detection", "no_progress_threshold"), int),
    "AGENTWATCH_TOOLS_ALLOW": (("tools", "allow"), _split),
    "AGENTWATCH_TOOLS_DENY": (("tools", "deny"), _split),
    "AGENTWATCH_TOOLS_ENFORCE": (("tools", "enforce"), _bool),
    "AGENTWATCH_REDACT": (("logging", "redact"), _split),
    "AGENTWATCH_MAX_CONTENT_CHARS": (("logging", "max_content_chars"), int),
    "AGENTWATCH_INLINE_DETECTION": (("anomaly", "inline"), _bool),
    "AGENTWATCH_IMPLICIT_RUNS": (("anomaly", "implicit_runs"), _bool),
    "AGENTWATCH_LOG_FINDINGS": (("anomaly", "log_findings"), _bool),
    "AGENTWATCH_DISABLED_FLAGS": (("anomaly", "disabled"), _split),
}


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    agent: dict[str, Any] = {}
    for name, (path, parse) in _ENV.items():
        raw = env.get(name)
        if raw is None:
            continue
        try:
            value = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"environment variable {name}={raw!r} is invalid: {exc}") from None
        node = agent
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return {"agent": agent} if agent else {}


def _find_file(env: Mapping[str, str]) -> Path | None:
    named = env.get(ENV_CONFIG_FILE)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{ENV_CONFIG_FILE}={named!r}: no such file")
        return path
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


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
    env = os.environ if env is None else env
    data = _defaults()
    sources = ["defaults"]
    path = _find_file(env)
    if path is not None:
        data = _merge(data, read_yaml(path))
        sources.append(str(path))
    data = _merge(data, _env_overrides(env))
    if isinstance(argument, (str, os.PathLike)):
        arg_path = Path(argument)
        if not arg_path.is_file():
            raise ConfigError(f"config file {arg_path}: no such file")
        data = _merge(data, read_yaml(arg_path))
        sources.append(str(arg_path))
    elif isinstance(argument, Mapping):
        data = _merge(data, argument)
        sources.append("argument")
    try:
        return _build(data, "+".join(sources))
    except ConfigError:
        raise
    except (TypeError, ValueError, KeyError, re.error) as exc:
        raise ConfigError(f"invalid configuration ({' + '.join(sources)}): {exc}") from None


def _section(agent: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = agent.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"agent.{name} must be a mapping, got {type(value).__name__}")
    return dict(value)


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} must be a list of strings")
    return tuple(str(v) for v in value)


def _positive(value: Any, where: str, kind: type = int) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{where} must be a positive number, got {value!r}")
    return kind(value)


def _build(data: Mapping[str, Any], source: str) -> Config:
    agent = data.get("agent") or {}
    if not isinstance(agent, Mapping):
        raise ConfigError("the top-level 'agent' key must be a mapping")

    budget = Budget.from_mapping(_section(agent, "budgets"))

    loops = _section(agent, "loop_detection")
    loop = LoopConfig(
        repeated_calls_threshold=_positive(
            loops.get("repeated_calls_threshold", 3), "agent.loop_detection.repeated_calls_threshold"
        ),
        cycle_repeats=_positive(loops.get("cycle_repeats", 2), "agent.loop_detection.cycle_repeats"),
        no_progress_threshold=_positive(
            loops.get("no_progress_threshold", 6), "agent.loop_detection.no_progress_threshold"
        ),
    )

    tools_raw = _section(agent, "tools")
    tools = ToolPolicy(
        allow=_strings(tools_raw.get("allow"), "agent.tools.allow"),
        deny=_strings(tools_raw.get("deny"), "agent.tools.deny"),
        enforce=bool(tools_raw.get("enforce", False)),
        side_effects=_strings(tools_raw.get("side_effects"), "agent.tools.side_effects")
        + _strings(tools_raw.get("idempotency_required"), "agent.tools.idempotency_required"),
        idempotency_keys=_strings(
            tools_raw.get("idempotency_keys", ["idempotency_key"]), "agent.tools.idempotency_keys"
        ),
    )

    an = _section(agent, "anomaly")
    flag_names = {f.value for f in Flag}
    disabled = frozenset(_strings(an.get("disabled"), "agent.anomaly.disabled"))
    if disabled - flag_names:
        raise ConfigError(f"agent.anomaly.disabled names unknown flags: {sorted(disabled - flag_names)}")
    severity = dict(an.get("severity") or {})
    for flag_name, level in severity.items():
        if flag_name not in flag_names:
            raise ConfigError(f"agent.anomaly.severity names an unknown flag: {flag_name!r}")
        if level not in {s.value for s in Severity}:
            raise ConfigError(f"agent.anomaly.severity.{flag_name}: unknown severity {level!r}")
    anomaly = AnomalyConfig(
        inline=bool(an.get("inline", True)),
        implicit_runs=bool(an.get("implicit_runs", True)),
        token_spike_factor=_positive(an.get("token_spike_factor", 5.0), "agent.anomaly.token_spike_factor", float),
        token_spike_min_history=int(an.get("token_spike_min_history", 2)),
        retry_storm_threshold=_positive(
            an.get("retry_storm_threshold", 3), "agent.anomaly.retry_storm_threshold"
        ),
        disabled=disabled,
        severity=severity,
        log_findings=bool(an.get("log_findings", True)),
    )

    ent = _section(agent, "entities")
    prefixes = {str(k).lower(): str(v) for k, v in (ent.get("prefixes") or {}).items()}
    patterns: list[tuple[str, str]] = []
    for i, item in enumerate(ent.get("patterns") or []):
        if not isinstance(item, Mapping) or "regex" not in item:
            raise ConfigError(f"agent.entities.patterns[{i}] needs 'type' and 'regex'")
        try:
            re.compile(str(item["regex"]))
        except re.error as exc:
            raise ConfigError(f"agent.entities.patterns[{i}].regex is invalid: {exc}") from None
        patterns.append((str(item.get("type", "id")), str(item["regex"])))
    entities = EntityConfig(prefixes=prefixes, patterns=tuple(patterns))

    lim = _section(agent, "limits")
    limits = Limits(
        max_runs=_positive(lim.get("max_runs", 10_000), "agent.limits.max_runs"),
        max_calls_per_run=_positive(lim.get("max_calls_per_run", 20_000), "agent.limits.max_calls_per_run"),
        max_entities_per_run=_positive(
            lim.get("max_entities_per_run", 10_000), "agent.limits.max_entities_per_run"
        ),
        run_ttl_seconds=_positive(lim.get("run_ttl_seconds", 3600), "agent.limits.run_ttl_seconds", float),
    )

    log = _section(agent, "logging")
    prices_raw = agent.get("prices") or {}
    if not isinstance(prices_raw, Mapping):
        raise ConfigError("agent.prices must map model names to {input, output, ...} USD per 1M tokens")
    prices: dict[str, dict[str, float]] = {}
    for model, entry in prices_raw.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"agent.prices.{model} must be a mapping")
        prices[str(model)] = {str(k): float(v) for k, v in entry.items()}

    return Config(
        budget=budget,
        loop=loop,
        tools=tools,
        anomaly=anomaly,
        entities=entities,
        limits=limits,
        redact_keys=tuple(k.lower() for k in _strings(log.get("redact"), "agent.logging.redact")),
        max_content_chars=_positive(log.get("max_content_chars", 4096), "agent.logging.max_content_chars"),
        prices=prices,
        source=source,
    )
