"""Traces of seed 003's incident, recorded once per session by the real openai client against the scripted
server and written by the real OTLP encoder (examples/incident_walkthrough.py), in three variants."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def walkthrough():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(EXAMPLES))
    try:
        import incident_walkthrough
    finally:
        sys.path.remove(str(EXAMPLES))
    return incident_walkthrough


@pytest.fixture(scope="session")
def incident_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The incident with a run span and content capture on (JSON Lines)."""
    path = tmp_path_factory.mktemp("incident") / "incident.jsonl"
    walkthrough().record_incident(path)
    return path


@pytest.fixture(scope="session")
def no_content_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The incident recorded with content capture off: hashes and entities only."""
    path = tmp_path_factory.mktemp("incident") / "no_content.jsonl"
    walkthrough().record_incident(path, capture=False)
    return path


@pytest.fixture(scope="session")
def no_run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The incident without a run span (zero-code use)."""
    path = tmp_path_factory.mktemp("incident") / "no_run.jsonl"
    walkthrough().record_incident(path, with_run=False)
    return path


@pytest.fixture(scope="session")
def demo_runs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The four runs of examples/demo_agent.py (healthy, seed 003, research loop, ticket retries), as a trace file."""
    import openai
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    import agentwatch
    from agentwatch.testing import LLMServer

    example = walkthrough()
    demo = example.demo_agent
    path = tmp_path_factory.mktemp("demo") / "demo.jsonl"
    saved = os.environ.get(example.CAPTURE)
    os.environ[example.CAPTURE] = "true"
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(example.JsonLinesExporter(path)))
    agentwatch.instrument(tracer_provider=provider, config={"agent": {"anomaly": {"log_findings": False}}})
    try:
        with LLMServer(default=demo.model_brain) as server:
            client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0)
            demo.scenarios(client)
            client.close()
    finally:
        agentwatch.uninstrument()
        provider.shutdown()
        if saved is None:
            os.environ.pop(example.CAPTURE, None)
        else:
            os.environ[example.CAPTURE] = saved
    return path
