"""Load benchmark for agentwatch-collector (loopback only, bounded in count and time).

Three measurements:

1. Throughput: the collector runs in a child process (``python -m agentwatch.collector``)
   and receives pre-encoded OTLP/gRPC requests of realistic agent traces (1 run span +
   8-20 LLM/tool spans, ~12 attributes each, ~10% of runs looping) from sender threads in
   this process; it decides every trace and forwards to an OTLP/gRPC sink in this process.
   Reported: spans per CPU-second of the collector process (utime+stime from /proc, i.e.
   spans/s on one core) for each of several rounds (best and median: the machines are
   noisy), plus wall-clock spans/s.
2. Latency: traces sent at a moderate rate; for each trace, time from the request that
   carried its root until its last span reached the sink, minus ``straggler_delay_ms``.
3. Memory: in this process, a collector (not started) buffers many traces that stay
   pending; bytes held per buffered span from tracemalloc and from the RSS delta.

    .venv/bin/python benchmarks/collector_load.py [--spans 150000] [--rounds 5] [--compression none|gzip]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import tracemalloc
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from agentwatch.collector import Collector, build_collector_config
from agentwatch.collector.otlp import Group, RequestBuilder, RequestView, to_anyvalue

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
MAX_SECONDS = 240  # hard bound on the whole run


# --------------------------------------------------------------------------- workload


def _kv(key: str, value: Any) -> KeyValue:
    kv = KeyValue(key=key)
    to_anyvalue(value, kv.value)
    return kv


def _span(rng: random.Random, parent: bytes, name: str, start: int, attrs: dict[str, Any]) -> Span:
    span = Span(
        trace_id=b"\x00" * 16,  # replaced per trace
        span_id=rng.randbytes(8),
        parent_span_id=parent,
        name=name,
        kind=Span.SpanKind.SPAN_KIND_CLIENT if name.startswith("chat") else Span.SpanKind.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start,
        end_time_unix_nano=start + rng.randint(50_000_000, 900_000_000),
    )
    span.attributes.extend(_kv(k, v) for k, v in attrs.items())
    return span


def template_trace(rng: random.Random) -> list[bytes]:
    """One agent run as serialized spans (children first, run span last: the export order)."""
    t0 = 1_760_000_000_000_000_000 + rng.randint(0, 10**12)
    run_id = rng.randbytes(8)
    customer = f"cust_{rng.randint(100, 999)}"
    n = rng.randint(8, 20)
    looping = rng.random() < 0.1
    children = []
    for step in range(1, n + 1):
        start = t0 + step * 1_000_000_000
        if step % 2:
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
                "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):x}",
                "gen_ai.response.finish_reasons": ["tool_calls"],
                "gen_ai.usage.input_tokens": rng.randint(200, 3000),
                "gen_ai.usage.output_tokens": rng.randint(10, 400),
                "agentwatch.cost_usd": round(rng.random() / 500, 6),
                "agentwatch.step": step,
                "agentwatch.llm.tool_calls": [f"lookup_order:{rng.getrandbits(64):016x}"],
                "server.address": "api.openai.com",
            }
            children.append(_span(rng, run_id, "chat gpt-4o-mini", start, attrs))
        else:
            tool = rng.choice(["lookup_order", "search_kb", "get_customer", "create_ticket"])
            args = "0123456789abcdef" if looping else f"{rng.getrandbits(64):016x}"
            attrs = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "lookup_order" if looping else tool,
                "gen_ai.tool.call.id": f"call_{rng.getrandbits(48):x}",
                "gen_ai.tool.type": "function",
                "agentwatch.tool.args_hash": args,
                "agentwatch.tool.result_hash": f"{rng.getrandbits(64):016x}"
                if not looping
                else "ffff0000ffff0000",
                "agentwatch.tool.side_effect": tool == "create_ticket",
                "agentwatch.step": step,
                "agentwatch.tool.arg_entities": [f"customer:{customer}"],
                "agentwatch.tool.result_entities": [
                    f"customer:{customer}",
                    f"order:ord_{rng.randint(1, 99999)}",
                ],
                "code.function": tool,
                "thread.id": rng.randint(1, 64),
            }
            children.append(_span(rng, run_id, f"execute_tool {attrs['gen_ai.tool.name']}", start, attrs))
    run = Span(
        trace_id=b"\x00" * 16,
        span_id=run_id,
        name="invoke_agent support",
        kind=Span.SpanKind.SPAN_KIND_INTERNAL,
        start_time_unix_nano=t0,
        end_time_unix_nano=t0 + (n + 2) * 1_000_000_000,
    )
    run_attrs = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "support",
        "gen_ai.agent.id": "agent_support_v3",
        "gen_ai.conversation.id": f"conv_{rng.getrandbits(48):x}",
        "agentwatch.run.id": f"run_{rng.getrandbits(64):x}",
        "agentwatch.run.entity.customer": customer,
        "agentwatch.run.stop_reason": "success",
        "agentwatch.run.steps": n,
        "agentwatch.run.llm_calls": (n + 1) // 2,
        "agentwatch.run.tool_calls": n // 2,
        "agentwatch.run.input_tokens": rng.randint(2000, 30000),
        "agentwatch.run.cost_usd": round(rng.random() / 50, 6),
    }
    run.attributes.extend(_kv(k, v) for k, v in run_attrs.items())
    return [s.SerializeToString() for s in [*children, run]]


def _group() -> Group:
    resource = Resource()
    for k, v in {
        "service.name": "support-agent",
        "service.version": "2.4.1",
        "deployment.environment.name": "production",
        "host.name": "agent-7f9c",
        "process.pid": 4242,
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.45.0",
    }.items():
        resource.attributes.append(_kv(k, v))
    scope = InstrumentationScope(name="agentwatch", version="0.1.0")
    return Group(resource.SerializeToString(), "", scope.SerializeToString(), "")


def with_trace_id(raw: bytes, trace_id: bytes) -> bytes:
    assert raw[:2] == b"\n\x10"
    return raw[:2] + trace_id + raw[18:]


class Workload:
    """Agent traces with per-trace random values (ids, hashes, token counts), as real traffic has."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.group = _group()

    def traces(self, count: int) -> list[tuple[bytes, list[bytes]]]:
        out = []
        for _ in range(count):
            tid = self.rng.randbytes(16)
            out.append((tid, [with_trace_id(raw, tid) for raw in template_trace(self.rng)]))
        return out

    def at_least(self, spans: int) -> tuple[list[tuple[bytes, list[bytes]]], int]:
        """Whole traces adding up to at least ``spans`` spans, and how many spans they hold."""
        traces: list[tuple[bytes, list[bytes]]] = []
        total = 0
        while total < spans:
            batch = self.traces(500)
            traces.extend(batch)
            total += sum(len(s) for _, s in batch)
        return traces, total

    def requests(
        self, traces: list[tuple[bytes, list[bytes]]], spans_per_request: int
    ) -> list[tuple[bytes, list[bytes]]]:
        """Requests of about ``spans_per_request`` spans (traces may straddle two requests, as they
        do behind a BatchSpanProcessor); each with the trace ids whose run span it carries."""
        out = []
        builder = RequestBuilder()
        roots: list[bytes] = []
        for tid, spans in traces:
            for i, raw in enumerate(spans):
                builder.add(self.group, raw)
                if i == len(spans) - 1:
                    roots.append(tid)
                if builder.spans >= spans_per_request:
                    out.append((builder.build(), roots))
                    builder, roots = RequestBuilder(), []
        if builder.spans:
            out.append((builder.build(), roots))
        return out


