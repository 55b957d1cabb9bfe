"""What the tool gateway adds to one ``@agentwatch.tool`` call.

Three modes in one process, interleaved rounds, best batch of each: the tool
decorated with no gateway key set (the gateway is skipped: one flag check),
with a typical gateway configuration (idempotency for the tool, retries,
breakers, a timeout-free policy), and with a per-tool timeout (the sync tool
then runs in a helper thread). Every call is inside a run, with spans going to
an in-memory exporter, so the figures are what a user's tool call pays.
Run: ``.venv/bin/python benchmarks/tool_gateway.py`` (``--quick`` for fewer rounds).
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import agentwatch

GATEWAY = {
    "tools": {
        "idempotency_required": ["ticket.*"],
        "retries": {"max_attempts": 3, "retryable_status": [429, 503], "backoff_ms": [250]},
        "circuit_breakers": {"enabled": True, "failure_threshold": 5, "window_seconds": 60},
    },
    "validation": {"input": {"strict": True}},
}
TIMEOUT = {"tools": {"timeouts_s": {"default": 10}}}
SCHEMA = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}


@agentwatch.tool("search.read", schema=SCHEMA)
def search(query: str) -> dict[str, Any]:
    return {"hits": [query]}


def _setup(agent: dict[str, Any]) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agentwatch.instrument(tracer_provider=provider, config={"agent": {**agent, "anomaly": {"log_findings": False}}})
    return exporter


def _batch(n: int) -> float:
    with agentwatch.run("bench"):
        start = time.thread_time()  # CPU time of this thread: steadier than wall time on a shared machine
        for i in range(n):
            search(f"q{i}")  # distinct calls: no loop flags
        return (time.thread_time() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds, calls = (3, 100) if args.quick else (8, 200)
    modes: dict[str, Callable[[], Any]] = {
        "no gateway key": lambda: _setup({}),
        "gateway (keys, retries, breaker, strict input)": lambda: _setup(GATEWAY),
        "gateway with a timeout (thread per call)": lambda: _setup(TIMEOUT),
    }
    best = dict.fromkeys(modes, float("inf"))
    for _ in range(rounds):
        for name, setup in modes.items():
            exporter = setup()
            _batch(20)  # warm up
            gc.collect()
            best[name] = min(best[name], _batch(calls))
            exporter.clear()
            agentwatch.uninstrument()
    base = best["no gateway key"]
    print(f"tool call inside a run, best of {rounds} batches of {calls} calls")
    for name, seconds in best.items():
        extra = "" if name == "no gateway key" else f"  (+{(seconds - base) * 1e6:.1f} µs, {seconds / base:.2f}x)"
        print(f"  {name:48s} {seconds * 1e6:8.1f} µs{extra}")


if __name__ == "__main__":
    main()
