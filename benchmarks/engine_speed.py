"""How much ``Engine.process`` costs per span, and what a very long run holds in memory.

The in-process span processor has about 5 µs per span in total; the engine's
share for a common LLM or tool span with no findings should stay near 2 µs.
Run: ``.venv/bin/python benchmarks/engine_speed.py`` (add ``--quick`` for a
smaller run). Records are built before timing: the figures are the engine's
cost only, not the adapter's.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence

from agentwatch.budget import Budget
from agentwatch.config import load_config
from agentwatch.engine import Engine, Kind, SpanRecord
from agentwatch.hashing import args_hash, value_hash

CONFIG = load_config({}, env={})
REPEATS = 5


def _tool(i: int, run: str, **extra: object) -> SpanRecord:
    return SpanRecord(
        "t1",
        f"tool{i}",
        run,
        Kind.TOOL,
        start_ns=i * 1000,
        end_ns=i * 1000 + 500,
        run_key=run,
        tool_name="search.read",
        args_hash=f"{i:016x}",
        result_hash=f"{i + 7:016x}",
        **extra,  # type: ignore[arg-type]
    )


def _llm(i: int, run: str, **extra: object) -> SpanRecord:
    return SpanRecord(
        "t1",
        f"llm{i}",
        run,
        Kind.LLM,
        start_ns=i * 1000,
        end_ns=i * 1000 + 500,
        run_key=run,
        model="gpt-4o",
        input_tokens=1200 + i % 50,
        output_tokens=200,
        cost_usd=0.004,
        system_hash="a1b2c3d4e5f60718",
        user_hash="0f1e2d3c4b5a6978",
        requested_calls=(("search.read", f"{i + 1:016x}"),),
        **extra,  # type: ignore[arg-type]
    )


def per_record(
    name: str, make: Callable[[int, str], SpanRecord], n: int, *, declare: bool = False, budget: bool = False
) -> tuple[str, float, int]:
    best = float("inf")
    found = 0
    for _ in range(REPEATS):  # best of several: the machine is shared, noise only ever adds time
        engine = Engine(CONFIG)
        engine.open_run(
            "r",
            entities={"customer": "cust_1"} if declare else None,
            budget=Budget(max_steps=10**9, max_seconds=10**6, max_usd=10**6) if budget else None,
        )
        records = [make(i, "r") for i in range(n)]
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            found = 0
            process = engine.process
            for rec in records:
                found += len(process(rec))
            best = min(best, time.perf_counter_ns() - t0)
        finally:
            gc.enable()
    return name, best / n / 1000, found


def begin_call_cost(n: int) -> tuple[str, float, int]:
    best = float("inf")
    hashes = [f"{i:016x}" for i in range(n)]
    for _ in range(REPEATS):
        engine = Engine(CONFIG)
        engine.open_run("r", budget=Budget(max_steps=10**9, max_tool_calls=10**9, enforce=True))
        begin = engine.begin_call
        t0 = time.perf_counter_ns()
        for i, h in enumerate(hashes):
            begin("r", Kind.TOOL, tool_name="search.read", args_hash=h, now_ns=i)
        best = min(best, time.perf_counter_ns() - t0)
    return "begin_call (tool, enforced budget)", best / n / 1000, 0


def _long_run_records(spans: int, entities: int, raw: bool) -> Iterator[SpanRecord]:
    """Half LLM, half tool spans; each tool call reads an order id the previous result announced."""
    for i in range(spans // 2):
        order = f"ord_{i % entities:06d}"
        nxt = f"ord_{(i + 1) % entities:06d}"
        args = {"order_id": order}
        result = {"order_id": order, "customer_id": "cust_1", "next": nxt, "page": i}
        ah = args_hash(args)
        yield SpanRecord(
            "t",
            f"l{i}",
            "big",
            Kind.LLM,
            start_ns=i * 2000,
            end_ns=i * 2000 + 900,
            run_key="big",
            input_tokens=1000,
            output_tokens=100,
            requested_calls=(("get_order", ah),),
            requested_entities=(("order", order),),
            input_entities=(("order", order),) if i == 0 else (),
        )
        yield SpanRecord(
            "t",
            f"k{i}",
            "big",
            Kind.TOOL,
            start_ns=i * 2000 + 1000,
            end_ns=i * 2000 + 1900,
            run_key="big",
            tool_name="get_order",
            args_hash=ah,
            result_hash=value_hash(result),
            arguments=args if raw else None,
            result=result if raw else None,
            arg_entities=None if raw else (("order", order),),
            result_entities=None if raw else (("order", order), ("customer", "cust_1"), ("order", nxt)),
        )


def long_run(spans: int, entities: int, raw: bool) -> dict[str, float]:
    """Time with records built beforehand; memory (tracemalloc) with records built on the fly."""
    records = list(_long_run_records(spans, entities, raw))
    engine = Engine(CONFIG)
    engine.open_run("big", entities={"customer": "cust_1"}, start_ns=1)
    gc.collect()
    gc.freeze()  # the prebuilt records would not exist in a real process: keep them out of GC passes
    t0 = time.perf_counter()
    found = 0
    for rec in records:
        found += len(engine.process(rec))
    elapsed = time.perf_counter() - t0
    gc.unfreeze()
    del records, engine
    gc.collect()

    tracemalloc.start()
    engine = Engine(CONFIG)
    engine.open_run("big", entities={"customer": "cust_1"}, start_ns=1)
    for rec in _long_run_records(spans, entities, raw):
        engine.process(rec)
    held, peak = tracemalloc.get_traced_memory()
    summary = engine.close_run("big", stop_reason="success", end_ns=spans * 1000)
    tracemalloc.stop()
    return {
        "seconds": elapsed,
        "us_per_span": elapsed / spans * 1e6,
        "held_mib": held / 2**20,
        "peak_mib": peak / 2**20,
        "findings": found,
        "flags": len(summary.flags) if summary else -1,
    }


def many_runs(runs: int, calls: int) -> tuple[float, float]:
    """Memory held by ``runs`` open runs of ``calls`` tool calls each (MiB total, KiB per run)."""
    tracemalloc.start()
    engine = Engine(CONFIG)
    before, _ = tracemalloc.get_traced_memory()
    for r in range(runs):
        key = f"run{r}"
        engine.open_run(key, entities={"customer": f"cust_{r}"}, start_ns=1)
        for i in range(calls):
            engine.process(_tool(i, key))
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (held - before) / 2**20, (held - before) / runs / 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    args = parser.parse_args(argv)
    n = 20_000 if args.quick else 100_000
    cases = [
        per_record("tool, content off (hashes only)", _tool, n),
        per_record(
            "tool, content off, adapter entities ()",
            lambda i, r: _tool(i, r, arg_entities=(), result_entities=()),
            n,
        ),
        per_record("llm, content off (tokens, hashes, 1 request)", _llm, n),
        per_record("llm + budget (steps/seconds/usd)", _llm, n, budget=True),
        per_record(
            "tool, inline args+result, run with subject",
            lambda i, r: _tool(i, r, arguments={"q": f"query {i}"}, result={"hits": [f"doc {i}"]}),
            n,
            declare=True,
        ),
        per_record(
            "tool, inline args + JSON Schema",
            lambda i, r: _tool(
                i,
                r,
                arguments={"q": f"query {i}", "limit": 5},
                tool_schema={
                    "type": "object",
                    "properties": {"q": {"type": "string"}, "limit": {"type": "integer"}},
                    "required": ["q"],
                },
            ),
            n // 5,
        ),
        begin_call_cost(n),
    ]
    print("| case | µs / record | findings |")
    print("|---|---:|---:|")
    for name, us, found in cases:
        print(f"| {name} | {us:.2f} | {found} |")
    spans = 20_000 if args.quick else 100_000
    print()
    print(
        f"| long run: {spans:,} spans, 10,000 distinct entities | seconds | µs / span | state held MiB "
        f"| peak MiB | findings |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for raw in (False, True):
        res = long_run(spans, 10_000, raw)
        label = "raw arguments/results (engine extracts)" if raw else "adapter-supplied entities"
        print(
            f"| {label} | {res['seconds']:.2f} | {res['us_per_span']:.2f} | {res['held_mib']:.1f} | "
            f"{res['peak_mib']:.1f} | {int(res['findings'])} |"
        )
    mib, kib = many_runs(10_000, 5)
    print(f"\n10,000 open runs of 5 tool calls each: {mib:.1f} MiB held ({kib:.1f} KiB per run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