# --------------------------------------------------------------------------- sink


class CountingSink:
    """OTLP/gRPC sink: counts spans and, with ``timing``, records when each trace's spans arrived.

    Without timing it does no per-span Python work, so that the load generator
    takes as little of the machine from the collector as it can.
    """

    def __init__(self, timing: bool = False) -> None:
        self.timing = timing
        self.lock = threading.Lock()
        self.spans = 0
        self.last_seen: dict[bytes, float] = {}
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
        )
        handler = grpc.unary_unary_rpc_method_handler(self._export)
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, {"Export": handler}),)
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request: bytes, context: Any) -> bytes:
        now = time.monotonic()
        count = 0
        seen = {}
        for rs in RequestView.FromString(request).resource_spans[:]:
            for ss in rs.scope_spans[:]:
                if self.timing:
                    for raw in ss.spans[:]:
                        count += 1
                        seen[raw[2:18]] = now
                else:
                    count += len(ss.spans)
        with self.lock:
            self.spans += count
            self.last_seen.update(seen)
        return b""

    def wait_for(self, spans: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.spans >= spans:
                    return True
            time.sleep(0.01)
        return False


# --------------------------------------------------------------------------- collector process


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class CollectorProcess:
    def __init__(self, sink_port: int, straggler_ms: int, compression: str) -> None:
        self.dir = tempfile.TemporaryDirectory()
        config = os.path.join(self.dir.name, "collector.yaml")
        with open(config, "w") as f:
            f.write(
                textwrap.dedent(f"""
                receivers:
                  grpc: {{endpoint: "127.0.0.1:0", max_message_bytes: 16777216}}
                exporter: {{endpoint: "127.0.0.1:{sink_port}", compression: {compression}}}
                decision: {{straggler_delay_ms: {straggler_ms}}}
                health: {{endpoint: "127.0.0.1:0"}}
                detection: {{anomaly: {{log_findings: false}}}}
            """)
            )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentwatch.collector", "--config", config],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.port = 0
        deadline = time.monotonic() + 60
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            match = re.search(r"grpc=127\.0\.0\.1:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                break
        if not self.port:
            self.proc.kill()
            raise RuntimeError("the collector did not start")
        stderr = self.proc.stderr

        def discard() -> None:
            for _ in stderr:
                pass

        threading.Thread(target=discard, daemon=True).start()

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def rss(self) -> int:
        return _rss_bytes(self.proc.pid)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.dir.cleanup()


def _send_all(port: int, requests: list[bytes], threads: int) -> float:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1)])
    call = channel.unary_unary(EXPORT)
    index = iter(range(len(requests)))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(index, None)
            if i is None:
                return
            call(requests[i], timeout=30)

    started = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=MAX_SECONDS)
    channel.close()
    return time.monotonic() - started


