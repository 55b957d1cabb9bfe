"""The collector's configuration file: parse, validate, resolve defaults.

The keys are the ones agreed in ``docs/collector-config.md`` (plus the few
additions documented there). Every error is a :class:`~agentwatch.errors.ConfigError`
whose message names the file and the key at fault; broken YAML names the line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, load_config, read_yaml
from ..errors import ConfigError

Tree = Mapping[str, Any]

# The schema: for each section the known keys (nested dicts are sub-sections).
_SCHEMA: dict[str, Any] = {
    "receivers": {
        "grpc": {
            "endpoint": None,
            "max_message_bytes": None,
            "max_concurrent_rpcs": None,
            "max_concurrent_streams": None,
            "workers": None,
            "keepalive_time_seconds": None,
            "keepalive_timeout_seconds": None,
            "max_connection_idle_seconds": None,
            "max_connection_age_seconds": None,
            "max_connection_age_grace_seconds": None,
        },
        "http": {
            "endpoint": None,
            "max_body_bytes": None,
            "max_connections": None,
            "max_inflight_bytes": None,
            "header_timeout_seconds": None,
            "body_timeout_seconds": None,
            "idle_timeout_seconds": None,
        },
    },
    "exporter": {
        "protocol": None,
        "endpoint": None,
        "headers": "mapping",
        "insecure": None,
        "compression": None,
        "timeout_seconds": None,
        "retry": {"initial_backoff_ms": None, "max_backoff_ms": None, "max_elapsed_seconds": None},
        "queue": {"max_batches": None, "max_bytes": None},
        "max_batch_bytes": None,
        "drain_timeout_seconds": None,
    },
    "decision": {
        "straggler_delay_ms": None,
        "hard_timeout_seconds": None,
        "idle_timeout_seconds": None,
        "verdict_cache_size": None,
        "retain_bytes": None,
    },
    "limits": {"max_traces": None, "max_spans": None, "max_bytes": None},
    "health": {"endpoint": None},
    "telemetry": {"metrics_exporter": None, "log_level": None},
    "detection": "mapping",
    "detection_config": None,
}

PROTOCOLS = ("grpc", "http/protobuf")
COMPRESSIONS = ("gzip", "none")
METRICS_EXPORTERS = ("none", "otlp")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class GrpcReceiverConfig:
    endpoint: Endpoint = Endpoint("0.0.0.0", 4317)
    max_message_bytes: int = 4 * 1024 * 1024
    max_concurrent_rpcs: int = 128  # past it: RESOURCE_EXHAUSTED
    max_concurrent_streams: int = 100  # per connection (HTTP/2 SETTINGS)
    workers: int = 8  # threads running Export
    keepalive_time_seconds: float = 60.0  # ping a connection idle this long (0: never)
    keepalive_timeout_seconds: float = 20.0  # close it when the ping is not answered in time
    max_connection_idle_seconds: float = 300.0  # close connections without calls this long (0: never)
    max_connection_age_seconds: float = 0.0  # ask clients to reconnect after this long (0: never)
    max_connection_age_grace_seconds: float = 30.0  # calls in flight then get this long to finish


@dataclass(frozen=True)
class HttpReceiverConfig:
    endpoint: Endpoint = Endpoint("0.0.0.0", 4318)
    max_body_bytes: int = 4 * 1024 * 1024
    max_connections: int = 256  # open connections; more are answered 503 and closed
    max_inflight_bytes: int = 64 * 1024 * 1024  # bodies being received at once (at least max_body_bytes)
    header_timeout_seconds: float = 10.0  # from a request's first byte to the end of its headers
    body_timeout_seconds: float = 30.0  # from the end of the headers to the end of the body
    idle_timeout_seconds: float = 60.0  # a kept-alive connection with no request is closed after this


@dataclass(frozen=True)
class RetryConfig:
    initial_backoff_ms: int = 250
    max_backoff_ms: int = 5000
    max_elapsed_seconds: float = 300.0


@dataclass(frozen=True)
class QueueConfig:
    max_batches: int = 1000
    max_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class ExporterConfig:
    endpoint: str
    protocol: str = "grpc"
    headers: Mapping[str, str] = field(default_factory=dict)
    insecure: bool = True
    compression: str = "none"
    timeout_seconds: float = 10.0
    retry: RetryConfig = RetryConfig()
    queue: QueueConfig = QueueConfig()
    max_batch_bytes: int = 1024 * 1024
    drain_timeout_seconds: float = 20.0


@dataclass(frozen=True)
class DecisionConfig:
    straggler_delay_ms: int = 500
    hard_timeout_seconds: float = 30.0
    idle_timeout_seconds: float = 10.0
    verdict_cache_size: int = 50_000
    retain_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True)
class LimitsConfig:
    max_traces: int = 50_000
    max_spans: int = 500_000
    max_bytes: int = 256 * 1024 * 1024


@dataclass(frozen=True)
class TelemetryConfig:
    metrics_exporter: str = "none"
    log_level: str = "info"


@dataclass(frozen=True)
class CollectorConfig:
    exporter: ExporterConfig
    grpc: GrpcReceiverConfig | None = GrpcReceiverConfig()
    http: HttpReceiverConfig | None = HttpReceiverConfig()
    decision: DecisionConfig = DecisionConfig()
    limits: LimitsConfig = LimitsConfig()
    health: Endpoint | None = Endpoint("0.0.0.0", 13133)
    telemetry: TelemetryConfig = TelemetryConfig()
    detection: Config = field(default_factory=Config)
    source: str = "<mapping>"
    files: tuple[str, ...] = ()  # every configuration file read, in order (logged at start-up)


# --------------------------------------------------------------------------- parsing helpers


class _Reader:
    """Typed access to one section, with errors naming ``source`` and the dotted key."""

    def __init__(self, data: Tree, path: str, source: str) -> None:
        self.data = data
        self.path = path
        self.source = source

    def fail(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self.where(key)} {message}")

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return key in self.data and self.data[key] is not None

    def integer(self, key: str, default: int, *, minimum: int = 1) -> int:
        if not self.has(key):
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, got {value!r}")
        if value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0, exclusive: bool = True) -> float:
        if not self.has(key):
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {value!r}")
        if value < minimum or (exclusive and value == minimum):
            bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
            raise self.fail(key, f"must be {bound}, got {value}")
        return float(value)

    def boolean(self, key: str, default: bool) -> bool:
        if not self.has(key):
            return default
        value = self.data[key]
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {value!r}")
        return value

    def string(self, key: str, default: str) -> str:
        if not self.has(key):
            return default
        value = self.data[key]
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}; got {value!r}")
        return value

    def endpoint(self, key: str, default: Endpoint) -> Endpoint:
        if not self.has(key):
            return default
        return parse_endpoint(self.string(key, ""), lambda msg: self.fail(key, msg))

    def section(self, key: str) -> _Reader:
        value = self.data.get(key)
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.fail(key, f"must be a mapping, got {type(value).__name__}")
        return _Reader(value, self.where(key), self.source)


def parse_endpoint(text: str, fail: Any) -> Endpoint:
    """``host:port`` (``[v6]:port`` for IPv6); a leading ``http://`` is tolerated."""
    value = re.sub(r"^[a-z]+://", "", text.strip()).rstrip("/")
    match = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]/]+):(\d+)", value)
    if not match:
        raise fail(f"must be host:port, got {text!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise fail(f"has an invalid port {port}")
    return Endpoint(host, port)


def _check_keys(data: Tree, schema: Mapping[str, Any], path: str, source: str) -> None:
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{source}: unknown key {where!r} (known keys here: {known})")
        sub = schema[key]
        if isinstance(sub, dict):
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: {where} must be a mapping, got {type(value).__name__}")
            _check_keys(value, sub, where, source)
        elif sub == "mapping" and value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"{source}: {where} must be a mapping, got {type(value).__name__}")


