"""The ``agentwatch`` command line: check configuration, look up prices, analyse exported traces.

Every subcommand's help is plain text (``agentwatch SUBCOMMAND --help``).
Exit codes: 0 success; 1 ``analyze --fail-on-findings`` found anomalies, or
``prices`` met an unknown model; 2 bad input (a missing, empty or unrecognised
file, invalid configuration); 141 when the reader of the output went away
(``agentwatch prices | head``), quietly, as other command line tools do.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .version import __version__

if TYPE_CHECKING:
    from .engine.record import Finding, RunSummary, SpanRecord

EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe


def _config(args: argparse.Namespace) -> int:
    """Validate an agentwatch.yaml (with the environment and defaults) or a collector config; print the result.

    A file whose top level has collector sections (``exporter``, ``receivers``, ...)
    and no ``agent`` is checked as an ``agentwatch-collector`` config.
    """
    from .config import load_config, read_yaml
    from .config_schema import COLLECTOR_SCHEMA, schema

    def show(value: Any) -> str:
        return sorted(value) if isinstance(value, frozenset) else str(value)  # type: ignore[return-value]

    try:
        if args.file is not None:
            top = read_yaml(Path(args.file))
            collector_keys = set(schema(COLLECTOR_SCHEMA)["properties"])
            if "agent" not in top and set(top) & collector_keys:
                from .collector.config import load_collector_config

                collector = load_collector_config(args.file)
                print(json.dumps(dataclasses.asdict(collector), indent=2, default=show))
                print(f"{args.file}: valid agentwatch-collector configuration", file=sys.stderr)
                return 0
        cfg = load_config(args.file)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(cfg), indent=2, default=show))
    print(f"valid agentwatch configuration ({cfg.source})", file=sys.stderr)
    return 0


def _prices(args: argparse.Namespace) -> int:
    from .config import load_config
    from .pricing import PriceTable, bundled_prices

    try:
        table = PriceTable(load_config().prices)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    models = args.models or sorted(bundled_prices())
    status = 0
    for model in models:
        entry = table.lookup(model)
        if entry is None:
            print(f"{model}: unknown (no cost is recorded; add it under agent.prices)")
            status = 1
        else:
            parts = ", ".join(f"{k}={v:g}" for k, v in sorted(entry.items()))
            print(f"{model}: USD per 1M tokens: {parts}")
    return status


ANALYZE_HELP = """\
Run agentwatch's anomaly detectors over spans exported to files, exactly as the
collector would evaluate them, and print the findings and each run's summary.

