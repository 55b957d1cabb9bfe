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


# --------------------------------------------------------------------------- the journal variant


def journal_config() -> dict[str, Any]:
    """collector/agentwatch-collector.yaml with its commented ``buffer:`` block switched on, as the
    journal variant's header asks."""
    lines = (REPO / "collector" / "agentwatch-collector.yaml").read_text().splitlines()
    start = lines.index("# buffer:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    return {**yaml.safe_load("\n".join(lines)), **yaml.safe_load("\n".join(block))}


def test_the_journal_variant_is_the_deployment_as_a_statefulset_with_a_volume_per_pod() -> None:
    from agentwatch.collector import build_collector_config

    variant = {(d["kind"], d["metadata"]["name"]): d for d in documents("journal/agentwatch-collector.yaml")}
    assert set(variant) == {("Service", "agentwatch-collector"), ("StatefulSet", "agentwatch-collector")}
    shipped = objects()
    assert variant[("Service", "agentwatch-collector")] == shipped[("Service", "agentwatch-collector")]
    sts = variant[("StatefulSet", "agentwatch-collector")]
    dep = shipped[("Deployment", "agentwatch-collector")]
    assert sts["spec"]["serviceName"] == "agentwatch-collector", "the headless Service the dns resolver asks"
    assert sts["spec"]["selector"] == dep["spec"]["selector"]
    assert sts["spec"]["replicas"] == dep["spec"]["replicas"]
    # The same pod as the Deployment's, plus the journal volume (and its group, to write it).
    pod, dep_pod = sts["spec"]["template"], dep["spec"]["template"]
    assert pod["metadata"] == dep_pod["metadata"]
    c, dep_c = container(sts), container(dep)
    mounts = c.pop("volumeMounts")
    assert mounts[: len(dep_c["volumeMounts"])] == dep_c.pop("volumeMounts")
    assert c == dep_c
    rest = {k: v for k, v in pod["spec"].items() if k not in ("containers", "securityContext")}
    assert rest == {k: v for k, v in dep_pod["spec"].items() if k != "containers"}
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    (journal_mount,) = [m for m in mounts if m["name"] == claim["metadata"]["name"]]
    assert not journal_mount.get("readOnly")
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], "one journal per collector"
    # The image runs as 10001 (collector/Dockerfile): the volume must be writable by that group.
    dockerfile = (REPO / "collector" / "Dockerfile").read_text()
    assert f"USER {pod['spec']['securityContext']['fsGroup']}:" in dockerfile
    # The config the header describes is valid and puts the journal on the volume, which holds it.
    config = build_collector_config(journal_config(), env={})
    assert config.buffer.journal_dir is not None
    assert Path(config.buffer.journal_dir).is_relative_to(journal_mount["mountPath"])
    storage = claim["spec"]["resources"]["requests"]["storage"]
    assert storage.endswith("Gi") and int(storage[:-2]) << 30 > config.buffer.journal_max_bytes
    # `kubectl apply -f collector/kubernetes/` does not pick it up (not recursive): one or the other.
    top = [d for f in K8S.glob("*.yaml") for d in yaml.safe_load_all(f.read_text()) if d]
    assert not [d for d in top if d.get("kind") == "StatefulSet"], "applying the directory gives a Deployment only"
