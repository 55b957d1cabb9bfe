"""End to end with real programs: demo agent → otelcol → agentwatch-collector → otelcol → Jaeger v2.

otelcol is the distribution of collector/builder-config.yaml running
collector/otelcol-config.yaml; Jaeger v2 runs collector/jaeger.yaml (in-memory
storage); agentwatch-collector runs collector/agentwatch-collector.yaml. Only
the addresses are moved to loopback ports (and Tempo's exporter dropped: Tempo
is documented by configuration only). The test then searches Jaeger's query
API the way the README tells a user to: by tag, then by trace id.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .gobuild import REPO
from .procs import Proc, addr, wait_for
from .stack import (
    Jaeger,
    Prometheus,
    otelcol_config,
    start_agentwatch_collector,
    start_jaeger,
    start_otelcol,
    start_prometheus,
)
from .tools import tool

pytestmark = pytest.mark.timeout(3600)  # the first run builds otelcol and Jaeger (minutes, cached)

SERVICE = "agentwatch-demo"
CRITICAL_FLAGS = {"TOOL_DENIED", "DUPLICATE_SIDE_EFFECT", "ENTITY_MISMATCH", "COST_BUDGET_EXCEEDED"}


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span.get("tags", [])}


def anomaly_events(span: dict[str, Any]) -> list[dict[str, Any]]:
    """Jaeger shows span events as logs; the event name is the ``event`` field."""
    out = []
    for log in span.get("logs", []):
        fields = {f["key"]: f["value"] for f in log.get("fields", [])}
        if fields.get("event") == "agentwatch.anomaly":
            out.append(fields)
    return out


def flag_list(value: Any) -> list[str]:
    """Jaeger stores string-array attributes as one JSON-encoded string."""
    import json

    if isinstance(value, list):
        return [str(v) for v in value]
    parsed = json.loads(value)
    assert isinstance(parsed, list), value
    return [str(v) for v in parsed]


def run_span(trace: dict[str, Any]) -> dict[str, Any]:
    runs = [s for s in trace["spans"] if "agentwatch.run.stop_reason" in tags(s)]
    assert len(runs) == 1, [s["operationName"] for s in runs]
    return runs[0]


@pytest.fixture
def pipeline(
    otelcol_bin: Path, jaeger_bin: Path, procs: Callable[..., Proc], tmp_path: Path
) -> dict[str, Any]:
    jaeger = start_jaeger(jaeger_bin, procs, tmp_path)
    config, ports = otelcol_config("otelcol-config.yaml", addr(jaeger.otlp_grpc), ["placeholder"])
    awc = start_agentwatch_collector(procs, tmp_path, export_to=addr(ports["from_aw"]))
    config["exporters"]["otlp_grpc/agentwatch"]["endpoint"] = addr(awc.grpc)
    otelcol = start_otelcol(otelcol_bin, procs, tmp_path, config, ports)
    prometheus = start_prometheus(tool("prometheus", "prometheus"), procs, tmp_path, [addr(awc.health)], otelcol)
    return {"jaeger": jaeger, "awc": awc, "otelcol": otelcol, "prometheus": prometheus}


def run_demo(otlp_grpc_port: int, tmp_path: Path) -> str:
    env = dict(os.environ)
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{addr(otlp_grpc_port)}"
    env["OTEL_EXPORTER_OTLP_INSECURE"] = "true"
    result = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo_agent.py")],
        env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_demo_runs_are_flagged_and_searchable_in_jaeger(pipeline: dict[str, Any], tmp_path: Path) -> None:
    jaeger: Jaeger = pipeline["jaeger"]
    run_demo(pipeline["otelcol"].otlp_grpc, tmp_path)

    # README: Jaeger tag search `agentwatch.run.stop_reason=loop_detected`.
    loops = wait_for(
        lambda: jaeger.search(SERVICE, {"agentwatch.run.stop_reason": "loop_detected"}),
        60, "a loop_detected run in Jaeger",
    )
    assert len(loops) == 1, [t["traceID"] for t in loops]
    loop_trace = loops[0]
    run = tags(run_span(loop_trace))
    assert run["agentwatch.run.stop_reason"] == "loop_detected"
    assert "LOOP_DETECTED" in flag_list(run["agentwatch.run.anomaly.flags"])
    assert int(run["agentwatch.run.anomaly.count"]) >= 1
    assert run["agentwatch.run.failure_mode"] == "cost_blowup"
    flagged = {s["spanID"]: s for s in loop_trace["spans"] if "agentwatch.anomaly.flags" in tags(s)}
    # The fault origin is the cause: a flagged span, or the evidence span a finding names
    # (here the loop's first call), and always a span of this trace.
    evidence = {
        e.get("agentwatch.anomaly.related_span_id") for s in flagged.values() for e in anomaly_events(s)
    }
    origin = run["agentwatch.run.fault_origin.span_id"]
    assert origin in {s["spanID"] for s in loop_trace["spans"]}
    assert origin in flagged or origin in evidence, (origin, evidence)
    looping = [s for s in flagged.values() if "LOOP_DETECTED" in flag_list(tags(s)["agentwatch.anomaly.flags"])]
    assert looping, "the repeated tool call carries LOOP_DETECTED"
    for span in looping:
        events = anomaly_events(span)
        assert any(e["agentwatch.anomaly.flag"] == "LOOP_DETECTED" and e["agentwatch.anomaly.reason"] for e in events)
        assert tags(span)["agentwatch.anomaly.severity"] in {"critical", "high"}

    # README: `agentwatch.anomaly.severity=critical` finds the entity-mismatch and the
    # duplicate-ticket runs, each on the span where the critical flag shows.
    critical = wait_for(
        lambda: (found := jaeger.search(SERVICE, {"agentwatch.anomaly.severity": "critical"})) and len(found) >= 2
        and found,
        60, "two traces with critical findings",
    )
    seen_flags: set[str] = set()
    for trace in critical:
        spans = [s for s in trace["spans"] if tags(s).get("agentwatch.anomaly.severity") == "critical"]
        assert spans, "the search matched a span tag"
        for span in spans:
            flags = set(flag_list(tags(span)["agentwatch.anomaly.flags"]))
            assert flags & CRITICAL_FLAGS, flags
            event_flags = {e["agentwatch.anomaly.flag"] for e in anomaly_events(span)}
            assert flags == event_flags, "one agentwatch.anomaly event per flag"
            seen_flags |= flags & CRITICAL_FLAGS
        summary = tags(run_span(trace))
        assert set(flag_list(summary["agentwatch.run.anomaly.flags"])) >= seen_flags & flags
    assert {"ENTITY_MISMATCH", "DUPLICATE_SIDE_EFFECT"} <= seen_flags

    # The healthy run: completed, nothing flagged.
    healthy = jaeger.search(SERVICE, {"agentwatch.run.failure_mode": "completed"})
    assert healthy, "the healthy run is in Jaeger"
    for trace in healthy:
        assert not any("agentwatch.anomaly.flags" in tags(s) for s in trace["spans"])

    # By trace id: the same trace, whole.
    by_id = jaeger.trace(loop_trace["traceID"])
    assert {s["spanID"] for s in by_id["spans"]} == {s["spanID"] for s in loop_trace["spans"]}
    assert all(s["traceID"] == loop_trace["traceID"] for s in by_id["spans"])

    # Every span went through agentwatch-collector once: in = out, nothing dropped.
    health = pipeline["awc"].healthz()["counters"]
    assert health["traces_decided"]["total"] >= 4
    assert health["spans_forwarded"] == health["spans_received"]["total"] > 0
    assert health["spans_dropped"]["total"] == 0
    total_in_jaeger = sum(
        len(t["spans"]) for t in jaeger.search(SERVICE, {}, limit=100)
    )
    assert total_in_jaeger == health["spans_forwarded"]

    # A real Prometheus scraped agentwatch-collector's /metrics and otelcol's telemetry, and
    # evaluated collector/prometheus-rules.yaml over them.
    prometheus: Prometheus = pipeline["prometheus"]
    forwarded = health["spans_forwarded"]
    wait_for(
        lambda: [float(r["value"][1]) for r in prometheus.query("agentwatch_collector_spans_forwarded_total")]
        == [forwarded],
        30, "Prometheus to scrape agentwatch-collector",
    )
    series = prometheus.query("agentwatch_collector_traces_decided_total")
    decided = {r["metric"]["reason"]: float(r["value"][1]) for r in series}
    assert decided == {k: float(v) for k, v in health["traces_decided"].items() if k != "total"}
    # The demo's in-process processor flagged its spans already: the collector confirms, adds nothing.
    assert prometheus.query("sum(agentwatch_collector_findings_total) or vector(0)")[0]["value"][1] == str(
        health["findings"]["total"]
    )
    # otelcol is scraped on its own schedule: wait for its first sample rather than assume it came.
    wait_for(
        lambda: [r["value"][1] for r in prometheus.query('up{job="otelcol"}')] == ["1"],
        30, "Prometheus to scrape otelcol",
    )
    rules = wait_for(
        lambda: (rs := prometheus.rules()) and all(r.get("lastEvaluation", "").startswith("2") for r in rs) and rs,
        30, "every rule evaluated",
    )
    assert {r["name"] for r in rules} >= {"AgentwatchCriticalAnomalyRate", "AgentwatchCollectorCriticalFindingRate"}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
