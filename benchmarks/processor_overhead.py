"""What ``AnomalyProcessor`` adds to every span, in the common case where nothing is found.

One process, two tracer providers built the same way: ``SimpleSpanProcessor``
over an exporter that drops everything, bare and wrapped in
``AnomalyProcessor``. Each batch is a handful of agent runs (one
``invoke_agent`` span, then alternating LLM and tool spans with the attribute
sets agentwatch's instrumentation writes: 10-15 attributes each, some set at
start and some at end, as a real client does). Bare and wrapped batches are
interleaved; the best batch of each is reported, in µs per span, with the
difference and the ratio. A second section times the pieces of ``on_end``
(normalisation, ``Engine.process``) alone, to show where the time goes, and a
third the rare path where a span is flagged and copied.

Run: ``python benchmarks/processor_overhead.py [--spans N] [--rounds R]``.
Target: at most 5 µs added per span in the common case.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Tracer

from agentwatch import semconv as sc
from agentwatch.config import load_config
from agentwatch.engine.engine import Engine
from agentwatch.engine.record import Kind
from agentwatch.hashing import digest
from agentwatch.otel.normalize import build_record, span_attributes
from agentwatch.otel.processor import AnomalyProcessor

CALLS_PER_RUN = 20  # LLM and tool calls alternate: 10 of each, then the run span ends


class DropExporter(SpanExporter):
    """Accepts every span and does nothing: the cost measured is the pipeline's, not I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


_counter = itertools.count()


def _hash(i: int) -> str:
    return digest(str(i))


def one_run(tracer: Tracer, *, looping: bool = False, inline: bool = False) -> int:
    """One agent run as agentwatch's instrumentation records it; returns the spans made.

    ``inline``: the spans carry ``agentwatch.anomaly.evaluated=true``, as they do when
    agentwatch's own instrumentation (whose live guard runs the same engine) made them.
    """
    done = {sc.ANOMALY_EVALUATED: True} if inline else {}
    run_no = next(_counter)
    with tracer.start_as_current_span(
        "invoke_agent support",
        attributes={
            sc.GEN_AI_OPERATION_NAME: sc.OP_INVOKE_AGENT,
            sc.GEN_AI_AGENT_NAME: "support",
            sc.RUN_ID: f"run-{run_no}",
            sc.RUN_ENTITY_PREFIX + "customer": "cust_789",
        },
    ) as run_span:
        for call in range(CALLS_PER_RUN // 2):
            step = call * 2 + 1
            unique = run_no * 1000 + call
            args = _hash(0) if looping else _hash(unique)
            with tracer.start_as_current_span(
                "chat gpt-4o-mini",
                kind=SpanKind.CLIENT,
                attributes={
                    sc.GEN_AI_OPERATION_NAME: sc.OP_CHAT,
                    sc.GEN_AI_PROVIDER_NAME: "openai",
                    sc.GEN_AI_REQUEST_MODEL: "gpt-4o-mini",
                    sc.SERVER_ADDRESS: "api.openai.com",
                    sc.STEP: step,
                    sc.RUN_ID: f"run-{run_no}",
                    sc.LLM_TOOLS_OFFERED: ("get_order", "refund"),
                    sc.LLM_SYSTEM_HASH: "5555666677778888",
                    sc.LLM_USER_HASH: "9999aaaabbbbcccc",
                },
            ) as llm:
                llm.set_attributes(
                    {
                        sc.GEN_AI_RESPONSE_MODEL: "gpt-4o-mini-2024-07-18",
                        sc.GEN_AI_RESPONSE_ID: f"chatcmpl-{unique}",
                        sc.GEN_AI_RESPONSE_FINISH_REASONS: ("tool_calls",),
                        sc.GEN_AI_USAGE_INPUT_TOKENS: 1200 + call,
                        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 40,
                        sc.COST_USD: 0.0002,
                        sc.LLM_TOOL_CALLS: (f"get_order:{args}",),
                        **done,
                    }
                )
            with tracer.start_as_current_span(
                "execute_tool get_order",
                attributes={
                    sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL,
                    sc.GEN_AI_TOOL_NAME: "get_order",
                    sc.GEN_AI_TOOL_CALL_ID: f"call_{unique}",
                    sc.TOOL_ARGS_HASH: args,
                    sc.TOOL_SIDE_EFFECT: False,
                    sc.STEP: step + 1,
                    sc.RUN_ID: f"run-{run_no}",
                    sc.TOOL_ARG_ENTITIES: ("customer:cust_789",),
                },
            ) as tool:
                tool.set_attributes(
                    {
                        sc.TOOL_RESULT_HASH: _hash(-1) if looping else _hash(-unique - 1),
                        sc.TOOL_RESULT_ENTITIES: ("customer:cust_789",),
                        **done,
                    }
                )
        run_span.set_attributes({sc.RUN_STOP_REASON: "success", **done})
    return CALLS_PER_RUN + 1


def plain_spans(tracer: Tracer, *, looping: bool = False, inline: bool = False) -> int:
    """Ordinary application spans (an HTTP request and its database queries): no agent in sight."""
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER,
                                      attributes={"http.request.method": "GET", "url.path": "/orders",
                                                  "http.response.status_code": 200}):
        for _ in range(CALLS_PER_RUN):
            with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT,
                                              attributes={"db.system.name": "postgresql",
                                                          "db.query.text": "SELECT * FROM orders WHERE id = $1"}):
                pass
    return CALLS_PER_RUN + 1


class NullEngine:
    """The Engine API doing nothing: isolates what the processor itself costs."""

    stats: dict[str, int] = {}

    def open_run(self, run_key: str, **kwargs: object) -> None:
        pass

    def process(self, record: object) -> list:
        return []

    def close_run(self, run_key: str, **kwargs: object) -> None:
        return None


