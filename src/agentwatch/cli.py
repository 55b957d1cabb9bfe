"""``agentwatch`` command line: check configuration, look up prices, analyse exported traces.

    agentwatch config [FILE]        validate a config file and print what is in force
    agentwatch prices [MODEL ...]   show the price entry a model resolves to
    agentwatch analyze FILE ...     run the detectors over OTLP trace files (JSON or protobuf)
    agentwatch version
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .version import __version__


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


def _load_requests(path: Path) -> list[Any]:
    """OTLP ExportTraceServiceRequest messages from a .json/.jsonl (OTLP JSON) or protobuf file."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from .collector.otlp import json_request_to_protobuf

    data = path.read_bytes()
    bodies: list[bytes] = []
    if path.suffix in (".json", ".jsonl") or data[:1] in (b"{", b"["):
        for line in data.splitlines() if path.suffix == ".jsonl" else [data]:
            if line.strip():
                bodies.append(json_request_to_protobuf(line))
    else:
        bodies.append(data)
    requests = []
    for body in bodies:
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        requests.append(message)
    return requests


def _analyze(args: argparse.Namespace) -> int:
    from .collector.otlp import decode_attributes
    from .config import load_config
    from .engine.engine import Engine
    from .otel.normalize import record_from_attributes

    try:
        engine = Engine(load_config(args.config))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    records = []
    names: dict[str, str] = {}
    for file in args.files:
        try:
            requests = _load_requests(Path(file))
        except Exception as err:
            print(f"error: {file}: not an OTLP trace export ({err})", file=sys.stderr)
            return 2
        for request in requests:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        span_id = span.span_id.hex()
                        names[span_id] = span.name
                        records.append(
                            record_from_attributes(
                                decode_attributes(kv.SerializeToString() for kv in span.attributes),
                                trace_id=span.trace_id.hex(), span_id=span_id,
                                parent_id=span.parent_span_id.hex() or None, name=span.name,
                                start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                                is_error=span.status.code == 2,
                            )
                        )
    verdict = engine.evaluate_trace(records)
    findings = [f for fs in verdict.findings.values() for f in fs]
    if args.json:
        print(json.dumps({
            "spans": len(records),
            "findings": [
                {"span_id": f.span_id, "span": names.get(f.span_id), "flag": str(f.flag),
                 "severity": str(f.severity), "reason": f.reason, "related_span_id": f.related_span_id}
                for f in findings
            ],
            "runs": [
                {"run_span_id": key, "flags": list(s.flags), "fault_origin_span_id": s.fault_origin_span_id,
                 "failure_mode": str(s.failure_mode), "steps": s.steps, "cost_usd": s.cost_usd}
                for key, s in verdict.summaries.items()
            ],
        }, indent=2))
    else:
        print(f"{len(records)} spans, {len(findings)} findings, {len(verdict.summaries)} runs")
        for f in findings:
            print(f"  [{f.severity}] {f.flag} on {names.get(f.span_id, '?')} ({f.span_id}): {f.reason}")
        for key, s in verdict.summaries.items():
            origin = f", fault origin {s.fault_origin_span_id}" if s.fault_origin_span_id else ""
            print(f"  run {names.get(key, key)}: {s.failure_mode}, flags {list(s.flags) or 'none'}{origin}")
    return 1 if findings and args.fail_on_findings else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agentwatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("config", help="validate configuration and print what is in force")
    p.add_argument("file", nargs="?", help="YAML file (default: $AGENTWATCH_CONFIG or ./agentwatch.yaml)")
    p.set_defaults(func=_config)
    p = sub.add_parser("prices", help="show the price entry a model name resolves to")
    p.add_argument("models", nargs="*")
    p.set_defaults(func=_prices)
    p = sub.add_parser("analyze", help="run the detectors over OTLP trace export files")
    p.add_argument("files", nargs="+", help="OTLP JSON (.json, .jsonl: one request per line) or protobuf")
    p.add_argument("--config", help="detection config (seed-004 YAML)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--fail-on-findings", action="store_true", help="exit 1 when anything is flagged (CI gates)")
    p.set_defaults(func=_analyze)
    p = sub.add_parser("version")
    p.set_defaults(func=lambda _args: print(__version__) or 0)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
