"""The gateway's configuration: the ``agent.tools`` / ``agent.validation`` /
``agent.safe_mode`` / ``agent.anomaly.stop_on`` keys, turned into plain values.

Every key is optional and off unless set. Values are checked here as well as by
the configuration schema, so a ``GatewaySettings`` built from Python (tests,
embedding) cannot hold a value the schema would refuse.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..semconv import SEVERITY_RANK, Flag

DEFAULT_RETRYABLE_STATUS: tuple[int, ...] = (429, 500, 502, 503, 504)


def _globs_match(globs: Sequence[str], name: str) -> bool:
    return any(g == name or fnmatch.fnmatchcase(name, g) for g in globs)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 1
    retryable_status: frozenset[int] = frozenset(DEFAULT_RETRYABLE_STATUS)
    backoff_ms: tuple[float, ...] = ()

    def wait_seconds(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based): the list's entry, its last one beyond it."""
        if not self.backoff_ms:
            return 0.0
        return self.backoff_ms[min(attempt, len(self.backoff_ms)) - 1] / 1000.0


@dataclass(frozen=True)
class BreakerPolicy:
    enabled: bool = False
    failure_threshold: int = 5
    window_seconds: float = 60.0


@dataclass(frozen=True)
class SafeModePolicy:
    enabled: bool = False
    allowed_tools: tuple[str, ...] = ()
    flag_file: str | None = None


@dataclass(frozen=True)
class GatewaySettings:
    idempotency_required: tuple[str, ...] = ()
    timeouts: Mapping[str, float] = field(default_factory=dict)
    retries: RetryPolicy = RetryPolicy()
    breakers: BreakerPolicy = BreakerPolicy()
    input_strict: bool = False
    output_fail_closed: bool = False
    safe_mode: SafeModePolicy = SafeModePolicy()
    stop_on_severities: frozenset[str] = frozenset()
    stop_on_flags: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        """Whether any gateway key is set: without one the tool path pays nothing extra."""
        return bool(
            self.idempotency_required or self.timeouts or self.retries.max_attempts > 1
            or self.breakers.enabled or self.input_strict or self.output_fail_closed
            or self.safe_mode.enabled or self.safe_mode.flag_file
        )

    def requires_idempotency(self, tool: str) -> bool:
        return _globs_match(self.idempotency_required, tool)

    def timeout_for(self, tool: str) -> float | None:
        if tool in self.timeouts:
            return self.timeouts[tool]
        for pattern, seconds in self.timeouts.items():
            if pattern != "default" and fnmatch.fnmatchcase(tool, pattern):
                return seconds
        return self.timeouts.get("default")

    def safe_mode_allows(self, tool: str) -> bool:
        return _globs_match(self.safe_mode.allowed_tools, tool)

    def stops_on(self, flag: str, severity: str) -> bool:
        return flag in self.stop_on_flags or severity in self.stop_on_severities


# --------------------------------------------------------------------------- parsing


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _unknown(section: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    import difflib

    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {where}.{close[0]}?)" if close else ""
            raise ConfigError(f"{where}.{key}: unknown key{hint}")


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _number(value: Any, where: str, *, integer: bool = False, minimum: float = 0.0, exclusive: bool = True) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{where}: expected {kind}, got {value!r}")
    if not math.isfinite(value) or value < minimum or (exclusive and value == minimum):
        bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
        raise ConfigError(f"{where}: must be a finite number {bound}, got {value!r}")
    return value


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return tuple(value)


