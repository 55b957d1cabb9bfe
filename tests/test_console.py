"""The terminal tree exporter: live printing when a trace's root ends, bounded memory."""

from __future__ import annotations

import io

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import agentwatch
from agentwatch.console import TreeExporter


def _provider(exporter: TreeExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def test_live_prints_each_trace_when_its_root_ends() -> None:
    out = io.StringIO()
    exporter = TreeExporter(live=True, file=out)
    tracer = _provider(exporter).get_tracer("t")
    with tracer.start_as_current_span("invoke_agent support"):
        with tracer.start_as_current_span("execute_tool orders.get"):
            pass
        assert out.getvalue() == ""  # the child ended, the root has not
    text = out.getvalue()
    assert text.splitlines()[0].startswith("invoke_agent support")
    assert text.splitlines()[1].startswith("  execute_tool orders.get")
    assert exporter.take() == []  # printed spans are forgotten


def test_live_run_tree_shows_stop_reason() -> None:
    out = io.StringIO()
    provider = _provider(TreeExporter(live=True, file=out))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("invoke_agent demo", attributes={"agentwatch.run.stop_reason": "success"}):
        pass
    assert "stop_reason=success" in out.getvalue()
    assert agentwatch.StopReason.SUCCESS == "success"


def test_collecting_mode_is_bounded() -> None:
    exporter = TreeExporter(max_spans=10)
    tracer = _provider(exporter).get_tracer("t")
    with tracer.start_as_current_span("root"):
        for i in range(25):
            with tracer.start_as_current_span(f"child {i}"):
                pass
    spans = exporter.take()
    assert len(spans) == 10
    assert spans[-1].name == "root"