# --------------------------------------------------------------------------- phases


def throughput(workload: Workload, spans_target: int, compression: str, rounds: int) -> dict[str, Any]:
    """``rounds`` bursts of fresh traces through one collector; spans per CPU-second of each.

    The machines these run on are noisy (other tenants): the best round is the
    closest to the collector's own cost, the median says what a typical round saw.
    """
    sink = CountingSink()
    collector = CollectorProcess(sink.port, straggler_ms=200, compression=compression)
    try:
        # warm-up (imports, code paths, gRPC connections)
        warm_traces = workload.traces(200)
        _send_all(collector.port, [r for r, _ in workload.requests(warm_traces, 512)], 2)
        sink.wait_for(sum(len(s) for _, s in warm_traces), 30)
        time.sleep(0.5)

        per_round: list[float] = []
        walls: list[float] = []
        total = traces_count = 0
        for _ in range(rounds):
            traces, spans = workload.at_least(spans_target)
            requests = [r for r, _ in workload.requests(traces, 512)]
            base_spans = sink.spans
            cpu0 = collector.cpu()
            t0 = time.monotonic()
            _send_all(collector.port, requests, 2)
            ok = sink.wait_for(base_spans + spans, 120)
            wall = time.monotonic() - t0
            cpu = collector.cpu() - cpu0
            if not ok:
                raise RuntimeError(f"only {sink.spans - base_spans} of {spans} spans arrived")
            per_round.append(spans / cpu)
            # the straggler delay is idle time at the end of the round: take it out of the wall time
            walls.append(spans / max(1e-9, wall - 0.2))
            total += spans
            traces_count += len(traces)
            time.sleep(0.5)  # let the last traces' verdicts settle before the next round
        return {
            "spans": total,
            "traces": traces_count,
            "rounds": per_round,
            "best": max(per_round),
            "median": statistics.median(per_round),
            "wall_spans_per_s": max(walls),
            "collector_rss_mb": collector.rss() / 1e6,
        }
    finally:
        collector.stop()
        sink.server.stop(0)


def latency(workload: Workload, traces_count: int, rate: float, straggler_ms: int) -> dict[str, float]:
    sink = CountingSink(timing=True)
    collector = CollectorProcess(sink.port, straggler_ms=straggler_ms, compression="gzip")
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{collector.port}")
        call = channel.unary_unary(EXPORT)
        call(workload.requests(workload.traces(20), 1000)[0][0], timeout=30)  # warm-up
        sent: dict[bytes, float] = {}
        expected = 0
        traces = workload.traces(traces_count)
        start = time.monotonic()
        for i, (tid, spans) in enumerate(traces):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            body = workload.requests([(tid, spans)], 10_000)[0][0]
            sent[tid] = time.monotonic()
            call(body, timeout=30)
            expected += len(spans)
        sink.wait_for(expected + 1, 60)  # +1: warm-up spans arrive too; wait_for is >=
        time.sleep(straggler_ms / 1000 + 0.3)
        added = sorted(
            (sink.last_seen[t] - s) * 1000 - straggler_ms for t, s in sent.items() if t in sink.last_seen
        )
        channel.close()
        return {
            "traces": len(added),
            "rate_traces_per_s": rate,
            "straggler_ms": straggler_ms,
            "added_p50_ms": statistics.median(added),
            "added_p95_ms": added[int(len(added) * 0.95) - 1],
            "added_p99_ms": added[int(len(added) * 0.99) - 1],
            "added_max_ms": added[-1],
        }
    finally:
        collector.stop()
        sink.server.stop(0)


