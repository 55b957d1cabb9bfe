"""Static checks of the deployment artefacts: docker-compose.yml and collector/**.

Docker isn't needed. Every file is parsed with PyYAML or json and checked against
the others: mounted files exist; the otelcol pipelines reference only defined
components and can't loop through agentwatch-collector; the agentwatch-collector
config uses only the keys agreed in docs/collector-config.md; the load-balancing
config routes by trace ID; dashboard panels and alert rules use defined data
sources. If a `docker compose` that works offline is installed, the compose file
is also run through `docker compose config`.
"""

from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COLLECTOR = REPO / "collector"
COMPOSE_FILE = REPO / "docker-compose.yml"
OTELCOL_CONFIGS = ("otelcol-config.yaml", "otelcol-loadbalancing.yaml")
GRAFANA = COLLECTOR / "grafana"
ALERTS_FILE = GRAFANA / "provisioning" / "alerting" / "alerts.yaml"
DATASOURCES_FILE = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS_FILE = GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARD_FILE = GRAFANA / "dashboards" / "agentwatch.json"

REQUIRED_SERVICES = {"agent", "otelcol", "agentwatch-collector", "jaeger", "tempo", "grafana", "prometheus"}

# ---------------------------------------------------------------- agreed agentwatch-collector keys
# From docs/collector-config.md. A dotted path maps to the keys allowed in the mapping there.
# `exporter.headers` and `detection` hold free-form mappings and are not listed.
AGREED_KEYS: dict[str, set[str]] = {
    "": {
        "receivers",
        "exporter",
        "decision",
        "limits",
        "health",
        "telemetry",
        "detection",
        "detection_config",
    },
    "receivers": {"grpc", "http"},
    "receivers.grpc": {"endpoint", "max_message_bytes"},
    "receivers.http": {"endpoint", "max_body_bytes"},
    "exporter": {
        "protocol",
        "endpoint",
        "headers",
        "insecure",
        "compression",
        "timeout_seconds",
        "retry",
        "queue",
    },
    "exporter.retry": {"initial_backoff_ms", "max_backoff_ms", "max_elapsed_seconds"},
    "exporter.queue": {"max_batches", "max_bytes"},
    "decision": {"straggler_delay_ms", "hard_timeout_seconds", "idle_timeout_seconds", "verdict_cache_size"},
    "limits": {"max_traces", "max_spans", "max_bytes"},
    "health": {"endpoint"},
    "telemetry": {"metrics_exporter"},
}
AGREED_VALUES: dict[str, set[str]] = {
    "exporter.protocol": {"grpc", "http/protobuf"},
    "exporter.compression": {"gzip", "none"},
    "telemetry.metrics_exporter": {"none", "otlp"},
}
COLLECTOR_HEALTH_PATH = "/healthz"
COLLECTOR_CONFIG_IN_IMAGE = "/etc/agentwatch/collector.yaml"

# ---------------------------------------------------------------- contract attribute names (§2, §3)
CONTRACT_ATTRIBUTES = {
    "agentwatch.run.id",
    "agentwatch.run.stop_reason",
    "agentwatch.run.failure_mode",
    "agentwatch.run.steps",
    "agentwatch.run.llm_calls",
    "agentwatch.run.tool_calls",
    "agentwatch.run.input_tokens",
    "agentwatch.run.output_tokens",
    "agentwatch.run.cost_usd",
    "agentwatch.run.anomaly.flags",
    "agentwatch.run.anomaly.count",
    "agentwatch.run.fault_origin.span_id",
    "agentwatch.phase",
    "agentwatch.cost_usd",
    "agentwatch.step",
    "agentwatch.llm.tool_calls",
    "agentwatch.tool.args_hash",
    "agentwatch.tool.side_effect",
    "agentwatch.tool.error_class",
    "agentwatch.anomaly.flags",
    "agentwatch.anomaly.severity",
    "agentwatch.anomaly.flag",
    "agentwatch.anomaly.reason",
    "agentwatch.anomaly.related_span_id",
}
CONTRACT_ATTRIBUTE_PREFIXES = ("agentwatch.run.entity.",)
SEVERITIES = {"critical", "high", "medium", "low"}

# Prometheus labels of the metrics agentwatch's SDK emits (metric attributes with dots as
# underscores, as otelcol's prometheus exporter writes them) and of Tempo's span metrics.
PROM_LABELS: dict[str, set[str]] = {
    "agentwatch_anomalies_total": {
        "agentwatch_anomaly_flag",
        "agentwatch_anomaly_severity",
        "gen_ai_agent_name",
    },
    "agentwatch_runs_total": {
        "agentwatch_run_stop_reason",
        "agentwatch_run_failure_mode",
        "gen_ai_agent_name",
    },
    "gen_ai_client_token_usage_sum": {
        "gen_ai_token_type",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "gen_ai_provider_name",
        "gen_ai_operation_name",
        "server_address",
        "server_port",
    },
    "traces_spanmetrics_calls_total": {"service", "span_name", "span_kind", "status_code"},
}
PROM_COMMON_LABELS = {"job", "instance"}

# ---------------------------------------------------------------- otelcol component kinds
# Which component types send OTLP, for the trace-path graph below. Whether a type
# exists at all is checked by the real collector's `validate`
# (tests/pipeline/test_otelcol_validate.py), not by a list here.
OTLP_EXPORTER_TYPES = {"otlp", "otlp_grpc", "otlphttp", "otlp_http"}
LOAD_BALANCING_TYPES = {"load_balancing", "loadbalancing"}
SELF_HOSTS = {"otelcol", "localhost", "127.0.0.1", "0.0.0.0", ""}
AGENTWATCH_HOST = "agentwatch-collector"


# =============================================================================== helpers


