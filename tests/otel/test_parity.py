"""One record path: every adapter gives the same spans the same flags, severities and run summaries.

The same spans go through the four ways agentwatch runs its detectors:
``AnomalyProcessor`` (live, in the SDK), ``AnomalyExporter`` (at export), the
collector (OTLP bytes through its intake, decider and forwarder, in process)
and ``agentwatch analyze`` (on the OTLP file the SDK's own OTLP encoder
writes). Inputs, from ``benchmarks/quality/otel_spans.py``:

* τ-bench airline runs as a foreign GenAI instrumentation with content capture
  writes them: every entity id must be read out of message content, which the
  collector and ``analyze`` once skipped (different ENTITY_* flags);
* Who&When CaptainAgent group chats, the same way;
* the labelled scenario suite, as agentwatch's own instrumentation writes it.

Real datasets are subsampled deterministically (every Nth run) to keep the
test near 15 s (all 200 + 126 runs agree too: set TAU_EVERY = WHO_EVERY = 1).
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch import semconv as sc
from agentwatch.cli import main
from agentwatch.collector import Collector, build_collector_config
from agentwatch.collector.forwarder import SendResult
from agentwatch.collector.otlp import decode_attributes
from agentwatch.otel.exporter import AnomalyExporter
from agentwatch.otel.processor import AnomalyProcessor

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))

import otel_spans  # noqa: E402
import scenarios  # noqa: E402
import shared_data  # noqa: E402
import tau_bench  # noqa: E402

TAU_BENCH = shared_data.TAU_BENCH_AIRLINE
WHO_AND_WHEN = shared_data.WHO_AND_WHEN_LOGS
TAU_EVERY = 4  # 50 of the 200 runs (every 8th again under the airline configuration)
WHO_EVERY = 4  # 32 of the 126 logs

Outcome = dict[str, tuple[Any, ...]]  # span id (hex) -> (flags, severity, run summary)


def _outcome(span_id: str, attrs: Mapping[str, Any], out: Outcome) -> None:
    flags = attrs.get(sc.ANOMALY_FLAGS)
    run: tuple[Any, ...] | None = None
    if sc.RUN_FAILURE_MODE in attrs:
        run = (
            tuple(sorted(attrs.get(sc.RUN_ANOMALY_FLAGS) or ())),
            attrs.get(sc.RUN_ANOMALY_COUNT),
            attrs.get(sc.RUN_FAILURE_MODE),
            attrs.get(sc.RUN_FAULT_ORIGIN_SPAN_ID),
        )
    if flags or run is not None:
        out[span_id] = (tuple(sorted(flags or ())), attrs.get(sc.ANOMALY_SEVERITY), run)


def _sdk_outcome(spans: Iterable[ReadableSpan]) -> Outcome:
    out: Outcome = {}
    for span in spans:
        assert span.context is not None
        _outcome(format(span.context.span_id, "016x"), span.attributes or {}, out)
    return out


def _provider() -> tuple[TracerProvider, otel_spans.FixedIds]:
    ids = otel_spans.FixedIds()
    return TracerProvider(id_generator=ids), ids


# ----------------------------------------------------------------------------- the four adapters


def via_processor(specs: Sequence[otel_spans.SpanSpec], config: Mapping[str, Any]) -> Outcome:
    tagged = InMemorySpanExporter()
    provider, ids = _provider()
    provider.add_span_processor(AnomalyProcessor(SimpleSpanProcessor(tagged), config=dict(config)))
    otel_spans.emit(specs, provider, ids)
    return _sdk_outcome(tagged.get_finished_spans())


def via_exporter(
    specs: Sequence[otel_spans.SpanSpec], config: Mapping[str, Any]
) -> tuple[Outcome, list[ReadableSpan]]:
    """The exporter's outcome, and the untagged spans (what the OTLP exporter would send)."""
    raw, tagged = InMemorySpanExporter(), InMemorySpanExporter()
    exporter = AnomalyExporter(tagged, config=dict(config))
    provider, ids = _provider()
    provider.add_span_processor(SimpleSpanProcessor(raw))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel_spans.emit(specs, provider, ids)
    exporter.force_flush()
    return _sdk_outcome(tagged.get_finished_spans()), list(raw.get_finished_spans())


