"""What a SIGKILL (or an OOM kill) costs today: agentwatch-collector has no on-disk journal.

Spans are acknowledged when buffered in memory; a trace waits for its straggler
delay before it is decided and forwarded. Killed in that window, the process
loses every acknowledged span it held, and a restart brings none back. This
test measures that (printed as a JSON line) so the documentation can say it
with numbers; with a journal it would have to show every span delivered.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ..collector.helpers import GrpcSink
from .procs import Proc, addr
from .stack import restart_agentwatch_collector, start_agentwatch_collector
from .test_scale_out import agent_runs, send_from_two_processes, write_batches

pytestmark = pytest.mark.timeout(600)


def test_sigkill_loses_the_acknowledged_spans_still_in_memory(procs: Callable[..., Proc], tmp_path: Path) -> None:
    spans = agent_runs(40, seed=3)
    files = write_batches(spans, tmp_path, "kill")
    sink = GrpcSink()
    try:
        aw = start_agentwatch_collector(
            procs, tmp_path, sink.target, name="aw", **{"decision.straggler_delay_ms": 10000}
        )
        ports = {"grpc": aw.grpc, "http": aw.http, "health": aw.health}
        sent = send_from_two_processes(addr(aw.grpc), files, pause=0.0)
        acknowledged = sum(s["spans"] for s in sent)
        held = aw.healthz()["gauges"]["buffer_spans"]
        aw.proc.kill()
        restarted = restart_agentwatch_collector(procs, "aw-restarted", aw.config_path, ports)
        time.sleep(2)
        delivered = sink.count()
        report = {
            "acknowledged": acknowledged,
            "held_in_memory_at_kill": held,
            "delivered": delivered,
            "lost": acknowledged - delivered,
            "replayed_after_restart": restarted.healthz()["counters"]["spans_received"]["total"],
        }
        print("SIGKILL", json.dumps(report))
        assert acknowledged == len(spans) and all(s["failed"] == 0 for s in sent)
        assert held == acknowledged, "every trace was still waiting for its straggler delay"
        assert report["lost"] == acknowledged, "all of it is lost"
        assert report["replayed_after_restart"] == 0, "no journal: nothing comes back"
    finally:
        sink.stop()