def memory(workload: Workload, spans_target: int) -> dict[str, float]:
    config = build_collector_config(
        {
            "receivers": {"grpc": {"endpoint": "127.0.0.1:0"}},
            "exporter": {"endpoint": "127.0.0.1:9"},
            "decision": {
                "straggler_delay_ms": 3_600_000,
                "hard_timeout_seconds": 3600,
                "idle_timeout_seconds": 3600,
            },
            "limits": {"max_traces": 10**7, "max_spans": 10**8, "max_bytes": 2**40},
        },
        env={},
    )
    traces, total = workload.at_least(spans_target)
    requests = [r for r, _ in workload.requests(traces, 512)]
    wire_bytes = sum(len(r) for r in requests)

    def fill(measure: str) -> float:
        collector = Collector(config)  # not started: intake + buffer only, nothing decided
        gc.collect()
        if measure == "tracemalloc":
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
        else:
            before = _rss_bytes(os.getpid())
        for body in requests:
            collector.intake.submit(body, "bench")
        assert collector.buffer.spans == total
        gc.collect()
        if measure == "tracemalloc":
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
        else:
            held = _rss_bytes(os.getpid()) - before
        del collector
        gc.collect()
        return held / total

    per_span_rss = fill("rss")
    per_span_traced = fill("tracemalloc")
    return {
        "spans": total,
        "wire_bytes_per_span": wire_bytes / total,
        "held_bytes_per_span_tracemalloc": per_span_traced,
        "held_bytes_per_span_rss": per_span_rss,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spans", type=int, default=150_000, help="spans per throughput round")
    parser.add_argument("--rounds", type=int, default=5, help="throughput rounds")
    parser.add_argument("--compression", choices=["gzip", "none"], default="none", help="collector -> sink")
    parser.add_argument("--latency-traces", type=int, default=600)
    parser.add_argument("--latency-rate", type=float, default=150.0, help="traces per second")
    parser.add_argument("--straggler-ms", type=int, default=200)
    parser.add_argument("--memory-spans", type=int, default=300_000)
    args = parser.parse_args()
    signal.alarm(MAX_SECONDS)  # bounded in time, whatever happens

    workload = Workload()
    sample = workload.traces(500)
    print(
        f"workload: {statistics.mean(len(s) for _, s in sample):.1f} spans per trace, "
        f"{statistics.mean(len(r) for _, s in sample for r in s):.0f} bytes per span, "
        f"{statistics.mean(len(Span.FromString(r).attributes) for _, s in sample for r in s):.1f} "
        "attributes per span"
    )
    result = throughput(workload, args.spans, args.compression, args.rounds)
    print(
        f"throughput ({args.compression} forwarding): {result['spans']} spans / {result['traces']} traces "
        f"in {args.rounds} rounds; spans/s per core (spans / collector CPU-second): "
        f"best {result['best']:,.0f}, median {result['median']:,.0f} "
        f"(rounds: {', '.join(f'{r:,.0f}' for r in result['rounds'])}); "
        f"best wall {result['wall_spans_per_s']:,.0f} spans/s; collector RSS {result['collector_rss_mb']:.0f} MB"
    )
    lat = latency(workload, args.latency_traces, args.latency_rate, args.straggler_ms)
    print(
        f"latency: {lat['traces']} traces at {lat['rate_traces_per_s']:.0f}/s, "
        f"straggler {lat['straggler_ms']} ms; "
        f"added p50 {lat['added_p50_ms']:.1f} ms, p95 {lat['added_p95_ms']:.1f} ms, "
        f"p99 {lat['added_p99_ms']:.1f} ms, max {lat['added_max_ms']:.1f} ms"
    )
    mem = memory(workload, args.memory_spans)
    print(
        f"memory: {mem['spans']} buffered spans ({mem['wire_bytes_per_span']:.0f} wire bytes each): "
        f"{mem['held_bytes_per_span_tracemalloc']:.0f} B/span (tracemalloc), "
        f"{mem['held_bytes_per_span_rss']:.0f} B/span (RSS delta)"
    )


if __name__ == "__main__":
    main()
