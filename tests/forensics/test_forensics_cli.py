"""``agentwatch forensics`` on seed 003's incident: the contract's keys, the fault origin, cascade, blast radius."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from agentwatch.cli import main

RUN_KEYS = {"span_id", "name", "stop_reason", "failure_mode", "steps", "llm_calls", "tool_calls", "input_tokens",
            "output_tokens", "cost_usd", "duration_s"}  # fmt: skip
TIMELINE_KEYS = {"step", "span_id", "kind", "name", "offset_ms", "duration_ms", "status", "flags", "args_hash",
                 "tokens", "cost_usd"}  # fmt: skip
BLAST_KEYS = {"span_id", "step", "tool", "status", "reversible", "idempotency_key_present"}


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, Any]]:
    assert main(["forensics", *argv, "--json"]) == 0
    out: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    return out


def _by_step(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {e["step"]: e for e in report["timeline"] if e["step"] is not None}


def test_json_has_the_contract_keys_and_names_the_llm_call_that_invented_the_order(
    incident_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [report] = _json(capsys, str(incident_file))
    assert {"trace_id", "run", "timeline", "fault_origin", "cascade", "blast_radius", "failure_class"} <= set(report)
    assert set(report["run"]) >= RUN_KEYS
    assert all(set(e) >= TIMELINE_KEYS for e in report["timeline"])
    assert [e["step"] for e in report["timeline"]] == [1, 2, 3, 4, 5, 6, 7]
    steps = _by_step(report)
    assert [steps[n]["kind"] for n in range(1, 8)] == ["llm", "tool", "llm", "tool", "llm", "tool", "llm"]
    # step 3: the LLM call whose tool call asked for orders.get(ord_555), an id seen nowhere before
    origin = report["fault_origin"]
    assert origin["step"] == 3 and origin["span_id"] == steps[3]["span_id"]
    assert origin["flag"] == "ENTITY_HALLUCINATION" and "ord_555" in origin["reason"]
    assert report["failure_class"] == "hallucination_propagation"
    # everything after it built on ord_555; the lookup before it did not
    assert report["cascade"] == [steps[n]["span_id"] for n in (3, 4, 5, 6, 7)]
    [blast] = report["blast_radius"]
    assert set(blast) == BLAST_KEYS
    assert blast["tool"] == "orders.confirm" and blast["step"] == 6 and blast["status"] == "ok"
    assert blast["idempotency_key_present"] is False and blast["reversible"] is False
    run = report["run"]
    assert (run["steps"], run["llm_calls"], run["tool_calls"]) == (7, 4, 3)
    assert run["stop_reason"] == "success" and run["failure_mode"] == "bad_decision"
    assert run["input_tokens"] == sum(steps[n]["tokens"] for n in (1, 3, 5, 7)) - run["output_tokens"]


def test_flags_match_analyze_on_the_same_file(incident_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One record path: forensics reports exactly the flags analyze reports, span for span."""
    [report] = _json(capsys, str(incident_file))
    assert main(["analyze", str(incident_file), "--json"]) == 0
    analyzed = json.loads(capsys.readouterr().out)
    expected = {s["span_id"]: sorted(s["flags"]) for s in analyzed["flagged_spans"]}
    got = {e["span_id"]: sorted(e["flags"]) for e in report["timeline"] if e["flags"]}
    assert got == expected
    [run] = analyzed["runs"]
    assert report["fault_origin"]["span_id"] == run["fault_origin_span_id"]


def test_terminal_report_shows_origin_cascade_blast_radius_and_class(
    incident_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["forensics", str(incident_file)]) == 0
    out = capsys.readouterr().out
    assert "fault origin: step 3" in out and "ENTITY_HALLUCINATION" in out
    assert "cascade: 3 chat gpt-4o-mini -> 4 execute_tool orders.get" in out
    assert "step 6: orders.confirm (ok, IRREVERSIBLE, no idempotency key)" in out
    assert "failure class: hallucination_propagation" in out
    assert "totals: 7 steps (4 LLM, 3 tool)" in out


