"""The collector's configuration file: parse, validate, resolve defaults.

The keys are the ones agreed in ``docs/collector-config.md`` (plus the few
additions documented there), and ``data/collector.schema.json`` defines every
one of them: type, range, default. The file is checked against that schema
first (see :mod:`agentwatch.config_schema`), so every error is a
:class:`~agentwatch.errors.ConfigError` naming the file and the full dotted key
(with a "did you mean" for typos); broken YAML names the line. The sections are
then filled generically from the dataclasses below: adding a key is one schema
entry plus one dataclass field with its default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from ..config import Config, load_config, load_file, read_yaml
from ..config_schema import COLLECTOR_SCHEMA, check
from ..errors import ConfigError

Tree = Mapping[str, Any]

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
class BufferConfig:
    journal_dir: str | None = None  # the on-disk journal's directory; None: no journal
    journal_max_bytes: int = 1024 * 1024 * 1024  # past it, requests are refused (retryable)
    journal_segment_bytes: int = 16 * 1024 * 1024
    journal_sync: str = "write"  # write: survives a process kill; fsync: also a machine crash


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
    buffer: BufferConfig = BufferConfig()
    health: Endpoint | None = Endpoint("0.0.0.0", 13133)
    telemetry: TelemetryConfig = TelemetryConfig()
    detection: Config = field(default_factory=Config)
    source: str = "<mapping>"
    files: tuple[str, ...] = ()  # every configuration file read, in order (logged at start-up)


# --------------------------------------------------------------------------- parsing helpers

T = TypeVar("T")
Fail = Callable[[str], ConfigError]
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]*")


def _fill(cls: type[T], data: Any, fail: Callable[[str], Fail], **given: Any) -> T:
    """``cls`` from a validated section: each field from ``data`` when set, else the field's default.

    ``fail(key)`` builds an error naming the key. Endpoints are parsed; numbers are
    given the field's type (the schema already checked type and range).
    """
    values: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in given or not isinstance(data, Mapping) or data.get(f.name) is None:
            continue
        value = data[f.name]
        if f.type == "Endpoint":
            value = parse_endpoint(value, fail(f.name))
        elif f.type == "float":
            value = float(value)
        elif f.type == "int":
            value = int(value)
        values[f.name] = value
    values.update(given)
    return cls(**values)


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
    check(COLLECTOR_SCHEMA, data, source)
    data = _expand(dict(data), "", source, env)

    def failing(section: str) -> Callable[[str], Fail]:
        def at(key: str) -> Fail:
            return lambda msg: ConfigError(f"{source}: {section}.{key} {msg}")

        return at

    receivers = data.get("receivers")
    # No 'receivers' section at all: both with defaults. Otherwise only the listed ones.
    enable_all = receivers is None
    receivers = receivers or {}
    grpc_cfg = (
        _fill(GrpcReceiverConfig, receivers.get("grpc"), failing("receivers.grpc"))
        if enable_all or "grpc" in receivers
        else None
    )
    http_cfg: HttpReceiverConfig | None = None
    if enable_all or "http" in receivers:
        http_raw = receivers.get("http") or {}
        max_body = http_raw.get("max_body_bytes") or HttpReceiverConfig.max_body_bytes
        inflight = http_raw.get("max_inflight_bytes") or max(HttpReceiverConfig.max_inflight_bytes, max_body)
        if inflight < max_body:
            message = f"must be >= max_body_bytes ({max_body}), got {inflight}"
            raise failing("receivers.http")("max_inflight_bytes")(message)
        http_cfg = _fill(HttpReceiverConfig, http_raw, failing("receivers.http"), max_inflight_bytes=inflight)
    if grpc_cfg is None and http_cfg is None:
        raise ConfigError(f"{source}: receivers must enable grpc, http or both")

    ex = data["exporter"]
    fail_ex = failing("exporter")
    endpoint = ex["endpoint"].strip()
    protocol = ex.get("protocol") or "grpc"
    if protocol == "grpc":
        parse_endpoint(endpoint, fail_ex("endpoint"))
    elif not re.match(r"^https?://[^/]+", endpoint):
        raise fail_ex("endpoint")(f"must be an http:// or https:// URL for http/protobuf, got {endpoint!r}")
    headers = dict(ex.get("headers") or {})
    for name, value in headers.items():
        # Checked again after ${env:...} expansion: a variable may hold a line break.
        if not _HEADER_VALUE.fullmatch(value):
            raise fail_ex(f"headers.{name}")(
                "may hold only visible ASCII characters, spaces and tabs (no CR, LF or other control characters)"
            )
    exporter = _fill(
        ExporterConfig,
        ex,
        fail_ex,
        endpoint=endpoint,
        headers=headers,
        retry=_fill(RetryConfig, ex.get("retry"), failing("exporter.retry")),
        queue=_fill(QueueConfig, ex.get("queue"), failing("exporter.queue")),
    )
    if exporter.retry.max_backoff_ms < exporter.retry.initial_backoff_ms:
        raise failing("exporter.retry")("max_backoff_ms")("must be >= initial_backoff_ms")

    health: Endpoint | None = Endpoint("0.0.0.0", 13133)
    if data.get("health") is not None:
        health = _fill(_Health, data["health"], failing("health")).endpoint

    detection = _detection(data, source, base_dir, env)
    files = [source] if base_dir is not None else []
    if data.get("detection_config") is not None:
        named = Path(data["detection_config"])
        files.append(str(named if named.is_absolute() or base_dir is None else base_dir / named))
    # the in-process configuration's files (AGENTWATCH_CONFIG or ./agentwatch.yaml), as it names them
    files += [part for part in detection.source.split("+") if part not in ("defaults", "argument")]

    return CollectorConfig(
        exporter=exporter,
        grpc=grpc_cfg,
        http=http_cfg,
        decision=_fill(DecisionConfig, data.get("decision"), failing("decision")),
        limits=_fill(LimitsConfig, data.get("limits"), failing("limits")),
        buffer=_buffer(data.get("buffer"), failing("buffer"), base_dir),
        health=health,
        telemetry=_fill(TelemetryConfig, data.get("telemetry"), failing("telemetry")),
        detection=detection,
        source=source,
        files=tuple(files),
    )


def _buffer(data: Any, fail: Callable[[str], Fail], base_dir: Path | None) -> BufferConfig:
    """The buffer section; a relative ``journal_dir`` is relative to the configuration file."""
    config = _fill(BufferConfig, data, fail)
    if config.journal_dir is not None:
        if not config.journal_dir.strip():
            raise fail("journal_dir")("must name a directory")
        path = Path(config.journal_dir)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        config = replace(config, journal_dir=str(path))
    if config.journal_segment_bytes > config.journal_max_bytes // 2:
        message = f"must be at most half of journal_max_bytes ({config.journal_max_bytes // 2})"
        raise fail("journal_segment_bytes")(message)
    return config


@dataclass(frozen=True)
class _Health:
    endpoint: Endpoint = Endpoint("0.0.0.0", 13133)


# Keys of the tool gateway: they act on tool calls inside the instrumented process, so the
# collector's own ``detection:`` section refuses them. A shared ``detection_config`` file
# (the apps' agentwatch.yaml) may carry them; the collector does not apply them.
_GATEWAY_KEYS = (
    ("tools", "timeouts_s"), ("tools", "retries"), ("tools", "circuit_breakers"),
    ("validation",), ("safe_mode",), ("anomaly", "stop_on"),
)


def _refuse_gateway_keys(agent: Mapping[str, Any], source: str) -> None:
    for path in _GATEWAY_KEYS:
        node: Any = agent
        for part in path:
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            key = "detection." + ".".join(path)
            raise ConfigError(
                f"{source}: {key}: the tool gateway acts in the instrumented process, not in the collector; "
                "set it in the application's agentwatch configuration"
            )


def _detection(data: Tree, source: str, base_dir: Path | None, env: Mapping[str, str]) -> Config:
    """``detection_config: FILE`` (seed-004 shape), then ``detection:`` merged over it.

    ``detection`` may be the ``agent:`` mapping's content or ``{agent: {...}}``
    (the schema has already checked it in either form).
    """
    merged: dict[str, Any] = {}
    if data.get("detection_config") is not None:
        file = Path(data["detection_config"])
        if not file.is_absolute() and base_dir is not None:
            file = base_dir / file
        if not file.is_file():
            raise ConfigError(f"{source}: detection_config names a file that does not exist: {file}")
        merged = load_file(file)
    section = data.get("detection") or {}
    if section:
        agent = section["agent"] if set(section) == {"agent"} else section
        _refuse_gateway_keys(agent or {}, source)
        base_agent = dict(merged.get("agent") or {})
        base_agent.update(agent or {})
        merged = {"agent": base_agent}
    try:
        # Resolved like the in-process configuration: built-in defaults, then
        # AGENTWATCH_CONFIG / ./agentwatch.yaml and AGENTWATCH_* variables when
        # present, with this file's detection settings winning over all of them.
        return load_config(merged, env=env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: detection: {exc}") from None
