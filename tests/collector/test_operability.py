"""What operators see: downstream partial successes kept in range, forwarding failing and recovering
in the log, every known counter series from start-up, bind errors that name the endpoint."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import urllib.request

import grpc
import pytest

from agentwatch.collector.telemetry import COUNTERS, Stats

from .helpers import agent_run, capture, export, grpc_exporter, wait_until


def _counters_never_negative(collector) -> None:
    for name, series in collector.stats.counters().items():
        assert all(value >= 0 for value in series.values()), (name, series)


@pytest.mark.parametrize("claimed", [10**12, 2**63 - 1, -5, -(2**63)])
def test_downstream_partial_success_is_clamped(grpc_sink, collectors, claimed):
    grpc_sink.rejected = claimed
    collector = collectors(grpc_sink.target, decision={"straggler_delay_ms": 20})
    spans = capture(agent_run)
    export(grpc_exporter(collector), spans)
    wait_until(lambda: collector.stats.get("export_requests", "success") >= 1)
    stats = collector.stats
    sent = len(spans)
    if claimed > 0:  # more than was sent: all of it, no more
        assert stats.get("spans_dropped", "rejected_downstream") == sent
        assert stats.get("spans_forwarded") == 0
    else:  # a negative count rejects nothing
        assert stats.get("spans_dropped", "rejected_downstream") == 0
        assert stats.get("spans_forwarded") == sent
    _counters_never_negative(collector)


def test_counters_only_grow():
    stats = Stats()
    stats.add("spans_forwarded", -7)
    stats.add_many("spans_dropped", [("shutdown", -3), ("export_failed", 2)])
    assert stats.get("spans_forwarded") == 0
    assert stats.get("spans_dropped", "shutdown") == 0 and stats.get("spans_dropped", "export_failed") == 2


def test_forwarding_failure_and_recovery_are_logged_once(grpc_sink, collectors, caplog):
    caplog.set_level(logging.INFO, logger="agentwatch.collector")
    grpc_sink.permanent = grpc.StatusCode.UNAVAILABLE
    collector = collectors(grpc_sink.target, decision={"straggler_delay_ms": 20})
    spans = capture(agent_run)
    export(grpc_exporter(collector), spans)
    wait_until(lambda: collector.stats.get("export_requests", "retry") >= 3)
    grpc_sink.permanent = None
    wait_until(lambda: grpc_sink.count() == len(spans))
    wait_until(lambda: any("recovered" in r.getMessage() for r in caplog.records))
    failing = [r for r in caplog.records if "is failing" in r.getMessage()]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failing) == 1 and failing[0].levelno == logging.WARNING
    assert grpc_sink.target in failing[0].getMessage() and "UNAVAILABLE" in failing[0].getMessage()
    assert len(recovered) == 1 and "failed attempts" in recovered[0].getMessage()


def test_labelled_counters_exist_from_start_up(grpc_sink, collectors):
    collector = collectors(grpc_sink.target)
    url = f"http://127.0.0.1:{collector.health_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for d in COUNTERS:
        metric = f"agentwatch_collector_{d.name}_total"
        for label in d.labels:
            assert f'{metric}{{{d.label}="{label}"}} 0' in text
        if d.label is None:
            assert f"{metric} 0" in text
    assert 'agentwatch_collector_findings_total{flag="LOOP_DETECTED"} 0' in text
    assert 'agentwatch_collector_requests_failed_total{reason="malformed"} 0' in text


def _run_collector(tmp_path, receivers: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "collector.yaml"
    config.write_text(
        f"receivers:\n{receivers}\nexporter: {{endpoint: '127.0.0.1:9'}}\nhealth: {{endpoint: '127.0.0.1:0'}}\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "agentwatch.collector", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("receiver", ["http", "grpc"])
def test_port_in_use_names_the_endpoint_and_exits_non_zero(tmp_path, receiver):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "grpc" if receiver == "http" else "http"
        result = _run_collector(
            tmp_path,
            f"  {receiver}: {{endpoint: '127.0.0.1:{port}'}}\n  {other}: {{endpoint: '127.0.0.1:0'}}",
        )
    assert result.returncode == 1
    name = "OTLP/HTTP" if receiver == "http" else "OTLP/gRPC"
    assert name in result.stderr and f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_start_up_names_the_config_files_read(tmp_path, monkeypatch):
    detection = tmp_path / "detection.yaml"
    detection.write_text("agent:\n  anomaly:\n    log_findings: false\n")
    config = tmp_path / "collector.yaml"
    config.write_text(
        "receivers:\n  http: {endpoint: '127.0.0.1:0'}\n"
        "exporter: {endpoint: '127.0.0.1:9'}\nhealth: {endpoint: '127.0.0.1:0'}\n"
        f"detection_config: {detection.name}\n"
    )
    from agentwatch.collector import Collector, load_collector_config

    loaded = load_collector_config(config, env={})
    assert loaded.files == (str(config), str(detection))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("agentwatch.collector")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        collector = Collector(loaded).start()
        collector.shutdown(timeout=1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    text = "\n".join(r.getMessage() for r in records)
    assert f"configuration read from {config}, {detection}" in text
