"""What a SIGKILL (or an OOM kill) costs, without and with the on-disk journal; what SIGTERM does.

Without ``buffer.journal_dir``, spans are acknowledged once buffered in memory:
killed before their trace is decided and forwarded, they are lost, and a
restart brings none back. With the journal, a request is written to disk
before it is acknowledged and replayed after the restart: every acknowledged
span is delivered exactly once, or delivered again and counted under
``journal_replayed_spans{state="in_flight"}`` (its batch was being exported
when the process died) or ``journal_unacknowledged_spans`` (its request was
journaled but not answered: the client sent it again). SIGTERM with the journal
keeps what the drain timeout leaves undelivered for the next start. Each test prints its numbers as a JSON line for
docs/collector-config.md "Durability".
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from ..collector.helpers import GrpcSink, start_collector, wait_until
from .procs import Proc, addr, wait_for
from .stack import restart_agentwatch_collector, start_agentwatch_collector
from .test_scale_out import SpanKey, agent_runs, flags_by_span, send_from_two_processes, write_batches

pytestmark = pytest.mark.timeout(600)

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def test_sigkill_without_journal_loses_the_acknowledged_spans_still_in_memory(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
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
        print("SIGKILL without journal", json.dumps(report))
        assert acknowledged == len(spans) and all(s["failed"] == 0 for s in sent)
        assert held == acknowledged, "every trace was still waiting for its straggler delay"
        assert report["lost"] == acknowledged, "all of it is lost"
        assert report["replayed_after_restart"] == 0, "no journal: nothing comes back"
    finally:
        sink.stop()


# --------------------------------------------------------------------------- with the journal


class SlowSink(GrpcSink):
    """A downstream that holds every export ``delay`` seconds before answering."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.started = threading.Event()

    def _export(self, request: Any, context: Any) -> Any:
        self.started.set()
        time.sleep(self.delay)
        return super()._export(request, context)


TRACES = 80
PER_REQUEST = 4  # traces per request pair (their tool spans, then their run spans)
STRAGGLER_MS = 600


