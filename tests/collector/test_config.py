"""The collector's configuration: agreed keys, defaults, clear errors, exit code 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from agentwatch.collector import build_collector_config, load_collector_config
from agentwatch.errors import ConfigError


def _write(tmp_path, text):
    path = tmp_path / "collector.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_documented_example_loads_with_defaults(tmp_path):
    path = _write(
        tmp_path,
        """
        receivers:
          grpc: {endpoint: "0.0.0.0:4317", max_message_bytes: 4194304}
          http: {endpoint: "0.0.0.0:4318", max_body_bytes: 4194304}
        exporter:
          protocol: grpc
          endpoint: "otelcol:4317"
          headers: {x-tenant: "${env:TENANT}"}
          insecure: true
          compression: gzip
          timeout_seconds: 10
          retry: {initial_backoff_ms: 250, max_backoff_ms: 5000, max_elapsed_seconds: 300}
          queue: {max_batches: 1000, max_bytes: 67108864}
        decision:
          straggler_delay_ms: 500
          hard_timeout_seconds: 30
          idle_timeout_seconds: 10
          verdict_cache_size: 50000
        limits: {max_traces: 50000, max_spans: 500000, max_bytes: 268435456}
        health: {endpoint: "0.0.0.0:13133"}
        telemetry: {metrics_exporter: none}
        detection:
          agent:
            loop_detection: {repeated_calls_threshold: 4}
            tools: {deny: ["payment.*"]}
    """,
    )
    config = load_collector_config(path, env={"TENANT": "acme"})
    assert config.grpc is not None and config.grpc.endpoint.port == 4317
    assert config.http is not None and config.http.max_body_bytes == 4194304
    assert config.exporter.headers == {"x-tenant": "acme"}
    assert config.decision.straggler_delay_ms == 500
    assert config.decision.retain_bytes == 64 * 1024 * 1024  # an added key, defaulted
    assert config.health is not None and config.health.port == 13133
    assert config.detection.loop.repeated_calls_threshold == 4
    assert config.detection.tools.deny == ("payment.*",)


def test_minimal_config_and_defaults():
    config = build_collector_config({"exporter": {"endpoint": "tempo:4317"}}, env={})
    assert config.grpc is not None and config.http is not None  # no receivers section: both on
    assert config.exporter.protocol == "grpc" and config.exporter.compression == "none"
    assert config.limits.max_traces == 50_000 and config.decision.idle_timeout_seconds == 10
    only_http = build_collector_config({"receivers": {"http": None}, "exporter": {"endpoint": "x:1"}}, env={})
    assert only_http.grpc is None and only_http.http is not None


def test_detection_from_a_file_and_flat_form(tmp_path):
    (tmp_path / "agentwatch.yaml").write_text("agent:\n  budgets: {max_steps: 7}\n")
    path = _write(
        tmp_path,
        """
        exporter: {endpoint: "x:1"}
        detection_config: agentwatch.yaml
        detection: {loop_detection: {repeated_calls_threshold: 5}}
    """,
    )
    config = load_collector_config(path, env={})
    assert config.detection.budget.max_steps == 7
    assert config.detection.loop.repeated_calls_threshold == 5


@pytest.mark.parametrize(
    "data,fragment",
    [
        ({"exporter": {"endpoint": "x:1"}, "recievers": {}}, "unknown key 'recievers'"),
        ({"exporter": {"endpoint": "x:1", "retry": {"max_backof_ms": 1}}}, "'exporter.retry.max_backof_ms'"),
        ({"exporter": {}}, "exporter.endpoint is required"),
        ({"exporter": {"endpoint": "x:1", "protocol": "thrift"}}, "exporter.protocol must be one of"),
        ({"exporter": {"endpoint": "tempo:4318", "protocol": "http/protobuf"}}, "http:// or https:// URL"),
        ({"exporter": {"endpoint": "x:1"}, "limits": {"max_traces": 0}}, "limits.max_traces must be >= 1"),
        ({"exporter": {"endpoint": "x:1"}, "decision": {"straggler_delay_ms": "fast"}}, "must be an integer"),
        ({"exporter": {"endpoint": "x:1"}, "receivers": {"grpc": {"endpoint": "4317"}}}, "host:port"),
        ({"exporter": {"endpoint": "x:1"}, "receivers": {}}, "must enable grpc, http or both"),
        ({"exporter": {"endpoint": "x:1", "headers": {"a": "${env:NOPE}"}}}, "${NOPE}"),
        (
            {"exporter": {"endpoint": "x:1"}, "detection": {"anomaly": {"disabled": ["NOT_A_FLAG"]}}},
            "detection",
        ),
    ],
)
def test_invalid_configs_name_the_key(data, fragment):
    with pytest.raises(ConfigError) as info:
        build_collector_config(data, source="c.yaml", env={})
    assert fragment in str(info.value)


def test_cli_exit_code_2_with_line_for_broken_yaml(tmp_path):
    path = _write(
        tmp_path,
        """
        exporter:
          endpoint: "x:1"
        decision: {straggler_delay_ms: 5
        limits: {}
    """,
    )
    result = subprocess.run(
        [sys.executable, "-m", "agentwatch.collector", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not valid YAML at line" in result.stderr and str(path) in result.stderr
    path.write_text("exporter: {endpoint: 'x:1'}\nlimits: {max_trace: 3}\n")
    result = subprocess.run(
        [sys.executable, "-m", "agentwatch.collector", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "unknown key 'limits.max_trace'" in result.stderr


def test_receiver_limit_keys_and_their_defaults():
    config = build_collector_config({"exporter": {"endpoint": "x:1"}}, env={})
    http, grpc = config.http, config.grpc
    assert http is not None and grpc is not None
    assert (http.max_connections, http.header_timeout_seconds, http.body_timeout_seconds) == (256, 10.0, 30.0)
    assert http.max_inflight_bytes == 64 * 1024 * 1024 and http.idle_timeout_seconds == 60.0
    assert (grpc.max_concurrent_rpcs, grpc.max_concurrent_streams, grpc.workers) == (128, 100, 8)
    assert grpc.max_connection_idle_seconds == 300.0 and grpc.max_connection_age_seconds == 0.0
    # a large max_body_bytes raises the in-flight default with it (configs that set it keep working)
    big = build_collector_config(
        {"exporter": {"endpoint": "x:1"}, "receivers": {"http": {"max_body_bytes": 100 * 1024 * 1024}}}, env={}
    )
    assert big.http is not None and big.http.max_inflight_bytes == 100 * 1024 * 1024
    set_all = build_collector_config(
        {
            "exporter": {"endpoint": "x:1"},
            "receivers": {
                "http": {"max_connections": 5, "header_timeout_seconds": 0.5, "max_inflight_bytes": 8 << 20},
                "grpc": {"max_connection_age_seconds": 600, "keepalive_time_seconds": 0, "workers": 2},
            },
        },
        env={},
    )
    assert set_all.http is not None and set_all.http.max_connections == 5
    assert set_all.grpc is not None and set_all.grpc.max_connection_age_seconds == 600.0


@pytest.mark.parametrize(
    "receivers,fragment",
    [
        ({"http": {"max_connections": 0}}, "receivers.http.max_connections must be >= 1"),
        ({"http": {"header_timeout_seconds": 0}}, "receivers.http.header_timeout_seconds must be > 0"),
        ({"http": {"body_timeout_seconds": "30s"}}, "receivers.http.body_timeout_seconds must be a number"),
        ({"http": {"max_body_bytes": 2048, "max_inflight_bytes": 1024}}, "must be >= max_body_bytes"),
        ({"http": {"max_conections": 5}}, "unknown key 'receivers.http.max_conections'"),
        ({"grpc": {"max_concurrent_rpcs": 0}}, "receivers.grpc.max_concurrent_rpcs must be >= 1"),
        ({"grpc": {"max_connection_age_seconds": -1}}, "receivers.grpc.max_connection_age_seconds must be >= 0"),
        ({"grpc": {"keepalive_timeout_seconds": 0}}, "receivers.grpc.keepalive_timeout_seconds must be > 0"),
    ],
)
def test_receiver_limit_keys_are_checked(receivers, fragment):
    with pytest.raises(ConfigError) as info:
        build_collector_config({"exporter": {"endpoint": "x:1"}, "receivers": receivers}, source="c.yaml", env={})
    assert fragment in str(info.value)
