"""No code change: ``OTEL_TRACES_EXPORTER=agentwatch opentelemetry-instrument python app.py``.

The real ``opentelemetry-instrument`` loads agentwatch's instrumentor from its
entry point and the SDK configurator builds ``AnomalyExporter`` from the
``opentelemetry_traces_exporter`` entry point, wrapping the OTLP exporter the
standard variables choose; spans reach a real OTLP/HTTP sink with their flags.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.collector.helpers import HttpSink, wait_until

pytest.importorskip("opentelemetry.distro")
APP = Path(__file__).with_name("agent_app.py")


def _instrument_command(app: Path) -> list[str]:
    script = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("opentelemetry-instrument is not installed")
    return [script, sys.executable, str(app)]


def run_app(env_extra: dict[str, str], app: Path = APP) -> subprocess.CompletedProcess[str]:
    """``opentelemetry-instrument python app`` with a clean OTEL_/AGENTWATCH_ environment plus ``env_extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENTWATCH_"))}
    env.update(
        {
            "OTEL_SERVICE_NAME": "zero-code-app",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            # The test environment also has the peers' instrumentations installed (all named
            # "openai"/"anthropic"); keep this app to agentwatch alone, as a user would have it.
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai,anthropic",
            **env_extra,
        }
    )
    return subprocess.run(_instrument_command(app), env=env, capture_output=True, text=True, timeout=60, check=False)


def test_zero_code_spans_arrive_with_flags() -> None:
    sink = HttpSink()
    try:
        done = run_app(
            {
                "OTEL_TRACES_EXPORTER": "agentwatch",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.url,
            }
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert '"ok": true' in done.stdout
        spans = wait_until(lambda: [s for s in sink.received() if s.name.startswith("chat")] or None)
    finally:
        sink.stop()
    assert len(spans) == 2  # one span per call: no duplicate from any other instrumentation
    flagged = [s for s in spans if "UNKNOWN_TOOL" in s.flags]
    assert len(flagged) == 1
    assert all(s.attrs.get("gen_ai.provider.name") == "openai" for s in spans)


def test_disabled_by_standard_variable() -> None:
    sink = HttpSink()
    try:
        done = run_app(
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": sink.url,
                "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai, anthropic, agentwatch",
            }
        )
        assert done.returncode == 0, done.stderr[-3000:]
        received = sink.received()
    finally:
        sink.stop()
    assert received == []  # nothing instrumented the client, so no span at all