def test_without_content_the_report_comes_from_hashes_and_entities(
    no_content_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = no_content_file.read_text()
    assert "gen_ai.input.messages" not in text and "gen_ai.tool.call.result" not in text
    [report] = _json(capsys, str(no_content_file))
    assert report["fault_origin"]["step"] == 3
    assert report["failure_class"] == "hallucination_propagation"
    assert [b["tool"] for b in report["blast_radius"]] == ["orders.confirm"]
    assert len(report["cascade"]) == 5


def test_calls_without_a_run_span_are_one_implicit_run_per_conversation(
    no_run_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Zero-code use: one trace per call, joined by gen_ai.conversation.id as the collector joins them."""
    [report] = _json(capsys, str(no_run_file))
    assert report["implicit_run"] is True and report["run"]["span_id"] is None
    assert report["run"]["conversation_id"] and len(report["run"]["trace_ids"]) == 7
    assert [e["kind"] for e in report["timeline"]] == ["llm", "tool"] * 3 + ["llm"]
    assert any("no run span" in n for n in report["notes"])
    assert report["failure_class"] == "hallucination_propagation"
    assert [b["tool"] for b in report["blast_radius"]] == ["orders.confirm"]
    assert main(["forensics", str(no_run_file)]) == 0
    assert "[implicit run: no run span]" in capsys.readouterr().out
    assert main(["postmortem", str(no_run_file)]) == 0
    assert "(conversation conv" in capsys.readouterr().out


def _spans_of(path: Path) -> list[dict[str, Any]]:
    spans = []
    for line in path.read_text().splitlines():
        request = json.loads(line)
        for rs in request["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                spans.extend(ss["spans"])
    return spans


def _hex(span_id: str) -> str:
    return base64.b64decode(span_id).hex()


def _write(path: Path, spans: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}))
    return path


def test_missing_parents_and_clock_skew_are_reported_not_fatal(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spans = _spans_of(incident_file)
    by_name = {s["name"]: s for s in spans}
    orphan = by_name["execute_tool crm.get_customer"]
    orphan["parentSpanId"] = "ff" * 8  # its parent was lost in transit
    confirm = by_name["execute_tool orders.confirm"]
    confirm["endTimeUnixNano"] = str(int(confirm["startTimeUnixNano"]) - 5_000_000)  # clocks disagree
    reports = _json(capsys, str(_write(tmp_path / "broken.json", spans)))
    main_run = next(r for r in reports if not r["implicit_run"])
    lone = next(r for r in reports if r["implicit_run"])
    assert [e["span_id"] for e in lone["timeline"]] == [_hex(orphan["spanId"])]
    notes = " ".join(main_run["notes"])
    assert "parent that is not in the trace" in notes and "clock skew" in notes
    assert main_run["fault_origin"]["flag"] == "ENTITY_HALLUCINATION"
    assert next(e for e in main_run["timeline"] if e["span_id"] == _hex(confirm["spanId"]))["duration_ms"] == 0
    assert [b["tool"] for b in main_run["blast_radius"]] == ["orders.confirm"]


@pytest.mark.parametrize("damage", ["truncated", "mixed", "empty", "missing", "garbage"])
def test_bad_input_exits_2_with_a_message_and_no_traceback(
    damage: str, incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = incident_file.read_bytes()
    path = tmp_path / "bad.jsonl"
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "mixed":
        path.write_bytes(data + b'{"resourceMetrics": []}\n')
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "garbage":
        path = tmp_path / "bad.bin"
        path.write_bytes(b"\x00\xff" * 100)
    assert main(["forensics", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert str(path) in err


def test_too_many_spans_is_refused_with_the_limit(incident_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["forensics", str(incident_file), "--max-spans", "3"]) == 2
    assert "more than 3 spans" in capsys.readouterr().err


def test_trace_filter_and_unknown_trace(incident_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [report] = _json(capsys, str(incident_file))
    assert len(_json(capsys, str(incident_file), "--trace", report["trace_id"])) == 1
    assert main(["forensics", str(incident_file), "--trace", "ab" * 16]) == 2
    assert "no trace " + "ab" * 16 in capsys.readouterr().err


def test_hostile_span_strings_are_redacted_and_defanged(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"
    spans = _spans_of(incident_file)
    tool = next(s for s in spans if s["name"] == "execute_tool orders.confirm")
    tool["name"] = f"execute_tool orders.confirm \x1b[2J\x1b]0;pwned\x07 {secret} <script>alert(1)</script>"
    path = _write(tmp_path / "hostile.json", spans)
    assert main(["forensics", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and secret not in out
    [report] = _json(capsys, str(path))
    assert secret not in json.dumps(report)


def test_protobuf_and_base64_json_read_alike(
    incident_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [expected] = _json(capsys, str(incident_file))
    merged = ExportTraceServiceRequest()
    for line in incident_file.read_text().splitlines():
        part = ExportTraceServiceRequest()
        json_format.Parse(line, part)
        merged.resource_spans.extend(part.resource_spans)
    pb = tmp_path / "trace.pb"
    pb.write_bytes(merged.SerializeToString())
    [got] = _json(capsys, str(pb))
    assert got["fault_origin"] == expected["fault_origin"]
    assert got["cascade"] == expected["cascade"] and got["blast_radius"] == expected["blast_radius"]


def test_long_reads_show_a_span_counter_on_stderr(incident_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agentwatch.config import load_config
    from agentwatch.engine.engine import Engine
    from agentwatch.forensics.analysis import analyze_spans
    from agentwatch.forensics.reader import read_source

    reports = analyze_spans(read_source(str(incident_file)), Engine(load_config(None)), progress=True, progress_every=3)
    assert len(reports) == 1
    err = capsys.readouterr().err
    assert "read 3 spans ..." in err and "read 6 spans ..." in err and err.rstrip().endswith("read 8 spans.")