def make_provider(wrapped: bool, engine: object = None) -> tuple[TracerProvider, AnomalyProcessor | None]:
    provider = TracerProvider()
    simple = SimpleSpanProcessor(DropExporter())
    if not wrapped:
        provider.add_span_processor(simple)
        return provider, None
    config = load_config({"agent": {"anomaly": {"log_findings": False}}})
    processor = AnomalyProcessor(simple, config=config, engine=engine)  # type: ignore[arg-type]
    provider.add_span_processor(processor)
    return provider, processor


def time_batch(
    tracer: Tracer, spans: int, *, looping: bool = False, inline: bool = False, make: object = None
) -> float:
    """Seconds per span for one batch of about ``spans`` spans."""
    produce = make or one_run
    made = 0
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        while made < spans:
            made += produce(tracer, looping=looping, inline=inline)  # type: ignore[operator]
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed / made


def pieces(samples: int) -> dict[str, float]:
    """µs per span of the parts of ``on_end``, measured alone on finished spans."""
    provider = TracerProvider()
    collected: list[ReadableSpan] = []

    class Keep(DropExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            collected.extend(spans)
            return SpanExportResult.SUCCESS

    provider.add_span_processor(SimpleSpanProcessor(Keep()))
    tracer = provider.get_tracer("bench")
    while len(collected) < samples:
        one_run(tracer)
    calls = [s for s in collected if not s.name.startswith("invoke_agent")]
    kinds = [Kind.TOOL if s.name.startswith("execute_tool") else Kind.LLM for s in calls]

    def normalise() -> list:
        out = []
        for span, kind in zip(calls, kinds, strict=True):
            ctx = span.get_span_context()
            assert ctx is not None
            out.append(
                build_record(
                    span_attributes(span),
                    kind,
                    trace_id="0" * 32,
                    span_id=format(ctx.span_id, "016x"),
                    parent_id=None,
                    name=span.name,
                    start_ns=span.start_time or 0,
                    end_ns=span.end_time or 0,
                    is_error=False,
                )
            )
        return out

    best_norm = min(_timed(normalise) for _ in range(5))
    records = normalise()
    best_engine = float("inf")
    for _ in range(5):
        engine = Engine(load_config({"agent": {"anomaly": {"log_findings": False}}}))
        for i, record in enumerate(records):
            record.run_key = f"r{i // CALLS_PER_RUN}"
        start = time.perf_counter()
        for record in records:
            engine.process(record)
        best_engine = min(best_engine, time.perf_counter() - start)
    n = len(calls)
    return {"normalise": best_norm / n * 1e6, "engine.process": best_engine / n * 1e6}


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=20_000, help="spans per batch")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved bare/wrapped batch pairs")
    args = parser.parse_args()

    bare_provider, _ = make_provider(False)
    wrapped_provider, processor = make_provider(True)
    null_provider, _ = make_provider(True, NullEngine())
    tracers = {
        "bare": bare_provider.get_tracer("bench"),
        "wrapped": wrapped_provider.get_tracer("bench"),
        "null engine": null_provider.get_tracer("bench"),
    }
    for tracer in tracers.values():  # warm-up: imports, caches, the engine's compiled helpers
        time_batch(tracer, 2_000)
    runs: dict[str, list[float]] = {name: [] for name in tracers}
    for _ in range(args.rounds):
        for name, tracer in tracers.items():
            runs[name].append(time_batch(tracer, args.spans))
    b, w, n = (min(runs[name]) * 1e6 for name in ("bare", "wrapped", "null engine"))
    print(f"spans per batch: {args.spans}, rounds: {args.rounds} (best batch; median in brackets)")
    for name, best in (("bare", b), ("wrapped", w)):
        print(f"  {name:8s} {best:6.2f} µs/span  [{statistics.median(runs[name]) * 1e6:6.2f}]")
    print(f"  added    {w - b:6.2f} µs/span   ratio {w / b:4.2f}x  (agent spans from other instrumentations)")
    print("  of which, in the flow of real spans:")
    print(f"    processor (tracking, normalising, tagging)  {n - b:6.2f} µs/span  (engine replaced by no-ops)")
    print(f"    Engine.open_run/process/close_run           {w - n:6.2f} µs/span")
    assert processor is not None
    stats = processor.stats
    print(f"  (flagged spans: {stats['spans_flagged']}, errors: {stats['errors']}, open: {stats['spans_open']})")

    parts = pieces(5_000)
    print("pieces of on_end, alone (best of 5, LLM and tool spans):")
    for name, value in parts.items():
        print(f"  {name:15s} {value:6.2f} µs/span")

    print("by kind of span (bare vs wrapped, best batch):")
    for label, kwargs in (
        ("agent spans from agentwatch's instrumentation (evaluated inline)", {"inline": True}),
        ("ordinary application spans (HTTP, database)", {"make": plain_spans}),
    ):
        best: dict[str, float] = {}
        for name in ("bare", "wrapped"):
            best[name] = min(time_batch(tracers[name], args.spans, **kwargs) for _ in range(args.rounds)) * 1e6
        print(f"  {label}: {best['bare']:.2f} -> {best['wrapped']:.2f} µs/span, "
              f"added {best['wrapped'] - best['bare']:.2f}")

    flagged = min(time_batch(tracers["wrapped"], args.spans // 4, looping=True) for _ in range(3)) * 1e6
    print(f"every call looping (most spans flagged and copied): {flagged:6.2f} µs/span, +{flagged - b:.2f} µs")


if __name__ == "__main__":
    main()
