"""The ``agentwatch`` command line."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch import semconv as sc
from agentwatch.cli import EXIT_BROKEN_PIPE, main
from agentwatch.version import __version__


def test_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("agent: {budgets: {max_steps: 25}}")
    assert main(["config", str(good)]) == 0
    assert '"max_steps": 25' in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: {budgets: [")
    assert main(["config", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_prices(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prices", "gpt-4o-2024-08-06"]) == 0
    assert "output=10" in capsys.readouterr().out
    assert main(["prices", "no-such-model"]) == 1


def _loop_trace(tool: str = "search") -> bytes:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("foreign-agent")
    with tracer.start_as_current_span("invoke_agent research", attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent"}):
        for _ in range(3):
            with tracer.start_as_current_span(
                f"execute_tool {tool}",
                attributes={
                    sc.GEN_AI_OPERATION_NAME: "execute_tool",
                    sc.GEN_AI_TOOL_NAME: tool,
                    sc.GEN_AI_TOOL_CALL_ARGUMENTS: '{"q": "same"}',
                },
            ):
                pass
    return encode_spans(exporter.get_finished_spans()).SerializeToString()


def test_analyze_protobuf_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trace.pb"
    path.write_bytes(_loop_trace())
    assert main(["analyze", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spans"] == 4
    assert [f["flag"] for f in out["findings"]] == ["LOOP_DETECTED"]
    assert main(["analyze", str(path), "--fail-on-findings"]) == 1


def test_analyze_output_is_redacted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Span names and reasons come from the file: a secret in them never reaches the terminal."""
    secret = "sk-proj-" + "Zx9" * 12
    path = tmp_path / "trace.pb"
    path.write_bytes(_loop_trace(tool=f"lookup {secret}"))
    for extra in ([], ["--json"]):
        assert main(["analyze", str(path), *extra]) == 0
        out = capsys.readouterr().out
        assert "LOOP_DETECTED" in out
        assert secret not in out and "Zx9Zx9Zx9" not in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"  \n\n", "empty file"),
        (b"{not json", "not JSON"),
        (b'{"hello": "world"}', "no resourceSpans"),
        (b"[1, 2]", "expected a JSON object"),
        (b"\x00\x01garbage", "OTLP"),
        (b'{"resourceSpans": []}', "no spans"),
    ],
)
def test_analyze_refuses_what_is_not_a_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str
) -> None:
    path = tmp_path / "input.json"
    path.write_bytes(content)
    assert main(["analyze", str(path), "--fail-on-findings"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_analyze_reports_findings_on_spans_already_tagged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trace exported through AnomalyProcessor carries its flags already: analyze still reports them."""
    from agentwatch.otel.processor import AnomalyProcessor

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(AnomalyProcessor(SimpleSpanProcessor(exporter)))
    tracer = provider.get_tracer("foreign-agent")
    with tracer.start_as_current_span("invoke_agent research", attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent"}):
        for _ in range(3):
            with tracer.start_as_current_span(
                "execute_tool search",
                attributes={sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_NAME: "search",
                            sc.GEN_AI_TOOL_CALL_ARGUMENTS: '{"q": "same"}'},
            ):
                pass
    spans = exporter.get_finished_spans()
    assert any((s.attributes or {}).get(sc.ANOMALY_FLAGS) for s in spans)
    path = tmp_path / "tagged.pb"
    path.write_bytes(encode_spans(spans).SerializeToString())
    out = _analyze_json(path, capsys)
    assert [f["flag"] for f in out["findings"]] == ["LOOP_DETECTED"]  # type: ignore[union-attr]
    assert main(["analyze", str(path), "--fail-on-findings"]) == 1


def test_analyze_reports_a_missing_file_as_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["analyze", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_analyze_refuses_files_over_the_size_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "trace.pb"
    path.write_bytes(_loop_trace())
    assert main(["analyze", str(path), "--max-bytes", "100"]) == 2
    assert "over the 100-byte limit" in capsys.readouterr().err


def _two_runs() -> list[ReadableSpan]:
    """Two traces, each a run that loops: merged into one, they would be one run."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("foreign-agent")
    for query in ("first", "second"):
        with tracer.start_as_current_span(
            f"invoke_agent {query}", attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent"}
        ):
            for _ in range(3):
                with tracer.start_as_current_span(
                    "execute_tool search",
                    attributes={
                        sc.GEN_AI_OPERATION_NAME: "execute_tool",
                        sc.GEN_AI_TOOL_NAME: "search",
                        sc.GEN_AI_TOOL_CALL_ARGUMENTS: json.dumps({"q": query}),
                    },
                ):
                    pass
    return list(exporter.get_finished_spans())


def _hex_ids(obj: object) -> object:
    """protobuf's JSON mapping (base64 ids) turned into the OTLP/JSON encoding (hex ids)."""
    if isinstance(obj, dict):
        return {
            k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else _hex_ids(v)
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_hex_ids(v) for v in obj]
    return obj


def _analyze_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["analyze", str(path), "--json"]) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


@pytest.mark.parametrize("encoding", ["protobuf", "json-base64", "json-hex", "jsonl", "jsonl-named-json"])
def test_analyze_reads_every_otlp_encoding_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], encoding: str
) -> None:
    spans = _two_runs()
    request = encode_spans(spans)
    expected_traces = {format(s.context.trace_id, "032x") for s in spans}
    if encoding == "protobuf":
        path = tmp_path / "trace.pb"
        path.write_bytes(request.SerializeToString())
    elif encoding == "json-base64":  # what MessageToJson (protobuf's JSON mapping) writes
        path = tmp_path / "trace.json"
        path.write_text(json_format.MessageToJson(request))
    elif encoding == "json-hex":
        path = tmp_path / "trace.json"
        path.write_text(json.dumps(_hex_ids(json_format.MessageToDict(request))))
    else:  # the Collector's file exporter: one request per line (here one per trace)
        path = tmp_path / ("traces.jsonl" if encoding == "jsonl" else "traces.json")
        lines = [
            json.dumps(_hex_ids(json_format.MessageToDict(encode_spans([s for s in spans if s.context.trace_id == t]))))
            for t in sorted({s.context.trace_id for s in spans})
        ]
        path.write_text("\n".join(lines) + "\n")
    out = _analyze_json(path, capsys)
    assert out["traces"] == 2 and out["spans"] == 8
    runs = out["runs"]
    assert isinstance(runs, list)
    assert {run["trace_id"] for run in runs} == expected_traces
    assert sorted(run["name"] for run in runs) == ["invoke_agent first", "invoke_agent second"]
    assert all(run["flags"] == ["LOOP_DETECTED"] for run in runs)
    findings = out["findings"]
    assert isinstance(findings, list) and [f["flag"] for f in findings] == ["LOOP_DETECTED"] * 2
    assert main(["analyze", str(path), "--fail-on-findings"]) == 1
    capsys.readouterr()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("traceId", "AAAA", "traceId 'AAAA' is neither 32 hex digits nor base64 of 16 bytes"),
        ("spanId", "zzzzzzzzzzzzzzzz", "spanId 'zzzzzzzzzzzzzzzz' is neither 16 hex digits"),
        ("parentSpanId", 12, "parentSpanId must be a string"),
        ("traceId", "0" * 32, "traceId is all zeros"),
        ("spanId", "", "spanId is missing"),
    ],
)
def test_analyze_names_the_field_and_span_of_an_invalid_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, value: object, message: str
) -> None:
    body = json_format.MessageToDict(encode_spans(_two_runs()))
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][2]
    span[field] = value
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(body))
    assert main(["analyze", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert f"spans[2] ({span['name']!r})" in err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"agentwatch {__version__}"
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == __version__


@pytest.mark.parametrize("command", [[], ["config"], ["prices"], ["analyze"], ["version"]])
def test_help_is_plain_text(capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: agentwatch")
    for markup in ("``", ":func:", ":class:", ":data:", ".. "):
        assert markup not in text


def _cut_short(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI with a reader that takes one line and leaves (``agentwatch ... | head -1``)."""
    script = "import sys; from agentwatch.cli import main; sys.exit(main())"
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, first, err)


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    result = _cut_short(["prices", *(f"model-{i}" for i in range(4000))])
    assert result.stdout.startswith(b"model-0: unknown")
    assert result.stderr == b"" and result.returncode == EXIT_BROKEN_PIPE
    path = tmp_path / "trace.pb"
    spans = [s for _ in range(250) for s in _two_runs()]  # output beyond a pipe buffer (64 KiB)
    path.write_bytes(encode_spans(spans).SerializeToString())
    result = _cut_short(["analyze", str(path)])
    assert result.stdout.startswith(b"2000 spans in 500 traces")
    assert result.stderr == b"" and result.returncode == EXIT_BROKEN_PIPE