class _Capture:
    """The collector's downstream: keeps what it would send."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []

    def send(self, payload: bytes) -> SendResult:
        self.payloads.append(payload)
        return SendResult(True)

    def close(self) -> None:
        pass


def via_collector(requests: Sequence[bytes], config: Mapping[str, Any]) -> Outcome:
    sink = _Capture()
    settings = {"exporter": {"endpoint": "127.0.0.1:4317"}, "detection": dict(config)}  # never dialled
    collector = Collector(build_collector_config(settings, env={}), sender=sink)
    collector.forwarder.start()
    for body in requests:
        collector.intake.submit(body, "http")
        collector.decider.process(collector.buffer.pop_all())
    collector.forwarder.drain(time.monotonic() + 30)
    out: Outcome = {}
    for payload in sink.payloads:
        for rs in ExportTraceServiceRequest.FromString(payload).resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    attrs = decode_attributes(kv.SerializeToString() for kv in span.attributes)
                    _outcome(span.span_id.hex(), attrs, out)
    return out


def via_analyze(path: Path, config: Mapping[str, Any], capsys: pytest.CaptureFixture[str]) -> Outcome:
    config_file = path.with_suffix(".yaml")
    config_file.write_text(yaml.safe_dump({"agent": dict(config.get("agent", {}))}))
    capsys.readouterr()
    assert main(["analyze", str(path), "--json", "--config", str(config_file)]) == 0
    report = json.loads(capsys.readouterr().out)
    out: Outcome = {}
    flagged = {row["span_id"]: row for row in report["flagged_spans"]}
    runs = {row["span_id"]: row for row in report["runs"]}
    for span_id in flagged.keys() | runs.keys():
        row, run = flagged.get(span_id), runs.get(span_id)
        out[span_id] = (
            tuple(sorted(row["flags"])) if row else (),
            row["severity"] if row else None,
            None
            if run is None
            else (tuple(sorted(run["flags"])), run["anomaly_count"], run["failure_mode"], run["fault_origin_span_id"]),
        )
    return out


# ----------------------------------------------------------------------------- inputs


def _tau_bench_specs(every: int) -> list[otel_spans.SpanSpec]:
    raw_runs = json.loads(TAU_BENCH.read_text())
    specs: list[otel_spans.SpanSpec] = []
    for index in range(0, len(raw_runs), every):
        specs.extend(
            otel_spans.tau_bench_specs(raw_runs[index], index, tau_bench.AIRLINE_TOOLS, tau_bench.WRITE_TOOLS)
        )
    return specs


def _who_and_when_specs() -> list[otel_spans.SpanSpec]:
    files = sorted(WHO_AND_WHEN.glob("*.json"), key=lambda p: int(p.stem))
    specs: list[otel_spans.SpanSpec] = []
    for index in range(0, len(files), WHO_EVERY):
        specs.extend(otel_spans.who_and_when_specs(json.loads(files[index].read_text()), index))
    return specs


def _scenario_cases() -> list[tuple[str, list[otel_spans.SpanSpec], dict[str, Any]]]:
    """Scenarios grouped by configuration (each group runs through one set of adapters)."""
    groups: dict[str, tuple[list[otel_spans.SpanSpec], dict[str, Any]]] = {}
    for index, make in enumerate(scenarios.SCENARIOS):
        scenario = make()
        builder_config = scenario.settings
        key = json.dumps(builder_config, sort_keys=True)
        specs, _ = groups.setdefault(key, ([], builder_config))
        specs.extend(otel_spans.scenario_specs(scenario.records, index + 1))
    return [(f"scenarios{n}", specs, config) for n, (specs, config) in enumerate(groups.values())]


def _quiet(config: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration without a log line per finding (thousands here)."""
    agent = dict(config.get("agent") or {})
    agent["anomaly"] = {**(agent.get("anomaly") or {}), "log_findings": False}
    return {**config, "agent": agent}


def _cases() -> list[tuple[str, list[otel_spans.SpanSpec], dict[str, Any]]]:
    cases = _scenario_cases()
    cases.append(("tau-bench", _tau_bench_specs(TAU_EVERY), {}))
    cases.append(("tau-bench-airline-config", _tau_bench_specs(2 * TAU_EVERY), tau_bench.AIRLINE))
    cases.append(("who-and-when", _who_and_when_specs(), {}))
    return [(name, specs, _quiet(config)) for name, specs, config in cases]


def _requests(spans: Sequence[ReadableSpan]) -> list[bytes]:
    """One OTLP request per trace, encoded by the OTLP exporter's own encoder."""
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        assert span.context is not None
        by_trace[span.context.trace_id].append(span)
    return [encode_spans(group).SerializeToString() for group in by_trace.values()]


