"""Traces of seed 003's incident, recorded once per session by the real openai client against the scripted
server and written by the real OTLP encoder (examples/incident_walkthrough.py), in three variants."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _walkthrough():  # type: ignore[no-untyped-def]
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
    _walkthrough().record_incident(path)
    return path


@pytest.fixture(scope="session")
def no_content_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The incident recorded with content capture off: hashes and entities only."""
    path = tmp_path_factory.mktemp("incident") / "no_content.jsonl"
    _walkthrough().record_incident(path, capture=False)
    return path


@pytest.fixture(scope="session")
def no_run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The incident without a run span (zero-code use)."""
    path = tmp_path_factory.mktemp("incident") / "no_run.jsonl"
    _walkthrough().record_incident(path, with_run=False)
    return path