def requests_in_trace_order(spans: list[ReadableSpan]) -> list[tuple[bytes, list[SpanKey]]]:
    """Per group of traces: one request with their tool spans, then one with their run spans.

    Every trace's root (the run span) comes last, so a trace is decided whole whether or not
    the collector restarts in between: the flags do not depend on where the kill falls."""
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        assert span.context is not None
        by_trace.setdefault(span.context.trace_id, []).append(span)
    traces = list(by_trace.values())
    out = []
    for start in range(0, len(traces), PER_REQUEST):
        group = [s for trace in traces[start : start + PER_REQUEST] for s in trace]
        for part in ([s for s in group if s.parent], [s for s in group if not s.parent]):
            keys = [(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in part if s.context]
            out.append((encode_spans(part).SerializeToString(), keys))
    return out


class Sender:
    """Two client threads sending their share of the requests in order, retrying refusals (as OTLP
    exporters do). Records which collector process acknowledged each request first."""

    def __init__(self, target: str, requests: list[tuple[bytes, list[SpanKey]]], pause: float) -> None:
        self.target = target
        self.requests = requests
        self.pause = pause
        self.epoch = 1  # which process is up: 1 before the kill, 2 after
        self.acked_by: dict[int, int] = {}  # request index -> epoch of its acknowledgement
        self.failed_then_retried: set[int] = set()  # cut by the kill or refused while down: sent again
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=120)
            assert not thread.is_alive()

    def _run(self, me: int) -> None:
        channel = grpc.insecure_channel(self.target)
        export = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        mine = [i for i in range(len(self.requests)) if (i // 2) % 2 == me]  # a tool/run pair each
        for i in mine:
            body = self.requests[i][0]
            deadline = time.monotonic() + 60
            while True:
                epoch = self.epoch
                try:
                    export(body, timeout=5, wait_for_ready=False)
                except grpc.RpcError:
                    assert time.monotonic() < deadline, "the restarted collector never took the request"
                    with self.lock:
                        self.failed_then_retried.add(i)
                    time.sleep(0.1)
                    continue
                with self.lock:
                    self.acked_by[i] = epoch
                break
            time.sleep(self.pause)
        channel.close()


def expected_flags(requests: list[tuple[bytes, list[SpanKey]]]) -> dict[SpanKey, Any]:
    """The flags an uninterrupted collector gives the same requests."""
    sink = GrpcSink()
    collector = start_collector(sink.target, decision={"straggler_delay_ms": 100})
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{collector.grpc_port}")
        export = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
        for body, _ in requests:
            export(body, timeout=5)
        channel.close()
        total = sum(len(keys) for _, keys in requests)
        wait_until(lambda: sink.count() >= total, timeout=30)
        return flags_by_span(sink)
    finally:
        collector.shutdown(timeout=2)
        sink.stop()


def test_sigkill_with_journal_delivers_every_acknowledged_span_once_or_counts_it(
    procs: Callable[..., Proc], tmp_path: Path
) -> None:
    requests = requests_in_trace_order(agent_runs(TRACES, seed=11))
    total = sum(len(keys) for _, keys in requests)
    baseline = expected_flags(requests)
    journal = tmp_path / "journal"
    sink = SlowSink(delay=0.3)  # an export is in flight most of the time: the kill may cut one
    try:
        aw = start_agentwatch_collector(
            procs, tmp_path, sink.target, name="aw",
            **{"decision.straggler_delay_ms": STRAGGLER_MS, "buffer.journal_dir": str(journal)},
        )  # fmt: skip
        ports = {"grpc": aw.grpc, "http": aw.http, "health": aw.health}
        sender = Sender(addr(aw.grpc), requests, pause=0.15)
        sender.start()
        # Under load: requests still arriving, some traces forwarded, others waiting.
        wait_for(lambda: sink.count() >= total // 5, 60, "a fifth of the spans forwarded", interval=0.02)
        before = aw.healthz()
        sender.epoch = 2
        aw.proc.kill()
        killed_at = time.monotonic()
        delivered_before_restart = sink.count()
        restarted = restart_agentwatch_collector(procs, "aw-restarted", aw.config_path, ports)
        restart_seconds = time.monotonic() - killed_at
        sender.join()

        def settled() -> bool:
            gauges = restarted.healthz()["gauges"]
            busy = ("buffer_spans", "queue_batches", "journal_pending_requests")
            return all(gauges[name] == 0 for name in busy)

        wait_for(settled, 60, "the restarted collector to deliver everything")
        health = restarted.healthz()
        restarted.proc.stop()
        assert restarted.proc.popen.returncode == 0
    finally:
        sink.stop()

    copies = Counter((r.span.trace_id.hex(), r.span_id) for r in sink.received())
    replayed = health["counters"]["journal_replayed_spans"]
    acked_first = {i for i, epoch in sender.acked_by.items() if epoch == 1 and i not in sender.failed_then_retried}
    resent = sender.failed_then_retried
    acked_keys = [k for i in acked_first for k in requests[i][1]]
    resent_keys = [k for i in resent for k in requests[i][1]]
    report = {
        "requests": len(requests),
        "spans": total,
        "acknowledged_before_kill": len(acked_keys),
        "forwarded_before_kill": delivered_before_restart,
        "held_at_kill": before["gauges"]["buffer_spans"],
        "replayed": replayed,
        "unacknowledged": health["counters"]["journal_unacknowledged_spans"],
        "lost": sum(1 for k in acked_keys if copies[k] == 0),
        "delivered_twice": sum(1 for k in acked_keys if copies[k] == 2),
        "cut_or_refused_then_resent_by_client": len(resent_keys),
        "of_which_delivered_twice": sum(1 for k in resent_keys if copies[k] == 2),
        "extra_copies": sum(n - 1 for n in copies.values()),
        "restart_seconds": round(restart_seconds, 2),
        "journal_bytes_after": health["gauges"]["journal_bytes"],
    }
    print("SIGKILL with journal", json.dumps(report))
    log = Path(aw.proc.log).read_text() + Path(restarted.proc.log).read_text()
    assert all(sender.acked_by.get(i) for i in range(len(requests))), "every request acknowledged in the end"
    assert report["forwarded_before_kill"] > 0 and report["held_at_kill"] > 0, "traces both done and waiting"
    assert report["acknowledged_before_kill"] < total, "killed while requests were still arriving"
    assert replayed["total"] > 0, log[-3000:]
    # Every acknowledged span: delivered once, or twice and counted (its batch was being exported).
    assert report["lost"] == 0, log[-3000:]
    assert all(copies[k] <= 2 for k in copies)
    assert report["delivered_twice"] <= replayed["in_flight"]
    # A request cut by the kill was not acknowledged: the client sent it again (at least once).
    assert all(1 <= copies[k] <= 2 for k in resent_keys)
    # Every second copy is counted: its batch was in flight, or its request was journaled but never
    # answered (the client sent it again).
    assert report["extra_copies"] <= replayed["in_flight"] + report["unacknowledged"], report
    assert set(copies) == set(baseline), "no span lost, none invented"
    # The flags on replayed traces are those an uninterrupted collector gives.
    assert flags_by_span(sink) == baseline
    # Segments go once all in them is delivered; what remains is the segment being written.
    assert health["gauges"]["journal_pending_requests"] == 0
    assert report["journal_bytes_after"] < 16 * 1024 * 1024


# --------------------------------------------------------------------------- SIGTERM


SIGTERM_OVERRIDES: dict[str, Any] = {
    "decision.straggler_delay_ms": 50,
    "exporter.timeout_seconds": 2,
    "exporter.drain_timeout_seconds": 1,
}


def stopped_line(log: str) -> dict[str, int]:
    """The numbers of the collector's last log line."""
    line = next(ln for ln in log.splitlines() if "agentwatch-collector stopped:" in ln)
    match = re.search(
        r"stopped: (\d+) spans received, (\d+) forwarded, (\d+) dropped, (\d+) kept in the journal "
        r"for the next start \((\d+) of them attempted",
        line,
    )
    assert match, line
    names = ("received", "forwarded", "dropped", "kept", "kept_in_flight")
    return dict(zip(names, map(int, match.groups()), strict=True))


def send_then_sigterm(aw: Any, requests: list[tuple[bytes, list[SpanKey]]], sink: SlowSink) -> None:
    """Export every request (each acknowledged), wait until the sink holds an export, then SIGTERM."""
    channel = grpc.insecure_channel(addr(aw.grpc))
    export = channel.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
    for body, _ in requests:
        export(body, timeout=5)
    channel.close()
    assert sink.started.wait(10), "an export was attempted"
    aw.proc.popen.send_signal(signal.SIGTERM)
    assert aw.proc.popen.wait(30) == 0


@pytest.mark.parametrize("delay", [1.5, 4.0], ids=["answered-after-the-deadline", "timed-out"])
def test_sigterm_with_a_batch_in_flight_counts_it_delivered_or_dropped(
    procs: Callable[..., Proc], tmp_path: Path, delay: float
) -> None:
    """No journal: the downstream holds the export past the 1 s drain deadline; it answers within the
    2 s exporter timeout (delivered) or not (dropped): either way counted, never neither."""
    requests = requests_in_trace_order(agent_runs(8, seed=5))
    total = sum(len(keys) for _, keys in requests)
    sink = SlowSink(delay)
    try:
        aw = start_agentwatch_collector(procs, tmp_path, sink.target, name="aw", **SIGTERM_OVERRIDES)
        send_then_sigterm(aw, requests, sink)
        time.sleep(0.5)  # an abandoned export may still land at the sink
    finally:
        sink.stop()
    numbers = stopped_line(Path(aw.proc.log).read_text())
    report = {**numbers, "at_sink": sink.count()}
    print("SIGTERM in flight", delay, "memory", json.dumps(report))
    assert numbers["received"] == total
    assert numbers["forwarded"] + numbers["dropped"] == total, numbers
    assert numbers["forwarded"] == (total if delay < 2 else 0)
    assert numbers["kept"] == 0, "no journal: nothing is kept"
    assert report["at_sink"] >= numbers["forwarded"]


@pytest.mark.parametrize("downstream", ["down", "answers-after-the-timeout"])
def test_sigterm_with_journal_keeps_what_it_could_not_deliver_for_the_next_start(
    procs: Callable[..., Proc], tmp_path: Path, downstream: str
) -> None:
    """A rolling update while the downstream is down (UNAVAILABLE) or too slow (answers after the
    2 s exporter timeout, past the 1 s drain deadline): what is undelivered at the deadline stays in
    the journal, counted as kept, and the next start delivers it."""
    requests = requests_in_trace_order(agent_runs(8, seed=5))
    total = sum(len(keys) for _, keys in requests)
    sink = SlowSink(4.0 if downstream != "down" else 0.0)
    if downstream == "down":
        sink.permanent = grpc.StatusCode.UNAVAILABLE
    overrides = {**SIGTERM_OVERRIDES, "buffer.journal_dir": str(tmp_path / "journal")}
    try:
        aw = start_agentwatch_collector(procs, tmp_path, sink.target, name="aw", **overrides)
        send_then_sigterm(aw, requests, sink)
        first = stopped_line(Path(aw.proc.log).read_text())
        left = sorted(p.name for p in (tmp_path / "journal").iterdir())
        time.sleep(0.5 if downstream == "down" else 3.0)  # an abandoned export may still land at the sink
        at_sink_before = sink.count()
        sink.permanent, sink.delay = None, 0.0  # the downstream works again
        restarted = restart_agentwatch_collector(
            procs, "aw-restarted", aw.config_path, {"grpc": aw.grpc, "http": aw.http, "health": aw.health}
        )

        def settled() -> bool:
            gauges = restarted.healthz()["gauges"]
            return all(gauges[n] == 0 for n in ("buffer_spans", "queue_batches", "journal_pending_requests"))

        wait_for(settled, 60, "the restarted collector to deliver what was kept")
        health = restarted.healthz()
        restarted.proc.stop()
        assert restarted.proc.popen.returncode == 0
    finally:
        sink.stop()
    second = stopped_line(Path(restarted.proc.log).read_text())
    counters = health["counters"]
    replayed = counters["journal_replayed_spans"]
    copies = Counter((r.span.trace_id.hex(), r.span_id) for r in sink.received())
    keys = [k for _, ks in requests for k in ks]
    report = {
        "spans": total,
        "first": first,
        "at_sink_before_restart": at_sink_before,
        "replayed": replayed,
        "unacknowledged": counters["journal_unacknowledged_spans"],
        "second": second,
        "lost": sum(1 for k in keys if copies[k] == 0),
        "delivered_twice": sum(1 for k in keys if copies[k] == 2),
    }
    print("SIGTERM with journal", downstream, json.dumps(report))
    # First run: every span delivered, dropped or kept, never neither; with the journal, nothing dropped.
    assert first["received"] == total
    assert first["forwarded"] + first["dropped"] + first["kept"] == total, first
    assert first["dropped"] == 0 and first["kept"] > 0, first
    assert any(name.startswith("segment-") for name in left), left
    # Second run: what was kept is replayed, delivered, and the journal is emptied.
    assert replayed["total"] == first["kept"], (replayed, first)
    assert second["forwarded"] == replayed["total"] and second["dropped"] == second["kept"] == 0, second
    assert report["lost"] == 0 and set(copies) == set(keys), "at least once: every span arrives"
    assert all(n <= 2 for n in copies.values())
    # A second copy comes only of a batch being sent at the stop: counted as in flight (kept and replayed).
    assert report["delivered_twice"] <= replayed["in_flight"] + counters["journal_unacknowledged_spans"]
    assert report["delivered_twice"] == at_sink_before - first["forwarded"]
    assert replayed["in_flight"] == first["kept_in_flight"]
    assert counters["journal_unacknowledged_spans"] == 0, "every request was answered"
    assert health["gauges"]["journal_pending_requests"] == 0