def _differences(name: str, outcomes: Mapping[str, Outcome]) -> list[str]:
    reference_name, reference = next(iter(outcomes.items()))
    problems = []
    for adapter, outcome in outcomes.items():
        for span_id in sorted(reference.keys() | outcome.keys()):
            if reference.get(span_id) != outcome.get(span_id):
                problems.append(
                    f"{name}: span {span_id}: {reference_name} {reference.get(span_id)} != "
                    f"{adapter} {outcome.get(span_id)}"
                )
    return problems


def _all_adapters(
    name: str, specs: Sequence[otel_spans.SpanSpec], config: Mapping[str, Any], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, Outcome]:  # fmt: skip
    processor = via_processor(specs, config)
    exporter, raw_spans = via_exporter(specs, config)
    collector = via_collector(_requests(raw_spans), config)
    path = tmp_path / f"{name}.pb"
    path.write_bytes(encode_spans(raw_spans).SerializeToString())
    analyze = via_analyze(path, config, capsys)
    return {"processor": processor, "exporter": exporter, "collector": collector, "analyze": analyze}


@pytest.mark.skipif(not TAU_BENCH.exists() or not WHO_AND_WHEN.exists(), reason="shared datasets not present")
@pytest.mark.timeout(600)  # ~15 s alone; a loaded shared machine has taken 100 s
def test_every_adapter_flags_the_same_spans_the_same_way(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    problems: list[str] = []
    flagged_total = 0
    for name, specs, config in _cases():
        outcomes = _all_adapters(name, specs, config, tmp_path, capsys)
        problems.extend(_differences(name, outcomes))
        flagged_total += sum(1 for flags, _, _ in outcomes["processor"].values() if flags)
    assert flagged_total > 50  # the inputs exercise the detectors (a parity of silence proves nothing)
    assert not problems, f"{len(problems)} disagreements:\n" + "\n".join(problems[:40])


def test_a_run_spans_own_input_grounds_ids_in_every_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A foreign run span with captured input and tool calls, no LLM span: the input is the only basis."""
    second = otel_spans.SECOND
    t0 = otel_spans.T0
    trace_id = 0xAB << 64 | 1

    def tool(n: int, order: str) -> otel_spans.SpanSpec:
        return otel_spans.SpanSpec(
            trace_id, n, 1, "execute_tool get_order", t0 + n * second, t0 + n * second + second // 2,
            {sc.GEN_AI_OPERATION_NAME: sc.OP_EXECUTE_TOOL, sc.GEN_AI_TOOL_NAME: "get_order",
             sc.GEN_AI_TOOL_CALL_ARGUMENTS: json.dumps({"order_id": order}),
             sc.GEN_AI_TOOL_CALL_RESULT: json.dumps({"order_id": order, "status": "shipped"})},
        )  # fmt: skip

    specs = [
        otel_spans.SpanSpec(
            trace_id, 1, None, "invoke_agent support", t0, t0 + 10 * second,
            {sc.OPENINFERENCE_SPAN_KIND: "AGENT", sc.OI_INPUT_VALUE: "Please refund order ORD-48213"},
        ),
        tool(2, "ORD-48213"),
        tool(3, "ORD-99999"),
    ]
    outcomes = _all_adapters("run-input", specs, _quiet({}), tmp_path, capsys)
    assert not _differences("run-input", outcomes)
    flagged = {span_id: flags for span_id, (flags, _, _) in outcomes["processor"].items() if flags}
    assert flagged == {"0000000000000003": ("ENTITY_HALLUCINATION",)}


def test_an_engine_passed_in_brings_its_entity_patterns() -> None:
    """The adapters extract ids from content with the engine's configuration, not the default one."""
    from agentwatch.config import load_config
    from agentwatch.engine import Engine
    from agentwatch.otel.wiring import detection

    config = load_config({"agent": {"entities": {"patterns": [{"type": "flight", "regex": r"\bHAT\d{3}\b"}]}}})
    passed_in = detection(None, Engine(config), None, None)
    assert ("flight", "HAT123") in passed_in.extractor.extract("flight HAT123")
    processor = AnomalyProcessor(SimpleSpanProcessor(InMemorySpanExporter()), engine=Engine(config))
    exporter = AnomalyExporter(InMemorySpanExporter(), engine=Engine(config))
    for adapter in (processor, exporter):
        assert ("flight", "HAT123") in adapter._extractor.extract("flight HAT123")