_ENV_REF = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand(value: Any, where: str, source: str, env: Mapping[str, str]) -> Any:
    """Replace ``${env:NAME}`` / ``${NAME}`` in string values (e.g. header secrets)."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(f"{source}: {where} refers to ${{{name}}}, which is not set")
            return env[name]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, Mapping):
        return {k: _expand(v, f"{where}.{k}" if where else str(k), source, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{where}[{i}]", source, env) for i, v in enumerate(value)]
    return value


# --------------------------------------------------------------------------- entry points


def load_collector_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> CollectorConfig:
    """Read and validate the collector's YAML file."""
    file = Path(path)
    return build_collector_config(read_yaml(file), source=str(file), base_dir=file.parent, env=env)


def build_collector_config(
    data: Tree,
    *,
    source: str = "<mapping>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> CollectorConfig:
    """Validate a parsed configuration mapping (the file's content)."""
    env = os.environ if env is None else env
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the configuration must be a mapping")
    _check_keys(data, _SCHEMA, "", source)
    data = _expand(dict(data), "", source, env)
    top = _Reader(data, "", source)

    receivers = top.section("receivers")
    grpc_cfg: GrpcReceiverConfig | None = None
    http_cfg: HttpReceiverConfig | None = None
    # No 'receivers' section at all: both with defaults. Otherwise only the listed ones.
    enable_all = "receivers" not in data or data["receivers"] is None
    if enable_all or "grpc" in receivers.data:
        g = receivers.section("grpc")
        G = GrpcReceiverConfig
        grpc_cfg = GrpcReceiverConfig(
            endpoint=g.endpoint("endpoint", G.endpoint),
            max_message_bytes=g.integer("max_message_bytes", G.max_message_bytes),
            max_concurrent_rpcs=g.integer("max_concurrent_rpcs", G.max_concurrent_rpcs),
            max_concurrent_streams=g.integer("max_concurrent_streams", G.max_concurrent_streams),
            workers=g.integer("workers", G.workers),
            keepalive_time_seconds=g.number("keepalive_time_seconds", G.keepalive_time_seconds, exclusive=False),
            keepalive_timeout_seconds=g.number("keepalive_timeout_seconds", G.keepalive_timeout_seconds),
            max_connection_idle_seconds=g.number(
                "max_connection_idle_seconds", G.max_connection_idle_seconds, exclusive=False
            ),
            max_connection_age_seconds=g.number(
                "max_connection_age_seconds", G.max_connection_age_seconds, exclusive=False
            ),
            max_connection_age_grace_seconds=g.number(
                "max_connection_age_grace_seconds", G.max_connection_age_grace_seconds, exclusive=False
            ),
        )
    if enable_all or "http" in receivers.data:
        h = receivers.section("http")
        H = HttpReceiverConfig
        max_body = h.integer("max_body_bytes", H.max_body_bytes)
        inflight = h.integer("max_inflight_bytes", max(H.max_inflight_bytes, max_body))
        if inflight < max_body:
            raise h.fail("max_inflight_bytes", f"must be >= max_body_bytes ({max_body}), got {inflight}")
        http_cfg = HttpReceiverConfig(
            endpoint=h.endpoint("endpoint", H.endpoint),
            max_body_bytes=max_body,
            max_connections=h.integer("max_connections", H.max_connections),
            max_inflight_bytes=inflight,
            header_timeout_seconds=h.number("header_timeout_seconds", H.header_timeout_seconds),
            body_timeout_seconds=h.number("body_timeout_seconds", H.body_timeout_seconds),
            idle_timeout_seconds=h.number("idle_timeout_seconds", H.idle_timeout_seconds),
        )
    if grpc_cfg is None and http_cfg is None:
        raise ConfigError(f"{source}: receivers must enable grpc, http or both")

    ex = top.section("exporter")
    if not ex.has("endpoint"):
        raise ex.fail("endpoint", "is required (where to forward spans, e.g. otelcol:4317)")
    protocol = ex.choice("protocol", "grpc", PROTOCOLS)
    endpoint = ex.string("endpoint", "")
    if protocol == "grpc":
        parse_endpoint(endpoint, lambda msg: ex.fail("endpoint", msg))
    elif not re.match(r"^https?://[^/]+", endpoint):
        raise ex.fail("endpoint", f"must be an http:// or https:// URL for http/protobuf, got {endpoint!r}")
    headers_raw = ex.data.get("headers") or {}
    headers: dict[str, str] = {}
    for name, value in headers_raw.items():
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ex.fail(f"headers.{name}", f"must be a string, got {value!r}")
        headers[str(name)] = str(value)
    retry = ex.section("retry")
    queue = ex.section("queue")
    exporter = ExporterConfig(
        endpoint=endpoint,
        protocol=protocol,
        headers=headers,
        insecure=ex.boolean("insecure", True),
        compression=ex.choice("compression", "none", COMPRESSIONS),
        timeout_seconds=ex.number("timeout_seconds", 10.0),
        retry=RetryConfig(
            initial_backoff_ms=retry.integer("initial_backoff_ms", 250),
            max_backoff_ms=retry.integer("max_backoff_ms", 5000),
            max_elapsed_seconds=retry.number("max_elapsed_seconds", 300.0, exclusive=False),
        ),
        queue=QueueConfig(
            max_batches=queue.integer("max_batches", 1000),
            max_bytes=queue.integer("max_bytes", QueueConfig.max_bytes),
        ),
        max_batch_bytes=ex.integer("max_batch_bytes", ExporterConfig.max_batch_bytes, minimum=1024),
        drain_timeout_seconds=ex.number("drain_timeout_seconds", 20.0, exclusive=False),
    )
    if exporter.retry.max_backoff_ms < exporter.retry.initial_backoff_ms:
        raise retry.fail("max_backoff_ms", "must be >= initial_backoff_ms")

    dec = top.section("decision")
    decision = DecisionConfig(
        straggler_delay_ms=dec.integer("straggler_delay_ms", 500, minimum=0),
        hard_timeout_seconds=dec.number("hard_timeout_seconds", 30.0),
        idle_timeout_seconds=dec.number("idle_timeout_seconds", 10.0),
        verdict_cache_size=dec.integer("verdict_cache_size", 50_000, minimum=0),
        retain_bytes=dec.integer("retain_bytes", DecisionConfig.retain_bytes, minimum=0),
    )

    lim = top.section("limits")
    limits = LimitsConfig(
        max_traces=lim.integer("max_traces", 50_000),
        max_spans=lim.integer("max_spans", 500_000),
        max_bytes=lim.integer("max_bytes", LimitsConfig.max_bytes, minimum=1024),
    )

    health: Endpoint | None = Endpoint("0.0.0.0", 13133)
    if "health" in data and data["health"] is not None:
        health = top.section("health").endpoint("endpoint", Endpoint("0.0.0.0", 13133))

    tel = top.section("telemetry")
    telemetry = TelemetryConfig(
        metrics_exporter=tel.choice("metrics_exporter", "none", METRICS_EXPORTERS),
        log_level=tel.choice("log_level", "info", LOG_LEVELS),
    )

    detection = _detection(top, source, base_dir, env)
    files = [source] if base_dir is not None else []
    if top.has("detection_config"):
        named = Path(top.string("detection_config", ""))
        files.append(str(named if named.is_absolute() or base_dir is None else base_dir / named))
    # the in-process configuration's files (AGENTWATCH_CONFIG or ./agentwatch.yaml), as it names them
    files += [part for part in detection.source.split("+") if part not in ("defaults", "argument")]

    return CollectorConfig(
        exporter=exporter,
        grpc=grpc_cfg,
        http=http_cfg,
        decision=decision,
        limits=limits,
        health=health,
        telemetry=telemetry,
        detection=detection,
        source=source,
        files=tuple(files),
    )


def _detection(top: _Reader, source: str, base_dir: Path | None, env: Mapping[str, str]) -> Config:
    """``detection_config: FILE`` (seed-004 shape), then ``detection:`` merged over it.

    ``detection`` may be the ``agent:`` mapping's content or ``{agent: {...}}``.
    """
    merged: dict[str, Any] = {}
    if top.has("detection_config"):
        raw = top.string("detection_config", "")
        file = Path(raw)
        if not file.is_absolute() and base_dir is not None:
            file = base_dir / file
        if not file.is_file():
            raise top.fail("detection_config", f"names a file that does not exist: {file}")
        merged = read_yaml(file)
        if set(merged) - {"agent"}:
            extra = sorted(set(merged) - {"agent"})
            raise ConfigError(f"{file}: a detection config holds only the 'agent' section, found {extra}")
    section = top.data.get("detection") or {}
    if section:
        agent = section["agent"] if set(section) == {"agent"} else section
        if not isinstance(agent, Mapping):
            raise top.fail("detection.agent", "must be a mapping")
        base_agent = dict(merged.get("agent") or {})
        base_agent.update(agent)
        merged = {"agent": base_agent}
    try:
        # Resolved like the in-process configuration: built-in defaults, then
        # AGENTWATCH_CONFIG / ./agentwatch.yaml and AGENTWATCH_* variables when
        # present, with this file's detection settings winning over all of them.
        return load_config(merged, env=env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: detection: {exc}") from None
