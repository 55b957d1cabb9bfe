"""Static checks of collector/kubernetes/ (no cluster here): the objects fit together.

The headless Service selects the agentwatch-collector pods and is what otelcol's
``dns`` resolver asks; named ports exist; probes hit the health endpoint the
collector config opens; the drain has time to finish; otelcol runs the tested
release. The otelcol config itself is run through the real collector's
``validate`` in tests/pipeline/test_otelcol_validate.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "collector" / "kubernetes"
NAMESPACE = "observability"


def documents(name: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
    return docs


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for name in ("agentwatch-collector.yaml", "otelcol.yaml"):
        for doc in documents(name):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in out, f"duplicate {key}"
            out[key] = doc
    return out


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


@pytest.mark.parametrize("name", ["agentwatch-collector", "otelcol"])
def test_services_select_their_deployments_and_ports_exist(name: str) -> None:
    objs = objects()
    svc, dep = objs[("Service", name)], objs[("Deployment", name)]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    named = {p["name"]: p["containerPort"] for p in container(dep)["ports"]}
    for port in svc["spec"]["ports"]:
        assert port["targetPort"] in named, f"{name}: service port {port} targets no container port"
        assert named[port["targetPort"]] == port["port"]


def test_agentwatch_service_is_headless_for_the_dns_resolver() -> None:
    svc = objects()[("Service", "agentwatch-collector")]
    assert svc["spec"]["clusterIP"] == "None", "one A record per pod, or traces are split"
    config = yaml.safe_load((K8S / "otelcol-loadbalancing.yaml").read_text())
    lb = config["exporters"]["load_balancing"]
    assert lb["routing_key"] == "traceID"
    dns = lb["resolver"]["dns"]
    assert dns["hostname"] == f"agentwatch-collector.{NAMESPACE}.svc.cluster.local"
    assert int(dns["port"]) in {p["port"] for p in svc["spec"]["ports"] if p["name"] == "otlp-grpc"}


def test_probes_and_drain_match_the_collector_config() -> None:
    collector = yaml.safe_load((REPO / "collector" / "agentwatch-collector.yaml").read_text())
    dep = objects()[("Deployment", "agentwatch-collector")]
    c = container(dep)
    health_port = int(collector["health"]["endpoint"].rsplit(":", 1)[1])
    named = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["path"] == "/healthz" and named[get["port"]] == health_port
    assert c["args"] == ["--config", "/etc/agentwatch/collector.yaml"]
    assert c["volumeMounts"][0]["mountPath"] == "/etc/agentwatch"
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    drain = collector["decision"]["straggler_delay_ms"] / 1000 + collector["exporter"]["timeout_seconds"]
    assert grace > drain, "SIGTERM's drain must finish before the kubelet's SIGKILL"
    assert dep["spec"]["replicas"] >= 2
    # otelcol in the same namespace reaches agentwatch-collector's exporter target by Service name.
    host, port = collector["exporter"]["endpoint"].rsplit(":", 1)
    svc = objects()[("Service", host)]
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]}


def test_otelcol_runs_the_tested_release_with_rbac_for_the_k8s_resolver() -> None:
    manifest = yaml.safe_load((REPO / "collector" / "builder-config.yaml").read_text())
    objs = objects()
    image = container(objs[("Deployment", "otelcol")])["image"]
    assert image.endswith(":" + manifest["dist"]["version"]), image
    role = objs[("Role", "otelcol-endpoints-reader")]
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"endpoints", "endpointslices"} <= resources
    binding = objs[("RoleBinding", "otelcol-endpoints-reader")]
    sa = objs[("Deployment", "otelcol")]["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"][0]["name"] == sa and ("ServiceAccount", sa) in objs
