"""Scale-out for real: otelcol's ``load_balancing`` exporter (routing_key: traceID, static
resolver) in front of three agentwatch-collector processes.

Spans of each trace come from two app processes (the agent's run spans from one,
its tool spans from the other), interleaved, in several batches. Every trace
must be judged whole: the flags on every span are the ones a single
agentwatch-collector gives the same input, and spans in = spans out across the
fleet. Then one instance is stopped mid-load and restarted; the test counts
what was delivered, retried and dropped (printed as a JSON line, see
docs/collector-config.md "Scaling out").
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from ..collector.helpers import GrpcSink, capture
from .gobuild import REPO
from .procs import Proc, addr, wait_for
from .stack import (
    AgentwatchCollector,
    otelcol_config,
    restart_agentwatch_collector,
    start_agentwatch_collector,
    start_otelcol,
)

pytestmark = pytest.mark.timeout(3600)

INSTANCES = 3
TRACES = 60
# Behind otelcol's batch processor (timeout 1s) the spans of one trace, sent by two
# processes, can reach agentwatch-collector up to ~1 s apart: wait longer than that.
STRAGGLER_MS = 3000
AW_OVERRIDES = {"decision.straggler_delay_ms": STRAGGLER_MS, "decision.idle_timeout_seconds": 10}

SpanKey = tuple[str, str]
LB = "load_balancing"


def agent_runs(count: int, seed: int) -> list[ReadableSpan]:
    """``count`` agent runs; run spans from service agent-app, tool spans from tool-app.

    Every run repeats one lookup three times (LOOP_DETECTED); two runs in three read an
    order of another customer (ENTITY_MISMATCH)."""

    def build(tracer_for: Callable[[str], Any]) -> None:
        for i in range(count):
            run_tracer, tool_tracer = tracer_for("agent-app"), tracer_for("tool-app")
            t0 = time.time_ns()
            customer = "cust_012" if i % 3 == 0 else "cust_789"
            run = run_tracer.start_span(
                "invoke_agent support",
                attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": "support",
                    "agentwatch.run.id": f"run-{seed}-{i}",
                    "agentwatch.run.entity.customer": customer,
                },
                start_time=t0,
            )
            ctx = trace.set_span_in_context(run)
            calls = [("lookup_order", f"{i:016x}")] * 3 + [("get_order", "1111111111111111")]
            for step, (tool, args_hash) in enumerate(calls, start=1):
                attrs: dict[str, Any] = {
                    "gen_ai.operation.name": "execute_tool",
                    "gen_ai.tool.name": tool,
                    "agentwatch.tool.args_hash": args_hash,
                    "agentwatch.step": step,
                }
                if tool == "get_order":
                    attrs["agentwatch.tool.result_entities"] = ["customer:cust_012"]
                span = tool_tracer.start_span(f"execute_tool {tool}", context=ctx, attributes=attrs,
                                              start_time=t0 + step * 1_000_000)
                span.end(end_time=t0 + step * 1_000_000 + 500_000)
            run.end(end_time=t0 + 6_000_000)

    return capture(build, services=("agent-app", "tool-app"))


def write_batches(spans: list[ReadableSpan], tmp: Path, tag: str) -> dict[str, list[str]]:
    """Serialized OTLP requests per app process: run spans in batches of 5, tool spans of 13
    (so a trace's tool spans straddle batches), both in trace order."""
    by_service: dict[str, list[ReadableSpan]] = {"agent-app": [], "tool-app": []}
    for span in spans:
        by_service[str(span.resource.attributes["service.name"])].append(span)
    files: dict[str, list[str]] = {}
    for service, size in (("agent-app", 5), ("tool-app", 13)):
        items = by_service[service]
        names = []
        for n, start in enumerate(range(0, len(items), size)):
            path = tmp / f"{tag}-{service}-{n:03d}.bin"
            path.write_bytes(encode_spans(items[start : start + size]).SerializeToString())
            names.append(str(path))
        files[service] = names
    return files


def send_from_two_processes(target: str, files: dict[str, list[str]], pause: float) -> list[dict[str, int]]:
    """Both app processes at once; their batches interleave."""
    senders = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.pipeline.send_batches", target, str(pause), *names],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )
        for names in files.values()
    ]
    out = []
    for proc in senders:
        stdout, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def flags_by_span(sink: GrpcSink) -> dict[SpanKey, tuple[tuple[str, ...], tuple[str, ...]]]:
    """(span flags, run-summary flags) of every delivered span."""
    out: dict[SpanKey, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for r in sink.received():
        key = (r.span.trace_id.hex(), r.span_id)
        out[key] = (tuple(sorted(r.flags)), tuple(sorted(r.attrs.get("agentwatch.run.anomaly.flags", ()))))
    return out


SUMMARY_SPAN = "agentwatch.anomaly.summary"


def counted(sink: GrpcSink) -> Counter[SpanKey]:
    """Copies of each delivered app span (agentwatch's synthetic summary spans left out)."""
    return Counter((r.span.trace_id.hex(), r.span_id) for r in sink.received() if r.name != SUMMARY_SPAN)


def traces_not_judged_whole(sink: GrpcSink) -> int:
    """Traces whose run summary lacks the loop every trace has, or that needed a summary span."""
    runs_ok: dict[str, bool] = {}
    for r in sink.received():
        trace_id = r.span.trace_id.hex()
        runs_ok.setdefault(trace_id, True)
        if r.name == SUMMARY_SPAN:
            runs_ok[trace_id] = False
        elif r.name.startswith("invoke_agent"):
            runs_ok[trace_id] &= "LOOP_DETECTED" in r.attrs.get("agentwatch.run.anomaly.flags", ())
    return sum(1 for ok in runs_ok.values() if not ok)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def test_load_balanced_fleet_judges_every_trace_whole(
    otelcol_bin: Path, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    spans = agent_runs(TRACES, seed=1)
    files = write_batches(spans, tmp_path, "fleet")
    total = len(spans)

    # Reference: one agentwatch-collector, same config, same input, no load balancer.
    ref_sink = GrpcSink()
    fleet_sink = GrpcSink()
    try:
        single = start_agentwatch_collector(procs, tmp_path, ref_sink.target, name="reference", **AW_OVERRIDES)
        send_from_two_processes(addr(single.grpc), files, pause=0.05)
        wait_for(lambda: ref_sink.count() >= total, 60, "the reference run's spans")
        reference = flags_by_span(ref_sink)

        config, ports = otelcol_config("otelcol-loadbalancing.yaml", fleet_sink.target, ["placeholder"])
        fleet = [
            start_agentwatch_collector(procs, tmp_path, addr(ports["from_aw"]), name=f"aw-{i}", **AW_OVERRIDES)
            for i in range(INSTANCES)
        ]
        config["exporters"]["load_balancing"]["resolver"] = {
            "static": {"hostnames": [addr(aw.grpc) for aw in fleet]}
        }
        otelcol = start_otelcol(otelcol_bin, procs, tmp_path, config, ports)
        sent = send_from_two_processes(addr(otelcol.otlp_grpc), files, pause=0.05)
        assert sum(s["spans"] for s in sent) == total and not any(s["failed"] for s in sent)
        wait_for(lambda: fleet_sink.count() >= total, 60, "the fleet's spans")
        time.sleep(1.0)  # anything extra (a duplicate) would arrive now

        copies = counted(fleet_sink)
        assert sum(copies.values()) == total, "spans in = spans out"
        assert set(copies.values()) == {1}, "no span delivered twice"
        got = flags_by_span(fleet_sink)
        assert got == reference, "flags differ from a single instance's"
        assert sum(1 for f, _ in got.values() if "LOOP_DETECTED" in f) == TRACES
        assert sum(1 for f, _ in got.values() if "ENTITY_MISMATCH" in f) == 40
        assert sum(1 for _, run in got.values() if "LOOP_DETECTED" in run) == TRACES, "run summaries"

        per_instance = [aw.healthz()["counters"] for aw in fleet]
        received = [c["spans_received"]["total"] for c in per_instance]
        assert all(n > 0 for n in received), f"every instance got a share: {received}"
        assert sum(received) == total
        assert sum(c["spans_forwarded"] for c in per_instance) == total
        assert sum(c["traces_decided"]["total"] for c in per_instance) == TRACES
        assert all(c["late_spans"]["total"] == 0 for c in per_instance), "a trace reached two instances"
    finally:
        ref_sink.stop()
        fleet_sink.stop()


def _fleet(
    otelcol_bin: Path, procs: Callable[..., Proc], tmp_path: Path, sink: GrpcSink
) -> tuple[Any, list[AgentwatchCollector], list[dict[str, int]]]:
    config, ports = otelcol_config("otelcol-loadbalancing.yaml", sink.target, ["placeholder"])
    fleet, fleet_ports = [], []
    for i in range(INSTANCES):
        aw = start_agentwatch_collector(procs, tmp_path, addr(ports["from_aw"]), name=f"aw-{i}", **AW_OVERRIDES)
        fleet.append(aw)
        fleet_ports.append({"grpc": aw.grpc, "http": aw.http, "health": aw.health})
    config["exporters"]["load_balancing"]["resolver"] = {"static": {"hostnames": [addr(aw.grpc) for aw in fleet]}}
    otelcol = start_otelcol(otelcol_bin, procs, tmp_path, config, ports)
    return otelcol, fleet, fleet_ports


def test_stopping_one_instance_mid_load_is_counted(
    otelcol_bin: Path, procs: Callable[..., Proc], tmp_path: Path
) -> None:
    """SIGTERM one of three instances while the apps send, restart it 5 s later (same port).

    The shipped load-balancing config retries each backend's batches (the OTLP
    exporter's default retry_on_failure and sending_queue), so spans routed to the
    stopped instance wait in otelcol and are delivered after the restart. What the
    stopped instance held is forwarded by its SIGTERM drain. Nothing is lost silently.
    """
    spans = agent_runs(TRACES * 2, seed=2)
    files = write_batches(spans, tmp_path, "outage")
    total = len(spans)
    sink = GrpcSink()
    try:
        otelcol, fleet, fleet_ports = _fleet(otelcol_bin, procs, tmp_path, sink)
        victim = fleet[1]
        results: list[dict[str, int]] = []
        thread = threading.Thread(
            target=lambda: results.extend(send_from_two_processes(addr(otelcol.otlp_grpc), files, pause=0.1))
        )
        thread.start()
        time.sleep(1.5)
        stopped_at = time.monotonic()
        exit_code = victim.proc.stop(grace=30)
        stop_seconds = time.monotonic() - stopped_at
        time.sleep(5)
        restarted = restart_agentwatch_collector(procs, "aw-1-restarted", victim.config_path, fleet_ports[1])
        thread.join(300)
        assert not thread.is_alive()
        wait_for(lambda: len(counted(sink)) >= total, 120, "every span delivered")
        time.sleep(1.0)
        delivered = counted(sink)

        tele = otelcol.telemetry_text()
        others = [aw.healthz()["counters"] for aw in (fleet[0], fleet[2], restarted)]
        report = {
            "spans_sent": total,
            "apps_failed_requests": sum(r["failed"] for r in results),
            "delivered_unique": len(delivered),
            "delivered_twice": sum(1 for n in delivered.values() if n > 1),
            "victim_exit_code": exit_code,
            "victim_sigterm_seconds": round(stop_seconds, 2),
            "otelcol_lb_sent_spans": metric(tele, "otelcol_exporter_sent_spans", exporter=LB),
            "otelcol_lb_send_failed_spans": metric(tele, "otelcol_exporter_send_failed_spans", exporter=LB),
            "otelcol_retry_log_lines": otelcol.proc.log.read_text(errors="replace").count("Will retry"),
            "aw_dropped_spans": sum(c["spans_dropped"]["total"] for c in others),
            "aw_late_spans": sum(c["late_spans"]["total"] for c in others),
            "summary_spans": sum(1 for r in sink.received() if r.name == SUMMARY_SPAN),
            "traces_not_judged_whole": traces_not_judged_whole(sink),
            "traces": TRACES * 2,
        }
        print("SCALE-OUT OUTAGE", json.dumps(report))
        (tmp_path / "outage.json").write_text(json.dumps(report))
        assert exit_code == 0, "SIGTERM drains and exits 0"
        assert report["apps_failed_requests"] == 0, "otelcol kept accepting while a backend was down"
        assert len(delivered) == total, "every acknowledged span delivered"
        assert report["delivered_twice"] == 0
        assert report["otelcol_lb_sent_spans"] == total and report["otelcol_lb_send_failed_spans"] == 0
        assert report["aw_dropped_spans"] == 0
    finally:
        sink.stop()
