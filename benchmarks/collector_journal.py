"""What the on-disk journal (``buffer.journal_dir``) costs agentwatch-collector: CPU and ack latency.

Three collectors run side by side as child processes, one per mode: no journal,
``journal_sync: write`` (survives a process kill) and ``journal_sync: fsync``
(survives a machine crash); all forward to one OTLP/gRPC sink in this process.
Rounds alternate between the modes (off, write, fsync, off, ...) so that each
mode sees the same machine conditions, and the ratios are taken within this run.

Per mode:

- CPU per span: spans / collector CPU-second (utime+stime from /proc: spans/s on
  one core), the median over rounds. The collector's CPU, not wall time, so other
  load on the machine does not enter it.
- Ack latency: the wall time of each Export call as the client sees it (request
  written to the journal, then acknowledged), with one sender (no queueing) and
  with ``--senders`` concurrent senders (where fsync's group commit shares one
  flush among requests). Wall-clock by nature: p50 and p99 over every request.

    .venv/bin/python benchmarks/collector_journal.py [--rounds 6] [--requests 40] [--spans-per-request 512]
    .venv/bin/python benchmarks/collector_journal.py --alone   # the journal's own CPU only (quick)
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from collector_load import EXPORT, CountingSink, Workload, _cpu_seconds

MAX_SECONDS = 600
MODES = ("off", "write", "fsync")


class Collector:
    """``python -m agentwatch.collector`` with or without the journal; the gRPC port it bound."""

    def __init__(self, sink_port: int, mode: str, root: str) -> None:
        journal = ""
        if mode != "off":
            journal = f'buffer: {{journal_dir: "{root}/journal-{mode}", journal_sync: {mode}}}'
        config = os.path.join(root, f"collector-{mode}.yaml")
        with open(config, "w") as f:
            f.write(
                textwrap.dedent(f"""
                receivers:
                  grpc: {{endpoint: "127.0.0.1:0", max_message_bytes: 16777216}}
                exporter: {{endpoint: "127.0.0.1:{sink_port}"}}
                decision: {{straggler_delay_ms: 200}}
                health: {{endpoint: "127.0.0.1:0"}}
                detection: {{anomaly: {{log_findings: false}}}}
                """)
                + journal
                + "\n"
            )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentwatch.collector", "--config", config],
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        assert self.proc.stderr is not None
        self.port = 0
        for line in self.proc.stderr:
            match = re.search(r"grpc=127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            raise RuntimeError(f"the {mode} collector did not start")
        stderr = self.proc.stderr
        threading.Thread(target=lambda: [None for _ in stderr], daemon=True).start()
        self.channel = grpc.insecure_channel(
            f"127.0.0.1:{self.port}", options=[("grpc.max_send_message_length", -1)]
        )
        self.call = self.channel.unary_unary(EXPORT)

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def send(collector: Collector, requests: list[bytes], senders: int) -> list[float]:
    """Send every request (``senders`` threads, each waiting for its ack); each call's seconds."""
    latencies: list[float] = []
    lock = threading.Lock()
    queue = iter(requests)

    def worker() -> None:
        mine = []
        while True:
            with lock:
                body = next(queue, None)
            if body is None:
                break
            t0 = time.perf_counter()
            collector.call(body, timeout=30)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=MAX_SECONDS)
    return latencies


