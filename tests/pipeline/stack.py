"""The shipped configs, moved onto loopback with free ports, and the processes that run them.

Only addresses change (and Tempo's exporter is dropped: Tempo is not run here);
everything else is the file in collector/ as a user gets it.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .gobuild import REPO
from .procs import Proc, addr, free_port, http_get, http_json, write_yaml

COLLECTOR = REPO / "collector"


def shipped(name: str) -> dict[str, Any]:
    data = yaml.safe_load((COLLECTOR / name).read_text())
    assert isinstance(data, dict)
    return data


def telemetry_on(config: dict[str, Any], port: int) -> None:
    """Move a collector's own metrics endpoint (default :8888) to a free loopback port."""
    config.setdefault("service", {}).setdefault("telemetry", {})["metrics"] = {
        "level": "normal",
        "readers": [{"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": port}}}}],
    }


@dataclass
class Jaeger:
    proc: Proc
    otlp_grpc: int
    query: int

    def api(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return http_json(f"http://{addr(self.query)}/api{path}{query}", timeout=10)

    def search(self, service: str, tags: dict[str, str], limit: int = 50) -> list[dict[str, Any]]:
        """What the UI's Search does for ``key=value`` in its Tags box."""
        data = self.api("/traces", service=service, tags=json.dumps(tags), limit=str(limit), lookback="1h")
        return list(data.get("data") or [])

    def trace(self, trace_id: str) -> dict[str, Any]:
        data = self.api(f"/traces/{trace_id}")["data"]
        assert len(data) == 1, data
        return dict(data[0])


def start_jaeger(binary: Path, start: Any, tmp: Path) -> Jaeger:
    config = shipped("jaeger.yaml")
    ports = {k: free_port() for k in ("grpc", "http", "health", "query", "query_grpc", "metrics")}
    config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = addr(ports["grpc"])
    config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] = addr(ports["http"])
    config["extensions"]["healthcheckv2"]["http"]["endpoint"] = addr(ports["health"])
    config["extensions"]["jaeger_query"]["http"]["endpoint"] = addr(ports["query"])
    config["extensions"]["jaeger_query"]["grpc"]["endpoint"] = addr(ports["query_grpc"])
    telemetry_on(config, ports["metrics"])
    path = write_yaml(tmp / "jaeger.yaml", config)
    proc = start("jaeger", [str(binary), "--config", str(path)])
    proc.wait_http(f"http://{addr(ports['query'])}/api/services", timeout=90)
    return Jaeger(proc, ports["grpc"], ports["query"])


@dataclass
class AgentwatchCollector:
    proc: Proc
    grpc: int
    http: int
    health: int
    config_path: Path

    def healthz(self) -> dict[str, Any]:
        return dict(http_json(f"http://{addr(self.health)}/healthz"))

    def metrics_text(self) -> str:
        status, body = http_get(f"http://{addr(self.health)}/metrics")
        assert status == 200
        return body.decode()


def agentwatch_collector_config(export_to: str, **overrides: Any) -> tuple[dict[str, Any], dict[str, int]]:
    config = shipped("agentwatch-collector.yaml")
    ports = {k: free_port() for k in ("grpc", "http", "health")}
    config["receivers"]["grpc"]["endpoint"] = addr(ports["grpc"])
    config["receivers"]["http"]["endpoint"] = addr(ports["http"])
    config["health"]["endpoint"] = addr(ports["health"])
    config["exporter"]["endpoint"] = export_to
    for dotted, value in overrides.items():
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return config, ports


def start_agentwatch_collector(
    start: Any, tmp: Path, export_to: str, name: str = "agentwatch-collector", **overrides: Any
) -> AgentwatchCollector:
    config, ports = agentwatch_collector_config(export_to, **overrides)
    path = write_yaml(tmp / f"{name}.yaml", config)
    return restart_agentwatch_collector(start, name, path, ports)


def restart_agentwatch_collector(start: Any, name: str, path: Path, ports: dict[str, int]) -> AgentwatchCollector:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    proc = start(name, [sys.executable, "-m", "agentwatch.collector", "--config", str(path)], env)
    proc.wait_http(f"http://{addr(ports['health'])}/healthz", timeout=60)
    return AgentwatchCollector(proc, ports["grpc"], ports["http"], ports["health"], path)


