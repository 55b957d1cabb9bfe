"""The ``agentwatch`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentwatch import semconv as sc
from agentwatch.cli import main


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


def _loop_trace() -> bytes:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("foreign-agent")
    with tracer.start_as_current_span("invoke_agent research", attributes={sc.GEN_AI_OPERATION_NAME: "invoke_agent"}):
        for _ in range(3):
            with tracer.start_as_current_span(
                "execute_tool search",
                attributes={sc.GEN_AI_OPERATION_NAME: "execute_tool", sc.GEN_AI_TOOL_NAME: "search",
                            sc.GEN_AI_TOOL_CALL_ARGUMENTS: '{"q": "same"}'},
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


def test_analyze_rejects_garbage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.json"
    path.write_text("{not json")
    assert main(["analyze", str(path)]) == 2
    assert "not an OTLP trace export" in capsys.readouterr().err