@cache
def _load_yaml_cached(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def load_yaml(path: Path) -> Any:
    assert path.is_file(), f"missing file: {path.relative_to(REPO)}"
    return _load_yaml_cached(str(path))


def load_json(path: Path) -> Any:
    assert path.is_file(), f"missing file: {path.relative_to(REPO)}"
    return json.loads(path.read_text(encoding="utf-8"))


def ctype(component_id: str) -> str:
    """`otlp_grpc/jaeger` -> `otlp_grpc`."""
    return component_id.split("/", 1)[0]


_COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def compose_default(value: str) -> str:
    """Interpolate ``${VAR:-default}`` with its default (the file is checked as shipped)."""

    def repl(match: re.Match[str]) -> str:
        if match.group(2) is None:
            raise AssertionError(f"compose variable without default: {match.group(0)}")
        return match.group(2)

    return _COMPOSE_VAR.sub(repl, value)


def host_port(endpoint: str) -> tuple[str, int | None]:
    """Host and port of ``host:port`` or ``scheme://host:port/path``."""
    text = endpoint if "://" in endpoint else f"//{endpoint}"
    parts = urlsplit(text)
    return parts.hostname or "", parts.port


def as_mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def env_mapping(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out: dict[str, str] = {}
        for item in env:
            key, _, value = str(item).partition("=")
            out[key] = value
        return out
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return str(value)


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    dep = service.get("depends_on") or {}
    if isinstance(dep, list):
        return {str(name): "service_started" for name in dep}
    return {str(name): str(as_mapping(cfg).get("condition", "service_started")) for name, cfg in dep.items()}


def published_ports(service: Mapping[str, Any]) -> set[tuple[int, int]]:
    """(published, target) pairs of a service's ``ports``."""
    out: set[tuple[int, int]] = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, Mapping):
            out.add((int(entry["published"]), int(entry["target"])))
            continue
        spec = str(entry).split("/", 1)[0]
        parts = spec.split(":")
        if len(parts) == 1:
            out.add((int(parts[0]), int(parts[0])))
        else:
            out.add((int(parts[-2]), int(parts[-1])))
    return out


def volume_mounts(service: Mapping[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, is_bind) of each volume of a service, compose defaults applied."""
    out = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, Mapping):
            source = compose_default(str(entry.get("source", "")))
            target = str(entry["target"])
            out.append((source, target, entry.get("type") == "bind"))
            continue
        text = compose_default(str(entry))
        source, _, rest = text.partition(":")
        target = rest.split(":", 1)[0]
        out.append((source, target, source.startswith((".", "/", "~"))))
    return out


def repo_path(source: str) -> Path:
    path = (REPO / source).resolve() if not source.startswith("/") else Path(source)
    return path


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    out = []
    for line in lines:
        instr, _, args = line.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def json_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), args
    return [str(v) for v in value]


def walk_keys(node: Any, path: str = "") -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        yield path, node
        for key, value in node.items():
            yield from walk_keys(value, f"{path}.{key}" if path else str(key))


# =============================================================================== fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def collector_config() -> dict[str, Any]:
    data = load_yaml(COLLECTOR / "agentwatch-collector.yaml")
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def datasource_uids() -> dict[str, dict[str, Any]]:
    data = load_yaml(DATASOURCES_FILE)
    sources = data["datasources"]
    uids = [ds["uid"] for ds in sources]
    assert len(uids) == len(set(uids)), f"duplicate datasource uids: {uids}"
    return {ds["uid"]: ds for ds in sources}


# =============================================================================== every file parses


def all_config_files() -> list[Path]:
    files = [COMPOSE_FILE]
    for pattern in ("**/*.yaml", "**/*.yml", "**/*.json"):
        files += sorted(COLLECTOR.glob(pattern))
    return files


@pytest.mark.parametrize("path", all_config_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_config_file_parses(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "\t" not in text, "tabs in a YAML/JSON file"
    # Kubernetes files hold several documents.
    docs = [json.loads(text)] if path.suffix == ".json" else [d for d in yaml.safe_load_all(text) if d is not None]
    assert docs, f"{path.name} is empty"
    for data in docs:
        assert isinstance(data, dict) and data, f"{path.name} must hold non-empty mappings"


# =============================================================================== docker-compose.yml


def test_compose_has_the_services(services: dict[str, Any]) -> None:
    missing = REQUIRED_SERVICES - set(services)
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def test_compose_published_ports(services: dict[str, Any]) -> None:
    assert (16686, 16686) in published_ports(services["jaeger"]), "Jaeger UI must be on 16686"
    assert (3000, 3000) in published_ports(services["grafana"]), "Grafana must be on 3000"
    otelcol = published_ports(services["otelcol"])
    assert {(4317, 4317), (4318, 4318)} <= otelcol, "otelcol must publish OTLP 4317 and 4318"
    hosts = [p for name, svc in services.items() for p, _ in published_ports(svc) if name != "otelcol"]
    assert 4317 not in hosts and 4318 not in hosts, "only otelcol may take the host's OTLP ports"
    all_published = [p for svc in services.values() for p, _ in published_ports(svc)]
    assert len(all_published) == len(set(all_published)), f"host port published twice: {all_published}"


def test_compose_agentwatch_collector_is_scalable(services: dict[str, Any]) -> None:
    svc = services["agentwatch-collector"]
    assert not svc.get("ports"), "no host ports, or `--scale agentwatch-collector=N` would clash"
    assert "container_name" not in svc


def test_compose_images_are_pinned(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        if "build" in svc:
            continue
        image = str(svc.get("image", ""))
        assert image, f"{name}: no image and no build"
        assert "@sha256:" in image or re.search(r":[\w][\w.-]*$", image.split("/")[-1]), (
            f"{name}: image {image!r} has no tag"
        )
        tag = image.rsplit(":", 1)[-1]
        assert tag != "latest", f"{name}: pin a version instead of :latest"
        assert re.search(r"\d", tag), f"{name}: tag {tag!r} is not a version"


def test_compose_builds_exist(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        build = svc.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = repo_path(str(build.get("context", ".")))
        assert context.is_dir(), f"{name}: build context {context} missing"
        dockerfile = context / str(build.get("dockerfile", "Dockerfile"))
        assert dockerfile.is_file(), f"{name}: Dockerfile {dockerfile} missing"
    collector = services["agentwatch-collector"]["build"]
    assert repo_path(collector["context"]) == REPO
    assert collector["dockerfile"] == "collector/Dockerfile"


def test_compose_mounted_files_exist(compose: dict[str, Any], services: dict[str, Any]) -> None:
    named = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        for source, target, is_bind in volume_mounts(svc):
            if is_bind:
                path = repo_path(source)
                assert path.exists(), f"{name}: mounted {source} -> {target} does not exist"
                assert REPO in path.parents or path == REPO, f"{name}: {source} is outside the repository"
            else:
                assert source in named, f"{name}: named volume {source!r} not declared"


def test_compose_otelcol_config_switch_points_at_both_configs(services: dict[str, Any]) -> None:
    raw = [str(v) for v in services["otelcol"].get("volumes") or []]
    config_mount = [v for v in raw if "otelcol-contrib/config.yaml" in v]
    assert len(config_mount) == 1, raw
    assert compose_default(config_mount[0]).startswith("./collector/otelcol-config.yaml:")
    for name in OTELCOL_CONFIGS:
        assert (COLLECTOR / name).is_file()


def test_compose_depends_on_is_acyclic_and_defined(services: dict[str, Any]) -> None:
    graph = {name: depends_on(svc) for name, svc in services.items()}
    for name, deps in graph.items():
        for dep, condition in deps.items():
            assert dep in services, f"{name} depends on undefined service {dep}"
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[dep] or dep == "agentwatch-collector", (
                    f"{name} waits for {dep} to be healthy but {dep} has no healthcheck"
                )
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 1:
            raise AssertionError(f"depends_on cycle: {' -> '.join([*trail, node])}")
        if state.get(node) == 2:
            return
        state[node] = 1
        for dep in graph[node]:
            visit(dep, [*trail, node])
        state[node] = 2

    for node in graph:
        visit(node, [])


def test_compose_healthchecks(services: dict[str, Any]) -> None:
    for name in ("agentwatch-collector", "jaeger", "grafana", "prometheus"):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name}: healthcheck missing"
    test_cmd = command_text(services["agentwatch-collector"]["healthcheck"]["test"])
    assert f"127.0.0.1:13133{COLLECTOR_HEALTH_PATH}" in test_cmd
    assert services["agent"]["depends_on"]["agentwatch-collector"]["condition"] == "service_healthy"
    assert "otelcol" in depends_on(services["agent"])
    # otelcol must not wait for agentwatch-collector: agentwatch-collector exports to otelcol.
    assert "agentwatch-collector" not in depends_on(services["otelcol"])


def test_compose_agent_points_at_otelcol(services: dict[str, Any]) -> None:
    agent = services["agent"]
    env = env_mapping(agent)
    assert env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://otelcol:4317"
    assert env.get("OTEL_SERVICE_NAME")
    assert_runs_demo(command_text(agent.get("command")))


def assert_runs_demo(command: str) -> None:
    """The command runs examples/demo_agent.py --loop, directly or through a script that does."""
    scripts = re.findall(r"(examples/\S+\.py)", command)
    assert scripts and "--loop" in command, command
    script = REPO / scripts[0]
    assert script.is_file(), f"{scripts[0]} does not exist"
    if script.name != "demo_agent.py":
        assert "demo_agent.py" in script.read_text(encoding="utf-8"), f"{script.name} must run demo_agent.py"


def test_demo_agent_script_exists() -> None:
    script = REPO / "examples" / "demo_agent.py"
    if not script.is_file():
        pytest.skip("examples/demo_agent.py is not written yet (compose's agent service runs it)")
    assert "--loop" in script.read_text(encoding="utf-8"), "compose runs demo_agent.py --loop"


def test_compose_collector_mount_matches_image_cmd(services: dict[str, Any]) -> None:
    mounts = {target: source for source, target, _ in volume_mounts(services["agentwatch-collector"])}
    assert mounts.get(COLLECTOR_CONFIG_IN_IMAGE) == "./collector/agentwatch-collector.yaml"


def test_compose_grafana_env_provides_alert_contact_urls(services: dict[str, Any]) -> None:
    env = env_mapping(services["grafana"])
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "true"
    assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Admin"
    text = ALERTS_FILE.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    for cp in data["contactPoints"]:
        for receiver in cp["receivers"]:
            for value in receiver["settings"].values():
                for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", str(value)):
                    assert var in env, f"contact point {cp['name']} uses ${var}, not set for grafana"
                    assert compose_default(env[var]), f"{var} would be empty"


def test_compose_prometheus_accepts_tempo_remote_write(services: dict[str, Any]) -> None:
    cmd = command_text(services["prometheus"].get("command"))
    assert "--web.enable-remote-write-receiver" in cmd
    mounts = {target: source for source, target, _ in volume_mounts(services["prometheus"])}
    config_flag = re.search(r"--config\.file=(\S+)", cmd)
    assert config_flag and config_flag.group(1) in mounts


def test_compose_config_with_docker_if_available() -> None:
    command: list[str] | None = None
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            command = ["docker", "compose"]
    if command is None and shutil.which("docker-compose"):
        command = ["docker-compose"]
    if command is None:
        pytest.skip("no docker compose CLI here")
    result = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COMPOSE_PROJECT_NAME": "agentwatch-test"},
    )
    assert result.returncode == 0, result.stderr


# =============================================================================== Dockerfiles


def test_collector_dockerfile() -> None:
    path = COLLECTOR / "Dockerfile"
    instructions = dockerfile_instructions(path)
    froms = [args.split()[0] for instr, args in instructions if instr == "FROM"]
    assert froms and all(image == "python:3.12-slim" for image in froms), froms

    exposed = {
        int(p.split("/")[0]) for instr, args in instructions if instr == "EXPOSE" for p in args.split()
    }
    assert {4317, 4318, 13133} <= exposed

    users = [args for instr, args in instructions if instr == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}

    health = [args for instr, args in instructions if instr == "HEALTHCHECK"]
    assert len(health) == 1 and f"http://127.0.0.1:13133{COLLECTOR_HEALTH_PATH}" in health[0]

    entrypoints = [json_form(args) for instr, args in instructions if instr == "ENTRYPOINT"]
    cmds = [json_form(args) for instr, args in instructions if instr == "CMD"]
    assert entrypoints[-1] == ["agentwatch-collector"]
    assert cmds[-1] == ["--config", COLLECTOR_CONFIG_IN_IMAGE]


def _check_copy_sources(dockerfile: Path) -> None:
    for instr, args in dockerfile_instructions(dockerfile):
        if instr not in {"COPY", "ADD"}:
            continue
        words = shlex.split(args)
        if any(w.startswith("--from") for w in words):
            continue
        words = [w for w in words if not w.startswith("--")]
        sources = words[:-1]
        assert sources, f"{dockerfile.name}: {instr} {args}"
        matched_any = False
        for src in sources:
            if any(ch in src for ch in "*?["):
                matched_any |= bool(glob.glob(str(REPO / src)))
            else:
                assert (REPO / src).exists(), f"{dockerfile.relative_to(REPO)}: {instr} source {src} missing"
                matched_any = True
        assert matched_any, f"{dockerfile.relative_to(REPO)}: nothing matches {instr} {args}"


@pytest.mark.parametrize("dockerfile", ["collector/Dockerfile", "examples/docker/Dockerfile"])
def test_dockerfile_copy_sources_exist(dockerfile: str) -> None:
    path = REPO / dockerfile
    assert path.is_file()
    _check_copy_sources(path)
    ignore = path.with_name(path.name + ".dockerignore")
    assert ignore.is_file(), f"{ignore.relative_to(REPO)} keeps .venv out of the build context"
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and line[0] != "#"]
    for needed in (".venv", ".git"):
        assert needed in patterns
    for instr, args in dockerfile_instructions(path):
        if instr == "COPY" and "--from" not in args:
            for src in shlex.split(args)[:-1]:
                assert not any(fnmatch.fnmatch(src, p) for p in patterns), (
                    f"{src} is excluded by {ignore.name}"
                )


def test_agent_dockerfile_runs_the_demo() -> None:
    instructions = dockerfile_instructions(REPO / "examples" / "docker" / "Dockerfile")
    cmd = [json_form(args) for instr, args in instructions if instr == "CMD"][-1]
    assert_runs_demo(" ".join(cmd))
    users = [args for instr, args in instructions if instr == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}


def test_collector_console_script_is_declared() -> None:
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "agentwatch-collector" in pyproject["project"]["scripts"]


# =============================================================================== otelcol configs


def otelcol(name: str) -> dict[str, Any]:
    data = load_yaml(COLLECTOR / name)
    assert isinstance(data, dict)
    return data


def receiver_ports(config: Mapping[str, Any]) -> dict[int, str]:
    """Port -> receiver id, over every protocol of every receiver."""
    out: dict[int, str] = {}
    for rid, rcfg in as_mapping(config.get("receivers")).items():
        for proto in as_mapping(as_mapping(rcfg).get("protocols")).values():
            endpoint = as_mapping(proto).get("endpoint")
            if endpoint:
                _, port = host_port(str(endpoint))
                assert port is not None, f"{rid}: endpoint {endpoint} without port"
                assert port not in out, f"port {port} used by {out.get(port)} and {rid}"
                out[port] = rid
    return out


def exporter_destinations(eid: str, ecfg: Mapping[str, Any]) -> list[tuple[str, int | None]]:
    """Where an exporter sends data; [] for pull exporters such as prometheus."""
    kind = ctype(eid)
    if kind in LOAD_BALANCING_TYPES:
        resolver = as_mapping(ecfg.get("resolver"))
        assert len(resolver) == 1, f"{eid}: exactly one resolver (static, dns or k8s)"
        if "static" in resolver:
            return [host_port(h) for h in resolver["static"]["hostnames"]]
        if "dns" in resolver:
            dns = resolver["dns"]
            return [(str(dns["hostname"]), int(dns.get("port", 4317)))]
        if "k8s" in resolver:
            k8s = resolver["k8s"]
            return [(str(k8s["service"]).split(".")[0], int(p)) for p in k8s.get("ports", [4317])]
        raise AssertionError(f"{eid}: unknown resolver {resolver}")
    if kind in OTLP_EXPORTER_TYPES:
        return [host_port(str(ecfg["endpoint"]))]
    return []


Node = tuple[str, str]


def trace_graph(config: Mapping[str, Any], collector_cfg: Mapping[str, Any]) -> dict[Node, set[Node]]:
    """Directed graph of the trace path: receivers, pipelines, exporters, agentwatch-collector, backends."""
    graph: dict[Node, set[Node]] = {}

    def edge(a: Node, b: Node) -> None:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())

    ports = receiver_ports(config)
    exporters = as_mapping(config.get("exporters"))
    connectors = as_mapping(config.get("connectors"))
    pipelines = as_mapping(as_mapping(config.get("service")).get("pipelines"))
    for pid, pipe in pipelines.items():
        if ctype(pid) != "traces":
            continue
        for rid in pipe.get("receivers", []):
            edge(("connector" if rid in connectors else "receiver", rid), ("pipeline", pid))
        for eid in pipe.get("exporters", []):
            edge(("pipeline", pid), ("connector" if eid in connectors else "exporter", eid))
    for eid, ecfg in exporters.items():
        for host, port in exporter_destinations(eid, as_mapping(ecfg)):
            if host == AGENTWATCH_HOST:
                edge(("exporter", eid), ("service", AGENTWATCH_HOST))
            elif host in SELF_HOSTS:
                assert port in ports, f"{eid} sends to this collector's port {port}, which no receiver has"
                edge(("exporter", eid), ("receiver", ports[port]))
            else:
                edge(("exporter", eid), ("backend", host))
    aw_host, aw_port = host_port(str(collector_cfg["exporter"]["endpoint"]))
    assert aw_host == "otelcol", "agentwatch-collector must forward to the otelcol service"
    assert aw_port in ports, f"agentwatch-collector forwards to otelcol:{aw_port}, no receiver listens there"
    edge(("service", AGENTWATCH_HOST), ("receiver", ports[aw_port]))
    return graph


def reachable(graph: Mapping[Node, set[Node]], start: Node, blocked: Node | None = None) -> set[Node]:
    seen: set[Node] = set()
    todo = [start]
    while todo:
        node = todo.pop()
        if node in seen or node == blocked:
            continue
        seen.add(node)
        todo.extend(graph.get(node, ()))
    return seen


def find_cycle(graph: Mapping[Node, set[Node]]) -> list[Node] | None:
    state: dict[Node, int] = {}
    stack: list[Node] = []

    def visit(node: Node) -> list[Node] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


@pytest.mark.parametrize("name", OTELCOL_CONFIGS)
def test_otelcol_pipelines_reference_defined_components(name: str) -> None:
    config = otelcol(name)
    service = config["service"]
    for ext in service.get("extensions", []):
        assert ext in as_mapping(config.get("extensions")), f"{name}: extension {ext} not defined"
    connectors = as_mapping(config.get("connectors"))
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for pid, pipe in service["pipelines"].items():
        assert ctype(pid) in {"traces", "metrics", "logs"}, f"{name}: pipeline {pid}"
        assert pipe.get("receivers") and pipe.get("exporters"), f"{name}: {pid} needs receivers and exporters"
        for section in ("receivers", "processors", "exporters"):
            for cid in pipe.get(section, []):
                defined = cid in as_mapping(config.get(section)) or (
                    section != "processors" and cid in connectors
                )
                assert defined, f"{name}: pipeline {pid} uses undefined {section[:-1]} {cid}"
                used[section].add(cid)
        processors = pipe.get("processors", [])
        assert processors and ctype(processors[0]) == "memory_limiter", f"{name}: {pid}: memory_limiter first"
        assert any(ctype(p) == "batch" for p in processors), f"{name}: {pid}: batch processor missing"
    for section, ids in used.items():
        unused = set(as_mapping(config.get(section))) - ids
        assert not unused, f"{name}: {section} defined but unused: {sorted(unused)}"


@pytest.mark.parametrize("name", OTELCOL_CONFIGS)
def test_otelcol_receives_otlp_from_apps(name: str) -> None:
    ports = receiver_ports(otelcol(name))
    assert ports.get(4317) == ports.get(4318) == "otlp"
    for port in (4317, 4318):
        protocols = otelcol(name)["receivers"]["otlp"]["protocols"]
        bound = {host_port(str(p["endpoint"]))[0] for p in protocols.values()}
        assert bound == {"0.0.0.0"}, f"{name}: OTLP receivers must listen on all interfaces (port {port})"


@pytest.mark.parametrize("name", OTELCOL_CONFIGS)
def test_otelcol_routes_every_trace_through_agentwatch_without_loop(
    name: str, collector_config: dict[str, Any]
) -> None:
    graph = trace_graph(otelcol(name), collector_config)
    cycle = find_cycle(graph)
    assert cycle is None, f"{name}: trace loop: {' -> '.join('/'.join(n) for n in cycle or [])}"
    start = ("receiver", "otlp")
    backends = {n for n in reachable(graph, start) if n[0] == "backend"}
    assert {("backend", "jaeger"), ("backend", "tempo")} <= backends, f"{name}: reaches {backends}"
    bypass = {n for n in reachable(graph, start, blocked=("service", AGENTWATCH_HOST)) if n[0] == "backend"}
    assert not bypass, f"{name}: spans reach {bypass} without passing agentwatch-collector"


@pytest.mark.parametrize("name", OTELCOL_CONFIGS)
def test_otelcol_exporters_target_compose_services(name: str, services: dict[str, Any]) -> None:
    for eid, ecfg in as_mapping(otelcol(name).get("exporters")).items():
        for host, port in exporter_destinations(eid, as_mapping(ecfg)):
            if host in SELF_HOSTS:
                continue
            assert host in services, f"{name}: {eid} sends to {host}, not a compose service"
            if host == AGENTWATCH_HOST:
                assert port == 4317, f"{name}: agentwatch-collector receives OTLP/gRPC on 4317"
            else:
                assert port == 4317, f"{name}: {eid} should use the backend's OTLP/gRPC port 4317"
            if ctype(eid) in OTLP_EXPORTER_TYPES | LOAD_BALANCING_TYPES:
                tls = as_mapping(ecfg).get("tls") or as_mapping(
                    as_mapping(as_mapping(ecfg).get("protocol")).get("otlp")
                ).get("tls")
                assert as_mapping(tls).get("insecure") is True, f"{name}: {eid}: plaintext inside compose"


@pytest.mark.parametrize("name", OTELCOL_CONFIGS)
def test_otelcol_health_and_metrics_ports(name: str) -> None:
    config = otelcol(name)
    health = config["extensions"]["health_check"]["endpoint"]
    assert host_port(health) == ("0.0.0.0", 13133)
    prom = config["exporters"]["prometheus"]["endpoint"]
    assert host_port(prom)[1] == 8889
    scrape = load_yaml(COLLECTOR / "prometheus.yaml")
    targets = {
        t for job in scrape["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]
    }
    assert "otelcol:8889" in targets


def test_load_balancing_routes_by_trace_id() -> None:
    config = otelcol("otelcol-loadbalancing.yaml")
    lbs = {eid: cfg for eid, cfg in config["exporters"].items() if ctype(eid) in LOAD_BALANCING_TYPES}
    assert len(lbs) == 1, "one load_balancing exporter"
    ((eid, lb),) = lbs.items()
    assert ctype(eid) == "load_balancing", "use the current type name, not the deprecated alias"
    assert lb["routing_key"] == "traceID"
    assert "otlp" in lb["protocol"], "the load_balancing exporter speaks OTLP to each backend"
    assert "endpoint" not in lb["protocol"]["otlp"], "endpoints come from the resolver"
    destinations = exporter_destinations(eid, lb)
    assert destinations and all(h.startswith(AGENTWATCH_HOST) for h, _ in destinations)
    resolver = lb["resolver"]
    if "static" in resolver:
        assert len(resolver["static"]["hostnames"]) >= 2, "several agentwatch-collector instances"
    pipes = config["service"]["pipelines"]
    feeding = [pid for pid, p in pipes.items() if eid in p["exporters"]]
    assert feeding and all(ctype(p) == "traces" for p in feeding), "traceID routing is for trace pipelines"
    text = (COLLECTOR / "otelcol-loadbalancing.yaml").read_text(encoding="utf-8").lower()
    assert "every span of a trace" in text, "explain why routing by trace ID is required"


# =============================================================================== agentwatch-collector config


def _unknown_keys(config: Mapping[str, Any]) -> list[str]:
    problems = []
    for path, mapping in walk_keys(config):
        if path in AGREED_KEYS:
            extra = set(map(str, mapping)) - AGREED_KEYS[path]
            problems += [f"{path}.{k}".lstrip(".") for k in sorted(extra)]
    return problems


def test_collector_config_uses_only_agreed_keys(collector_config: dict[str, Any]) -> None:
    assert not _unknown_keys(collector_config), (
        f"keys not in docs/collector-config.md: {_unknown_keys(collector_config)}"
    )
    for dotted, allowed in AGREED_VALUES.items():
        section, key = dotted.split(".")
        value = as_mapping(collector_config.get(section)).get(key)
        if value is not None:
            assert value in allowed, f"{dotted}={value!r}, expected one of {sorted(allowed)}"
    assert not ("detection" in collector_config and "detection_config" in collector_config)


def test_collector_config_agrees_with_compose_and_otelcol(collector_config: dict[str, Any]) -> None:
    receivers = collector_config["receivers"]
    assert host_port(receivers["grpc"]["endpoint"]) == ("0.0.0.0", 4317)
    assert host_port(receivers["http"]["endpoint"]) == ("0.0.0.0", 4318)
    assert host_port(collector_config["health"]["endpoint"]) == ("0.0.0.0", 13133)
    exporter = collector_config["exporter"]
    assert exporter["protocol"] == "grpc" and "://" not in exporter["endpoint"], (
        "grpc endpoints are host:port"
    )
    host, port = host_port(exporter["endpoint"])
    assert (host, port) == ("otelcol", 14317)
    for name in OTELCOL_CONFIGS:
        ports = receiver_ports(otelcol(name))
        assert ports.get(port) == "otlp/agentwatch", f"{name}: {port} must be the otlp/agentwatch receiver"
    decision = collector_config["decision"]
    budget_seconds = collector_config["detection"]["agent"]["budgets"]["max_seconds"]
    assert decision["hard_timeout_seconds"] > budget_seconds, (
        "runs up to the time budget must be decided whole"
    )


def test_collector_detection_section_has_seed_004_shape(collector_config: dict[str, Any]) -> None:
    agent = collector_config["detection"]["agent"]
    assert {"budgets", "loop_detection", "tools", "logging"} <= set(agent)
    assert agent["budgets"]["max_steps"] > 0 and agent["budgets"]["max_usd"] > 0
    assert agent["loop_detection"]["repeated_calls_threshold"] >= 2
    assert {"authorization", "api_key"} <= set(agent["logging"]["redact"])


def test_collector_detection_section_loads_with_agentwatch_config(collector_config: dict[str, Any]) -> None:
    config_module = pytest.importorskip("agentwatch.config")
    loaded = config_module.load_config(collector_config["detection"], env={})
    assert loaded.budget.max_steps == collector_config["detection"]["agent"]["budgets"]["max_steps"]
    assert loaded.loop.repeated_calls_threshold == 3


def test_agreed_keys_are_documented() -> None:
    """Every key listed here is still in docs/collector-config.md (the doc may add keys)."""
    doc = (REPO / "docs" / "collector-config.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert block, "docs/collector-config.md lost its yaml block"
    documented = {path: set(map(str, mapping)) for path, mapping in walk_keys(yaml.safe_load(block.group(1)))}
    for path, keys in AGREED_KEYS.items():
        expected = keys - ({"detection_config"} if path == "" else set())
        missing = expected - documented.get(path, set())
        assert not missing, f"docs/collector-config.md no longer has {path or '<top>'}: {sorted(missing)}"
    assert "detection_config" in doc
    assert COLLECTOR_HEALTH_PATH in doc


def test_collector_config_loads_with_the_collector() -> None:
    """The real loader accepts the file (skipped while agentwatch.collector.config is absent)."""
    module = pytest.importorskip("agentwatch.collector.config")
    loaded = module.load_collector_config(COLLECTOR / "agentwatch-collector.yaml", env={})
    assert str(loaded.exporter.endpoint) == "otelcol:14317"
    assert loaded.health.port == 13133
    assert loaded.detection.budget.max_steps == 25


# =============================================================================== Tempo, Jaeger, Prometheus


def test_tempo_config() -> None:
    tempo = load_yaml(COLLECTOR / "tempo.yaml")
    protocols = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    assert host_port(protocols["grpc"]["endpoint"]) == ("0.0.0.0", 4317)
    assert host_port(protocols["http"]["endpoint"]) == ("0.0.0.0", 4318)
    assert tempo["server"]["http_listen_port"] == 3200
    assert tempo["storage"]["trace"]["backend"] == "local"
    generator = tempo["overrides"]["defaults"]["metrics_generator"]
    assert {"span-metrics", "service-graphs", "local-blocks"} <= set(generator["processors"])
    dims = generator["processor"]["span_metrics"]["dimensions"]
    assert "agentwatch.anomaly.severity" in dims
    for url in (rw["url"] for rw in tempo["metrics_generator"]["storage"]["remote_write"]):
        assert host_port(url) == ("prometheus", 9090) and url.endswith("/api/v1/write")
    paths = [p for p in json.dumps(tempo).split('"') if p.startswith("/var/tempo")]
    assert paths, "Tempo keeps its data under /var/tempo (the tempo-data volume)"


def test_jaeger_config(services: dict[str, Any]) -> None:
    jaeger = load_yaml(COLLECTOR / "jaeger.yaml")
    service = jaeger["service"]
    for ext in service["extensions"]:
        assert ext in jaeger["extensions"]
    for pipe in service["pipelines"].values():
        for section in ("receivers", "processors", "exporters"):
            for cid in pipe.get(section, []):
                assert cid in jaeger[section], f"jaeger.yaml: {cid} not defined"
    store = jaeger["exporters"]["jaeger_storage_exporter"]["trace_storage"]
    assert store in jaeger["extensions"]["jaeger_storage"]["backends"]
    assert jaeger["extensions"]["jaeger_query"]["storage"]["traces"] == store
    assert host_port(jaeger["extensions"]["jaeger_query"]["http"]["endpoint"])[1] == 16686
    assert host_port(jaeger["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]) == ("0.0.0.0", 4317)
    health = jaeger["extensions"]["healthcheckv2"]["http"]["endpoint"]
    assert f":{host_port(health)[1]}/" in command_text(services["jaeger"]["healthcheck"]["test"])


def test_prometheus_scrapes_compose_services(services: dict[str, Any]) -> None:
    prom = load_yaml(COLLECTOR / "prometheus.yaml")
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert len(jobs) == len(prom["scrape_configs"]), "duplicate job names"
    for name, job in jobs.items():
        for sc in job.get("static_configs", []):
            for target in sc["targets"]:
                host = target.split(":")[0]
                assert host == "localhost" or host in services, f"{name}: {target} is not a compose service"
        for sd in job.get("dns_sd_configs", []):
            for dns in sd["names"]:
                assert dns in services
    aw = jobs["agentwatch-collector"]
    assert aw.get("metrics_path") == "/metrics"
    assert all(sd["port"] == 13133 for sd in aw["dns_sd_configs"])


# =============================================================================== Grafana


def test_datasources(datasource_uids: dict[str, dict[str, Any]], services: dict[str, Any]) -> None:
    expected = {"prometheus": ("prometheus", 9090), "tempo": ("tempo", 3200), "jaeger": ("jaeger", 16686)}
    for uid, (host, port) in expected.items():
        ds = datasource_uids.get(uid)
        assert ds, f"datasource uid {uid} missing"
        assert ds["type"] == uid
        assert host_port(ds["url"]) == (host, port) and host in services
    defaults = [ds for ds in datasource_uids.values() if ds.get("isDefault")]
    assert len(defaults) <= 1
    for ds in datasource_uids.values():
        for path, mapping in walk_keys(ds.get("jsonData", {})):
            ref = mapping.get("datasourceUid")
            if ref is not None:
                assert ref in datasource_uids, f"{ds['uid']}.{path}: unknown datasourceUid {ref}"


def test_dashboard_provider_points_at_mounted_dashboards(services: dict[str, Any]) -> None:
    providers = load_yaml(DASHBOARD_PROVIDERS_FILE)["providers"]
    mounts = {target: source for source, target, _ in volume_mounts(services["grafana"])}
    for provider in providers:
        assert provider["type"] == "file"
        path = provider["options"]["path"]
        assert path in mounts, f"dashboard path {path} is not mounted into grafana"
        assert (repo_path(mounts[path]) / DASHBOARD_FILE.name).is_file()
    env = env_mapping(services["grafana"])
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        folder, _, file_name = home.rpartition("/")
        assert folder in mounts and (repo_path(mounts[folder]) / file_name).is_file()
    for sub in ("datasources", "dashboards", "alerting"):
        target = f"/etc/grafana/provisioning/{sub}"
        assert target in mounts, f"{target} not mounted"
        assert repo_path(mounts[target]) == GRAFANA / "provisioning" / sub


def iter_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels") or [])


def dashboard_targets() -> list[dict[str, Any]]:
    dash = load_json(DASHBOARD_FILE)
    return [t for p in iter_panels(dash["panels"]) for t in p.get("targets", [])]


SPECIAL_DATASOURCES = {"-- Grafana --", "-- Mixed --", "-- Dashboard --", "grafana"}


def test_dashboard_panels_use_defined_datasources(datasource_uids: dict[str, dict[str, Any]]) -> None:
    dash = load_json(DASHBOARD_FILE)
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    ids = [p["id"] for p in iter_panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in iter_panels(dash["panels"]):
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']} overflows the grid"
        if panel["type"] in {"row", "text"}:
            continue
        assert panel.get("targets"), f"panel {panel['title']} has no queries"
        refs = [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]
        for ref in refs:
            assert ref, f"panel {panel['title']}: every panel and query names its datasource"
            uid = ref["uid"] if isinstance(ref, Mapping) else ref
            assert uid in datasource_uids or uid in SPECIAL_DATASOURCES, (
                f"{panel['title']}: unknown uid {uid}"
            )
            if isinstance(ref, Mapping) and uid in datasource_uids:
                assert ref["type"] == datasource_uids[uid]["type"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))
    for ann in dash.get("annotations", {}).get("list", []):
        uid = ann["datasource"]["uid"]
        assert uid in datasource_uids or uid in SPECIAL_DATASOURCES


def _balanced(text: str) -> bool:
    pairs = {")": "(", "}": "{", "]": "["}
    stack: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif quoted:
            continue
        elif ch in "({[":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack and not quoted


def _attribute_names(traceql: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"\b(?:span|event)\.(agentwatch\.[A-Za-z0-9_.]+)", traceql)}


def promql_label_problems(expr: str, span_dimensions: set[str]) -> list[str]:
    """Labels an expression selects or groups by that its agentwatch metrics don't have."""
    metrics = [m for m in PROM_LABELS if re.search(rf"\b{m}\b", expr)]
    if not metrics:
        return []
    allowed = set(PROM_COMMON_LABELS)
    for metric in metrics:
        allowed |= PROM_LABELS[metric]
        if metric.startswith("traces_spanmetrics"):
            allowed |= span_dimensions
    used: set[str] = set()
    for selector in re.findall(r"[a-z_]+\{([^}]*)\}", expr):
        used |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    for grouping in re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", expr):
        used |= {g.strip() for g in grouping.split(",") if g.strip()}
    return sorted(used - allowed)


def span_metric_dimensions() -> set[str]:
    tempo = load_yaml(COLLECTOR / "tempo.yaml")
    dims = tempo["overrides"]["defaults"]["metrics_generator"]["processor"]["span_metrics"]["dimensions"]
    return {d.replace(".", "_") for d in dims}


def all_promql() -> list[tuple[str, str]]:
    out = [(f"dashboard refId {t['refId']}", t["expr"]) for t in dashboard_targets() if "expr" in t]
    for group in load_yaml(ALERTS_FILE)["groups"]:
        for rule in group["rules"]:
            out += [(rule["uid"], q["model"]["expr"]) for q in rule["data"] if "expr" in q["model"]]
    return out


def test_promql_uses_labels_the_metrics_have() -> None:
    dims = span_metric_dimensions()
    for where, expr in all_promql():
        problems = promql_label_problems(expr, dims)
        assert not problems, f"{where}: labels {problems} do not exist on the metrics of {expr!r}"


def test_dashboard_queries_cover_the_contract() -> None:
    targets = dashboard_targets()
    traceql = [t["query"] for t in targets if t["datasource"]["uid"] == "tempo"]
    promql = [t["expr"] for t in targets if t["datasource"]["uid"] == "prometheus"]
    for query in traceql + promql:
        assert _balanced(query), f"unbalanced query: {query}"
    for query in traceql:
        assert query.lstrip().startswith("{"), query
        for name in _attribute_names(query):
            assert name in CONTRACT_ATTRIBUTES or name.startswith(CONTRACT_ATTRIBUTE_PREFIXES), (
                f"{name} in {query!r} is not a contract attribute"
            )
    joined = "\n".join(traceql + promql)
    for needle in (
        "span.agentwatch.anomaly.flags != nil",
        'span.agentwatch.run.stop_reason != "success"',
        "span.agentwatch.run.failure_mode",
        "span.agentwatch.run.cost_usd",
        "span.agentwatch.anomaly.severity",
        "agentwatch_anomalies_total",
        "agentwatch_runs_total",
        "gen_ai_client_token_usage",
    ):
        assert needle in joined, f"dashboard has no query using {needle}"
    metrics_fn = re.compile(r"\|\s*(rate|count_over_time|sum_over_time|quantile_over_time)\(")
    metrics_queries = [q for q in traceql if metrics_fn.search(q)]
    if metrics_queries:
        tempo = load_yaml(COLLECTOR / "tempo.yaml")
        assert "local-blocks" in tempo["overrides"]["defaults"]["metrics_generator"]["processors"], (
            "TraceQL metrics queries need Tempo's local-blocks processor"
        )


def _duration_seconds(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", str(text)):
        total += float(amount) * units[unit]
    assert re.fullmatch(r"((\d+(\.\d+)?)(ms|s|m|h|d))+", str(text)), f"bad duration {text!r}"
    return total


def test_alert_rules_have_required_fields(datasource_uids: dict[str, dict[str, Any]]) -> None:
    data = load_yaml(ALERTS_FILE)
    assert data["apiVersion"] == 1
    uids: list[str] = []
    severities: set[str] = set()
    for group in data["groups"]:
        for field in ("name", "folder", "interval", "rules"):
            assert group.get(field), f"group {group.get('name')}: {field} missing"
        _duration_seconds(group["interval"])
        for rule in group["rules"]:
            for field in ("uid", "title", "condition", "data", "for", "labels", "annotations"):
                assert field in rule, f"rule {rule.get('uid')}: {field} missing"
            assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", rule["uid"]), rule["uid"]
            uids.append(rule["uid"])
            refs = [q["refId"] for q in rule["data"]]
            assert len(refs) == len(set(refs)) and rule["condition"] in refs
            for query in rule["data"]:
                uid = query["datasourceUid"]
                assert uid == "__expr__" or uid in datasource_uids, f"{rule['uid']}: unknown datasource {uid}"
                model = query["model"]
                assert model.get("refId", query["refId"]) == query["refId"]
                if uid == "__expr__":
                    assert model["type"] in {"reduce", "threshold", "math", "classic_conditions", "resample"}
                    if "expression" in model and model["type"] != "math":
                        assert model["expression"] in refs
                else:
                    assert model.get("expr") and _balanced(model["expr"]), f"{rule['uid']}: bad expr"
                    assert "relativeTimeRange" in query
            assert rule.get("noDataState", "NoData") in {"NoData", "Alerting", "OK", "KeepLast"}
            assert rule.get("execErrState", "Error") in {"Error", "Alerting", "OK", "KeepLast"}
            _duration_seconds(rule["for"])
            severity = rule["labels"].get("severity")
            assert severity in SEVERITIES - {"low"}, f"{rule['uid']}: severity label {severity!r}"
            severities.add(severity)
            assert not any("$" in str(v) for v in rule["labels"].values()), "labels are env-interpolated"
            assert rule["annotations"].get("summary")
            if severity == "critical":
                assert _duration_seconds(rule["for"]) == 0, f"{rule['uid']}: critical alerts fire at once"
    assert len(uids) == len(set(uids)), "duplicate rule uids"
    assert severities == {"critical", "high", "medium"}


def test_alert_routing_by_severity() -> None:
    data = load_yaml(ALERTS_FILE)
    contact_points = {cp["name"] for cp in data["contactPoints"]}
    receiver_uids = [r["uid"] for cp in data["contactPoints"] for r in cp["receivers"]]
    assert len(receiver_uids) == len(set(receiver_uids))
    for cp in data["contactPoints"]:
        for receiver in cp["receivers"]:
            assert receiver["type"] and receiver["settings"]
    (policy,) = data["policies"]
    assert policy["receiver"] in contact_points
    routes: dict[str, dict[str, Any]] = {}
    for route in policy.get("routes", []):
        assert route["receiver"] in contact_points
        for label, op, value in route.get("object_matchers", []):
            if label == "severity" and op == "=":
                routes[value] = route
    assert {"critical", "high", "medium"} <= set(routes)
    assert _duration_seconds(routes["critical"]["group_wait"]) == 0, "critical pages immediately"
    assert _duration_seconds(routes["high"]["group_wait"]) <= 60
    assert _duration_seconds(routes["medium"]["group_wait"]) >= 300, "medium is batched"
    assert _duration_seconds(routes["medium"]["group_interval"]) >= 1800
    assert routes["critical"]["receiver"] != routes["medium"]["receiver"]


def test_alert_rules_use_metrics_that_exist() -> None:
    """Rules on span metrics need the matching Tempo dimension."""
    data = load_yaml(ALERTS_FILE)
    tempo = load_yaml(COLLECTOR / "tempo.yaml")
    dims = tempo["overrides"]["defaults"]["metrics_generator"]["processor"]["span_metrics"]["dimensions"]
    labels = {d.replace(".", "_") for d in dims}
    for group in data["groups"]:
        for rule in group["rules"]:
            for query in rule["data"]:
                expr = query["model"].get("expr", "")
                if "traces_spanmetrics" in expr:
                    for label in re.findall(r"\b(agentwatch_[a-z_]+)\s*[=!]", expr):
                        assert label in labels, f"{rule['uid']}: {label} is not a span-metrics dimension"