def parse_gateway(agent: Mapping[str, Any], where: str = "agent") -> GatewaySettings:
    """The gateway keys of an ``agent`` section (other keys there are not this function's business)."""
    tools = _mapping(agent.get("tools"), f"{where}.tools")
    validation = _mapping(agent.get("validation"), f"{where}.validation")
    safe = _mapping(agent.get("safe_mode"), f"{where}.safe_mode")
    anomaly = _mapping(agent.get("anomaly"), f"{where}.anomaly")

    timeouts: dict[str, float] = {}
    for name, seconds in _mapping(tools.get("timeouts_s"), f"{where}.tools.timeouts_s").items():
        timeouts[str(name)] = float(_number(seconds, f"{where}.tools.timeouts_s.{name}"))

    retries = RetryPolicy()
    raw = tools.get("retries")
    if raw is not None:
        section = _mapping(raw, f"{where}.tools.retries")
        _unknown(section, ("max_attempts", "retryable_status", "backoff_ms"), f"{where}.tools.retries")
        status = section.get("retryable_status", list(DEFAULT_RETRYABLE_STATUS))
        if not isinstance(status, (list, tuple)) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in status
        ):
            raise ConfigError(f"{where}.tools.retries.retryable_status: expected a list of HTTP status codes")
        backoff = section.get("backoff_ms", [])
        if not isinstance(backoff, (list, tuple)):
            raise ConfigError(f"{where}.tools.retries.backoff_ms: expected a list of milliseconds")
        waits = tuple(
            float(_number(ms, f"{where}.tools.retries.backoff_ms[{i}]", minimum=0, exclusive=False))
            for i, ms in enumerate(backoff)
        )
        if any(w > 600_000 for w in waits):
            raise ConfigError(f"{where}.tools.retries.backoff_ms: a wait longer than 10 minutes")
        attempts = int(_number(section.get("max_attempts", 1), f"{where}.tools.retries.max_attempts",
                               integer=True, minimum=1, exclusive=False))
        if attempts > 100:
            raise ConfigError(f"{where}.tools.retries.max_attempts: at most 100, got {attempts}")
        retries = RetryPolicy(attempts, frozenset(status), waits)

    breakers = BreakerPolicy()
    raw = tools.get("circuit_breakers")
    if raw is not None:
        section = _mapping(raw, f"{where}.tools.circuit_breakers")
        _unknown(section, ("enabled", "failure_threshold", "window_seconds"), f"{where}.tools.circuit_breakers")
        breakers = BreakerPolicy(
            enabled=_bool(section.get("enabled", True), f"{where}.tools.circuit_breakers.enabled"),
            failure_threshold=int(_number(section.get("failure_threshold", 5),
                                          f"{where}.tools.circuit_breakers.failure_threshold", integer=True)),
            window_seconds=float(_number(section.get("window_seconds", 60),
                                         f"{where}.tools.circuit_breakers.window_seconds")),
        )

    _unknown(validation, ("input", "output"), f"{where}.validation")
    inp = _mapping(validation.get("input"), f"{where}.validation.input")
    out = _mapping(validation.get("output"), f"{where}.validation.output")
    _unknown(inp, ("strict",), f"{where}.validation.input")
    _unknown(out, ("fail_closed",), f"{where}.validation.output")

    _unknown(safe, ("enabled", "allowed_tools", "flag_file"), f"{where}.safe_mode")
    flag_file = safe.get("flag_file")
    if flag_file is not None and (not isinstance(flag_file, str) or not flag_file):
        raise ConfigError(f"{where}.safe_mode.flag_file: expected a path, got {flag_file!r}")

    severities: set[str] = set()
    flags: set[str] = set()
    for i, item in enumerate(_strings(anomaly.get("stop_on"), f"{where}.anomaly.stop_on")):
        if item in SEVERITY_RANK:
            severities.add(item)
        elif item in Flag.__members__:
            flags.add(item)
        else:
            raise ConfigError(f"{where}.anomaly.stop_on[{i}]: {item!r} is neither a severity nor a flag name")

    return GatewaySettings(
        idempotency_required=_strings(tools.get("idempotency_required"), f"{where}.tools.idempotency_required"),
        timeouts=timeouts,
        retries=retries,
        breakers=breakers,
        input_strict=_bool(inp.get("strict", False), f"{where}.validation.input.strict"),
        output_fail_closed=_bool(out.get("fail_closed", False), f"{where}.validation.output.fail_closed"),
        safe_mode=SafeModePolicy(
            enabled=_bool(safe.get("enabled", False), f"{where}.safe_mode.enabled"),
            allowed_tools=_strings(safe.get("allowed_tools"), f"{where}.safe_mode.allowed_tools"),
            flag_file=flag_file,
        ),
        stop_on_severities=frozenset(severities),
        stop_on_flags=frozenset(flags),
    )