def append_cost(requests: list[bytes], root: str, rounds: int = 5) -> dict[str, float]:
    """The journal alone, in this process: CPU (thread_time) per request for appending, the ack marker
    (written once the answer is handed to the transport) and the done marker, and wall time per request.

    Medians over ``rounds`` passes over ``requests``, the modes alternating."""
    from agentwatch.collector.journal import Journal

    samples: dict[str, list[float]] = {}
    tid = [bytes(16)]
    for round_no in range(rounds):
        for mode in ("write", "fsync"):
            journal = Journal(
                os.path.join(root, f"append-{mode}-{round_no}"), 1 << 34, 16 << 20, fsync=mode == "fsync"
            )
            journal.open()
            list(journal.replay())
            cpu = {"append": 0.0, "ack": 0.0, "done": 0.0}
            wall0 = time.perf_counter()
            for body in requests:
                t0 = time.thread_time()
                seq = journal.append(body, tid)
                t1 = time.thread_time()
                journal.ack(seq)
                t2 = time.thread_time()
                journal.done([(seq, tid[0])])
                t3 = time.thread_time()
                cpu["append"] += t1 - t0
                cpu["ack"] += t2 - t1
                cpu["done"] += t3 - t2
            wall = time.perf_counter() - wall0
            journal.close()
            for op, seconds in cpu.items():
                samples.setdefault(f"{mode}_{op}_cpu_us", []).append(seconds / len(requests) * 1e6)
            samples.setdefault(f"{mode}_wall_us", []).append(wall / len(requests) * 1e6)
    return {key: statistics.median(values) for key, values in samples.items()}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=6, help="measured rounds (at least 1)")
    parser.add_argument("--requests", type=int, default=40, help="requests (at least) per mode per round")
    parser.add_argument("--spans-per-request", type=int, default=512)
    parser.add_argument("--senders", type=int, default=4, help="concurrent senders in the second phase")
    parser.add_argument("--alone", action="store_true", help="measure the journal alone, not the collectors")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    signal.alarm(MAX_SECONDS)

    workload = Workload(seed=7)
    sink = CountingSink()
    root = tempfile.mkdtemp(prefix="agentwatch-journal-bench-")
    fs = subprocess.run(["df", "--output=fstype", root], capture_output=True, text=True).stdout.split()[-1]
    print(
        f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Linux {platform.release()}, journal on {fs} ({root}); Python {platform.python_version()}"
    )
    sample_traces, _ = workload.at_least(100 * args.spans_per_request)
    sample = [body for body, _ in workload.requests(sample_traces, args.spans_per_request)]
    alone = append_cost(sample, root)
    size = statistics.mean(len(b) for b in sample) / 1024
    for mode in ("write", "fsync"):
        total = sum(alone[f"{mode}_{op}_cpu_us"] for op in ("append", "ack", "done"))
        print(
            f"journal alone, {mode} ({len(sample)} requests of {size:.0f} KiB, median of 5 passes): CPU per "
            f"request {total:.1f} us = append {alone[f'{mode}_append_cpu_us']:.1f} + ack marker "
            f"{alone[f'{mode}_ack_cpu_us']:.1f} + done marker {alone[f'{mode}_done_cpu_us']:.1f}; "
            f"wall {alone[f'{mode}_wall_us']:.0f} us per request"
            + (" (one sender: every request waits for its own flush)" if mode == "fsync" else "")
        )
    if args.alone:
        sink.server.stop(0)
        shutil.rmtree(root, ignore_errors=True)
        return
    collectors = {mode: Collector(sink.port, mode, root) for mode in MODES}
    results: dict[str, Any] = {}
    try:
        for phase, senders in (("one sender", 1), (f"{args.senders} senders", args.senders)):
            cpu_rates: dict[str, list[float]] = {m: [] for m in MODES}
            latencies: dict[str, list[float]] = {m: [] for m in MODES}
            for round_no in range(args.rounds + 1):  # round 0 warms up
                for mode in MODES:
                    # whole traces (~7,000 spans per 500): every trace gets its root, none waits idle
                    traces, spans = workload.at_least(args.requests * args.spans_per_request)
                    bodies = [body for body, _ in workload.requests(traces, args.spans_per_request)]
                    collector = collectors[mode]
                    before_sink = sink.spans
                    cpu0 = collector.cpu()
                    took = send(collector, bodies, senders)
                    # the straggler delay passes, traces are decided and forwarded: that CPU counts too
                    if not sink.wait_for(before_sink + spans, 120):
                        raise RuntimeError(f"{mode}: spans did not all arrive")
                    time.sleep(0.4)
                    cpu = collector.cpu() - cpu0
                    if round_no:
                        cpu_rates[mode].append(spans / cpu)
                        latencies[mode].extend(took)
            results[phase] = {
                mode: {
                    "spans_per_cpu_s": statistics.median(cpu_rates[mode]),
                    "p50_ms": pct(latencies[mode], 0.5),
                    "p99_ms": pct(latencies[mode], 0.99),
                    "requests": len(latencies[mode]),
                }
                for mode in MODES
            }
    finally:
        for collector in collectors.values():
            collector.stop()
        sink.server.stop(0)
    journal_bytes = {m: sum(p.stat().st_size for p in Path(root, f"journal-{m}").glob("*.awj")) for m in MODES[1:]}
    shutil.rmtree(root, ignore_errors=True)
    print(
        f"workload: requests of {args.spans_per_request} spans, at least {args.requests} per mode per round, "
        f"{args.rounds} rounds (plus one warm-up); journal left on disk after SIGTERM: {journal_bytes} bytes"
    )
    for phase, by_mode in results.items():
        off = by_mode["off"]
        print(f"{phase}:")
        for mode in MODES:
            r = by_mode[mode]
            print(
                f"  {mode:5s}: {r['spans_per_cpu_s']:9,.0f} spans per CPU-second "
                f"({r['spans_per_cpu_s'] / off['spans_per_cpu_s']:.2f}x of off); "
                f"ack p50 {r['p50_ms']:6.2f} ms ({r['p50_ms'] / off['p50_ms']:.2f}x), "
                f"p99 {r['p99_ms']:6.2f} ms ({r['p99_ms'] / off['p99_ms']:.2f}x); {r['requests']} requests"
            )


if __name__ == "__main__":
    main()
