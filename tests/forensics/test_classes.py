"""Failure classes and blast radius across the demo's four runs, and the class table itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentwatch import semconv as sc
from agentwatch.cli import main
from agentwatch.forensics.analysis import FAILURE_CLASS_OF_FLAG, FAILURE_CLASSES


def test_every_flag_has_a_failure_class() -> None:
    """A new flag must be placed in seed 003's taxonomy before it ships."""
    assert set(FAILURE_CLASS_OF_FLAG) == {str(f) for f in sc.Flag}
    assert set(FAILURE_CLASS_OF_FLAG.values()) == set(FAILURE_CLASSES) - {"none"}


def test_demo_runs_are_classified_by_their_fault_origin(
    demo_runs_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["forensics", str(demo_runs_file), "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    by_name: dict[str, list[dict]] = {}  # type: ignore[type-arg]
    for report in reports:
        by_name.setdefault(report["run"]["name"], []).append(report)
    healthy, incident = by_name["invoke_agent support-agent"]
    assert healthy["failure_class"] == "none" and healthy["fault_origin"] is None
    assert healthy["cascade"] == [] and healthy["blast_radius"] == []
    assert incident["failure_class"] == "hallucination_propagation"
    assert incident["fault_origin"]["step"] == 3

    [research] = by_name["invoke_agent research-agent"]
    assert research["failure_class"] == "cost_runaway"
    assert research["run"]["stop_reason"] == "loop_detected"
    assert research["blast_radius"] == []  # search.read has no side effect

    [triage] = by_name["invoke_agent triage-agent"]
    assert triage["failure_class"] == "tool_misfire"
    origin_step = triage["fault_origin"]["step"]
    writes = [b for b in triage["blast_radius"]]
    assert writes and all(b["tool"] == "ticket.create" and b["step"] >= origin_step for b in writes)
    assert all(b["idempotency_key_present"] is False and b["reversible"] is None for b in writes)
    assert [b["step"] for b in writes] == sorted(b["step"] for b in writes)