@dataclass
class Otelcol:
    proc: Proc
    otlp_grpc: int
    otlp_http: int
    from_agentwatch: int
    health: int
    prometheus: int
    telemetry: int
    config: dict[str, Any] = field(default_factory=dict)

    def telemetry_text(self) -> str:
        status, body = http_get(f"http://{addr(self.telemetry)}/metrics")
        assert status == 200
        return body.decode()


def otelcol_config(name: str, backend: str, aw_endpoints: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
    """``name`` from collector/ on loopback: ``aw_endpoints`` are the agentwatch-collector(s),
    ``backend`` the OTLP/gRPC address the ``otlp_grpc/jaeger`` exporter sends to."""
    config = copy.deepcopy(shipped(name))
    ports = {k: free_port() for k in ("grpc", "http", "from_aw", "health", "prom", "telemetry")}
    config["extensions"]["health_check"]["endpoint"] = addr(ports["health"])
    config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"] = addr(ports["grpc"])
    config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] = addr(ports["http"])
    config["receivers"]["otlp/agentwatch"]["protocols"]["grpc"]["endpoint"] = addr(ports["from_aw"])
    config["exporters"]["prometheus"]["endpoint"] = addr(ports["prom"])
    telemetry_on(config, ports["telemetry"])
    exporters = config["exporters"]
    if "otlp_grpc/agentwatch" in exporters:
        assert len(aw_endpoints) == 1
        exporters["otlp_grpc/agentwatch"]["endpoint"] = aw_endpoints[0]
    if "load_balancing" in exporters:
        exporters["load_balancing"]["resolver"] = {"static": {"hostnames": list(aw_endpoints)}}
    # Tempo is documented by configuration only (not runnable here under its licence).
    del exporters["otlp_grpc/tempo"]
    exporters["otlp_grpc/jaeger"]["endpoint"] = backend
    config["service"]["pipelines"]["traces/from-agentwatch"]["exporters"] = ["otlp_grpc/jaeger"]
    return config, ports


def start_otelcol(
    binary: Path, start: Any, tmp: Path, config: dict[str, Any], ports: dict[str, int], name: str = "otelcol"
) -> Otelcol:
    path = write_yaml(tmp / f"{name}.yaml", config)
    proc = start(name, [str(binary), "--config", str(path)])
    proc.wait_http(f"http://{addr(ports['health'])}/", timeout=60)
    return Otelcol(
        proc, ports["grpc"], ports["http"], ports["from_aw"], ports["health"], ports["prom"], ports["telemetry"],
        config,
    )


@dataclass
class Prometheus:
    proc: Proc
    port: int

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = http_json(f"http://{addr(self.port)}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def rules(self) -> list[dict[str, Any]]:
        data = http_json(f"http://{addr(self.port)}/api/v1/rules")
        return [rule for group in data["data"]["groups"] for rule in group["rules"]]


def start_prometheus(
    binary: str, start: Any, tmp: Path, agentwatch: list[str], otelcol: Otelcol | None = None
) -> Prometheus:
    """collector/prometheus.yaml's jobs on loopback (static targets instead of compose DNS),
    scraping every second, with collector/prometheus-rules.yaml loaded."""
    config = shipped("prometheus.yaml")
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(COLLECTOR / "prometheus-rules.yaml")]
    jobs = []
    for job in config["scrape_configs"]:
        name = job["job_name"]
        if name == "agentwatch-collector":
            job.pop("dns_sd_configs")
            job["static_configs"] = [{"targets": agentwatch}]
        elif name == "agent-metrics" and otelcol is not None:
            job["static_configs"] = [{"targets": [addr(otelcol.prometheus)]}]
        elif name == "otelcol" and otelcol is not None:
            job["static_configs"] = [{"targets": [addr(otelcol.telemetry)]}]
        else:
            continue  # tempo, and Prometheus itself: not run / not needed here
        jobs.append(job)
    config["scrape_configs"] = jobs
    port = free_port()
    path = write_yaml(tmp / "prometheus.yml", config)
    proc = start(
        "prometheus",
        [binary, f"--config.file={path}", f"--storage.tsdb.path={tmp / 'prometheus-data'}",
         f"--web.listen-address={addr(port)}"],
    )
    proc.wait_http(f"http://{addr(port)}/-/ready", timeout=60)
    return Prometheus(proc, port)