Accepted files (recognised from their content):
  - OTLP protobuf: one serialized ExportTraceServiceRequest
  - OTLP/JSON: one ExportTraceServiceRequest object; ids in hex (the OTLP
    encoding) or base64 (protobuf's generic JSON mapping)
  - JSON Lines: one OTLP/JSON request per line, as the OpenTelemetry
    Collector's file exporter writes

Exit status: 0 done (findings or not), 1 findings with --fail-on-findings,
2 a file is missing, empty, too large or not OTLP trace data.
"""


def _analyze(args: argparse.Namespace) -> int:
    from .collector.decision import otlp_records
    from .config import load_config
    from .engine.engine import Engine
    from .otel.findings import span_outcome
    from .otel.normalize import records_extractor
    from .otlp_files import OtlpFileError, read_spans

    try:
        engine = Engine(load_config(args.config))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    traces: dict[str, list[bytes]] = {}
    try:
        for file in args.files:
            for span in read_spans(file, max_bytes=args.max_bytes):
                traces.setdefault(span.trace_hex, []).append(span.raw)
    except OtlpFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not traces:
        print(f"error: no spans in {', '.join(args.files)}", file=sys.stderr)
        return 2

    # The collector's record path and per-trace evaluation, span for span.
    extractor = records_extractor(engine)
    n_spans = 0
    findings_out: list[dict[str, Any]] = []
    spans_out: list[dict[str, Any]] = []
    runs_out: list[dict[str, Any]] = []
    for trace_hex, raws in traces.items():
        records, _ = otlp_records(trace_hex, raws, extractor)
        n_spans += len(records)
        verdict = engine.evaluate_trace(records)
        seen: set[str] = set()
        for record in records:
            if record.span_id in seen:
                continue  # a span exported twice: reported once
            seen.add(record.span_id)
            found, summary = span_outcome(
                record.kind, verdict.findings.get(record.span_id), verdict.summaries.get(record.span_id)
            )
            _report_span(record, found, summary, findings_out, spans_out, runs_out)
    if args.json:
        print(json.dumps(
            {"traces": len(traces), "spans": n_spans, "findings": findings_out, "flagged_spans": spans_out,
             "runs": runs_out},
            indent=2,
        ))  # fmt: skip
    else:
        print(f"{n_spans} spans in {len(traces)} traces, {len(findings_out)} findings, {len(runs_out)} runs")
        for f in findings_out:
            print(f"  [{f['severity']}] {f['flag']} on {f['span']} ({f['span_id']}): {f['reason']}")
        for run in runs_out:
            origin = f", fault origin {run['fault_origin_span_id']}" if run["fault_origin_span_id"] else ""
            flags = ", ".join(run["flags"]) or "none"
            print(f"  run {run['name']} ({run['span_id']}): {run['failure_mode']}, flags {flags}{origin}")
    return 1 if findings_out and args.fail_on_findings else 0


def _report_span(
    record: SpanRecord,
    found: list[Finding],
    summary: RunSummary | None,
    findings_out: list[dict[str, Any]],
    spans_out: list[dict[str, Any]],
    runs_out: list[dict[str, Any]],
) -> None:
    """What the detectors found on one span, as output rows.

    Flags the file's spans already carry (exported by an agentwatch adapter) are
    ignored: a fresh evaluation reports everything it finds, so a CI gate on
    ``--fail-on-findings`` fails on tagged exports too.
    """
    from . import semconv as sc
    from .otel.findings import anomaly_update, run_summary_attributes, safe_reason
    from .redaction import redact_text

    new_attrs, _, new = anomaly_update(None, None, found)
    name = redact_text(record.name)  # span names and reasons come from the file: they leave redacted
    for f in new:
        findings_out.append({
            "trace_id": record.trace_id, "span_id": record.span_id, "span": name, "flag": str(f.flag),
            "severity": str(f.severity), "reason": safe_reason(f), "related_span_id": f.related_span_id,
        })  # fmt: skip
    if new_attrs:
        spans_out.append({
            "trace_id": record.trace_id, "span_id": record.span_id, "span": name,
            "flags": list(new_attrs[sc.ANOMALY_FLAGS]), "severity": new_attrs[sc.ANOMALY_SEVERITY],
        })  # fmt: skip
    if summary is not None:
        attrs = run_summary_attributes(summary)
        runs_out.append({
            "trace_id": record.trace_id, "span_id": record.span_id, "name": redact_text(record.name),
            "flags": list(attrs[sc.RUN_ANOMALY_FLAGS]), "anomaly_count": summary.anomaly_count,
            "failure_mode": str(summary.failure_mode), "fault_origin_span_id": summary.fault_origin_span_id,
            "steps": summary.steps, "llm_calls": summary.llm_calls, "tool_calls": summary.tool_calls,
            "input_tokens": summary.input_tokens, "output_tokens": summary.output_tokens,
            "cost_usd": summary.cost_usd,
        })  # fmt: skip


SOURCE_HELP = """\
SOURCE is a trace file (OTLP protobuf, OTLP/JSON with hex or base64 ids, JSON
Lines as the OpenTelemetry Collector's file exporter writes), jaeger:http://HOST:16686
(Jaeger v2's query API v3, which serves OTLP/JSON; --trace ID, or --service NAME
[--tag KEY=VALUE] to search the last two days) or tempo:http://HOST:3200 (Tempo's
trace-by-id API; --trace ID). Spans go through the same record path and detectors
as 'agentwatch analyze' and the collector.

Exit status: 0 done, 2 the source cannot be read (missing or truncated file,
unreachable backend, trace not found, not OTLP) or holds no run.
"""


def _load_runs(args: argparse.Namespace) -> Any:
    """The RunReports of SOURCE, or an exit status after printing why not."""
    from .config import load_config
    from .engine.engine import Engine
    from .forensics.analysis import TraceTooLarge, analyze_spans
    from .forensics.reader import read_source
    from .forensics.text import clean
    from .otlp_files import OtlpFileError

    tags = {}
    for item in args.tag or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"error: --tag {clean(item, 80)!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        tags[key] = value
    try:
        engine = Engine(load_config(args.config))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        spans = read_source(
            args.source, args.trace, service=args.service, tags=tags, max_bytes=args.max_bytes,
            timeout_s=args.timeout,
        )  # fmt: skip
        reports = analyze_spans(spans, engine, max_spans=args.max_spans)
    except (OtlpFileError, TraceTooLarge) as err:
        print(f"error: {clean(err, 2000)}", file=sys.stderr)
        return 2
    if not reports:
        print(f"error: {clean(args.source, 200)}: no spans, so no run to report", file=sys.stderr)
        return 2
    return reports


def _forensics(args: argparse.Namespace) -> int:
    from .forensics.report import json_report, terminal_report

    reports = _load_runs(args)
    if isinstance(reports, int):
        return reports
    if args.json:
        print(json.dumps([json_report(r) for r in reports], indent=2))
    else:
        print("\n\n".join(terminal_report(r) for r in reports))
    return 0


def _postmortem(args: argparse.Namespace) -> int:
    from .forensics.postmortem import render_html, render_markdown

    reports = _load_runs(args)
    if isinstance(reports, int):
        return reports
    render = render_html if args.format == "html" else render_markdown
    text = render(reports, source=args.source)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as err:
            print(f"error: cannot write {args.output}: {err.strerror or err}", file=sys.stderr)
            return 2
        print(f"postmortem draft written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _replay_run(args: argparse.Namespace) -> Any:
    """The fixture of the chosen run of SOURCE, or an exit status after printing why not."""
    from .forensics.replay import ReplayExportError, export_fixture

    reports = _load_runs(args)
    if isinstance(reports, int):
        return reports
    if args.run:
        chosen = [r for r in reports if r.run["span_id"] == args.run.lower()]
        if not chosen:
            print(f"error: no run with span id {args.run[:40]!r} in {args.source}", file=sys.stderr)
            return 2
        report = chosen[0]
    else:
        flagged = [r for r in reports if r.findings]
        report = (flagged or reports)[0]
        if len(reports) > 1:
            print(f"replaying run {report.run['span_id']} ({len(reports)} runs in the source; pick with --run)",
                  file=sys.stderr)  # fmt: skip
    try:
        return export_fixture(report)
    except ReplayExportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def _write_text(path: str | Path, text: str) -> int:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as err:
        print(f"error: cannot write {path}: {err.strerror or err}", file=sys.stderr)
        return 2
    return 0


def _replay_export(args: argparse.Namespace) -> int:
    fixture = _replay_run(args)
    if isinstance(fixture, int):
        return fixture
    status = _write_text(args.output, json.dumps(fixture, indent=1, default=str) + "\n")
    if status == 0:
        counts = f"{len(fixture['llm'])} LLM responses, {len(fixture['tools'])} tool calls"
        print(f"replay fixture of run {fixture['run']['span_id']} written to {args.output} ({counts})", file=sys.stderr)
    return status


def _replay_test(args: argparse.Namespace) -> int:
    from .forensics.replay import write_test

    fixture = _replay_run(args)
    if isinstance(fixture, int):
        return fixture
    output = Path(args.output)
    fixture_path = output.with_suffix(".replay.json")
    try:
        text = write_test(fixture, fixture_path, args.entry, output)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    status = _write_text(fixture_path, json.dumps(fixture, indent=1, default=str) + "\n") or _write_text(output, text)
    if status == 0:
        print(f"regression test written to {output} (fixture {fixture_path})", file=sys.stderr)
    return status


def _source_arguments(p: argparse.ArgumentParser) -> None:
    from .forensics.analysis import DEFAULT_MAX_SPANS
    from .forensics.reader import DEFAULT_TIMEOUT_S
    from .otlp_files import DEFAULT_MAX_BYTES

    p.add_argument("source", metavar="SOURCE", help="trace file, jaeger:http://HOST:16686 or tempo:http://HOST:3200")
    p.add_argument("--trace", metavar="ID", help="the trace to read (required for Tempo; filters a file)")
    p.add_argument("--service", metavar="NAME", help="Jaeger: search this service's recent traces instead of --trace")
    p.add_argument("--tag", action="append", metavar="KEY=VALUE", help="Jaeger search: span attribute to match")
    p.add_argument("--config", metavar="FILE", help="detection configuration (YAML), as for the SDK")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="backend timeout in seconds")
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, metavar="N", help="largest file or answer read")
    p.add_argument("--max-spans", type=int, default=DEFAULT_MAX_SPANS, metavar="N", help="most spans held in memory")


def _version(_args: argparse.Namespace) -> int:
    print(__version__)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .otlp_files import DEFAULT_MAX_BYTES

    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="agentwatch",
        formatter_class=formatter,
        description="agentwatch: anomaly detection for LLM agents. Check configuration, look up model "
        "prices,\nand run the detectors over exported traces.",
        epilog="Run 'agentwatch COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"agentwatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "config",
        help="validate a configuration file and print what is in force",
        description="Validate an agentwatch configuration (with the environment and defaults) or an\n"
        "agentwatch-collector configuration file, and print the configuration in force, as JSON.",
        formatter_class=formatter,
    )
    p.add_argument("file", nargs="?", help="YAML file (default: $AGENTWATCH_CONFIG, else ./agentwatch.yaml)")
    p.set_defaults(func=_config)
    p = sub.add_parser(
        "prices",
        help="show the price entry a model name resolves to",
        description="Show the price (USD per million tokens) each model name resolves to, from the\n"
        "bundled price table and agent.prices in the configuration. Without models, every\n"
        "bundled model is listed. Exit status 1 when a model is unknown.",
        formatter_class=formatter,
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="model names, as the API reports them")
    p.set_defaults(func=_prices)
    p = sub.add_parser(
        "analyze",
        help="run the detectors over OTLP trace files",
        description=ANALYZE_HELP,
        formatter_class=formatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="OTLP protobuf, OTLP/JSON or JSON Lines trace file")
    p.add_argument("--config", metavar="FILE", help="detection configuration (YAML), as for the SDK")
    p.add_argument("--json", action="store_true", help="print one JSON object (findings, flagged spans, runs)")
    p.add_argument("--fail-on-findings", action="store_true", help="exit 1 when anything is flagged (CI gates)")
    p.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"refuse files (and JSON Lines lines) larger than N bytes (default {DEFAULT_MAX_BYTES})",
    )
    p.set_defaults(func=_analyze)
    p = sub.add_parser(
        "forensics",
        help="backward-trace report of each run: fault origin, cascade, blast radius",
        description="The backward trace of each run in SOURCE: the timeline, the fault origin and\n"
        "why, the cascade that built on it, the external actions after it (irreversible first),\n"
        "totals and the failure class.\n\n" + SOURCE_HELP,
        formatter_class=formatter,
    )
    _source_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per run (contract keys)")
    p.set_defaults(func=_forensics)
    p = sub.add_parser(
        "postmortem",
        help="draft the incident postmortem (markdown or one offline HTML page)",
        description="Draft the agent incident postmortem from SOURCE: session context, failure\n"
        "classification, fault origin and cascade, impact, root-cause candidates, detection gap,\n"
        "the proposed alert and regression test, and the checklist.\n\n" + SOURCE_HELP,
        formatter_class=formatter,
    )
    _source_arguments(p)
    p.add_argument("--format", choices=("markdown", "html"), default="markdown", help="output format")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of standard output")
    p.set_defaults(func=_postmortem)
    p = sub.add_parser(
        "replay",
        help="export a recorded run for replay, or write a regression test that replays it",
        description="Replay a run recorded with content capture on\n"
        "(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true).\n"
        "  export: write the replay fixture (the model's responses in order, each tool call's\n"
        "          result or error keyed by tool, call index and args hash, the run's input);\n"
        "  test:   write a pytest file (and its fixture next to it) that replays the run through\n"
        "          MODULE:FUNCTION and fails while the recording's critical or high flags still fire.",
        formatter_class=formatter,
    )
    replay_sub = p.add_subparsers(dest="replay_command", required=True, metavar="ACTION")
    for action, func, helptext in (
        ("export", _replay_export, "write the replay fixture of a run"),
        ("test", _replay_test, "write a pytest regression test that replays a run"),
    ):
        q = replay_sub.add_parser(action, help=helptext, description=SOURCE_HELP, formatter_class=formatter)
        _source_arguments(q)
        q.add_argument("--run", metavar="SPAN_ID", help="the run span to use (default: the first flagged run)")
        if action == "test":
            q.add_argument("--entry", required=True, metavar="MODULE:FUNCTION", help="the agent's entry point")
        q.add_argument("-o", "--output", required=True, metavar="FILE", help="file to write")
        q.set_defaults(func=func)
    p = sub.add_parser(
        "version", help="print the version", description="Print agentwatch's version.", formatter_class=formatter
    )
    p.set_defaults(func=_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``agentwatch`` console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        status: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, while we can still handle it
        return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file descriptor (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
