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
        ({"http": {"body_timeout_seconds": "30s"}}, "receivers.http.body_timeout_seconds must be a finite number"),
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


# --------------------------------------------------------------------------- one strict schema

BASE = {"exporter": {"endpoint": "x:1"}}


def _with(**sections):
    data = {"exporter": {"endpoint": "x:1"}}
    for name, value in sections.items():
        if name == "exporter":
            data["exporter"] = {"endpoint": "x:1", **value}
        else:
            data[name] = value
    return data


# (config, the dotted key the error must name, the suggestion it must make or None)
BAD_COLLECTOR = [
    (_with(decision={"hard_timeout_seconds": float("nan")}), "decision.hard_timeout_seconds", None),
    (_with(decision={"hard_timeout_seconds": float("inf")}), "decision.hard_timeout_seconds", None),
    (_with(decision={"hard_timeout_seconds": 1e12}), "decision.hard_timeout_seconds", None),
    (_with(decision={"idle_timeout_seconds": -1}), "decision.idle_timeout_seconds", None),
    (_with(decision={"idle_timeout_seconds": 0}), "decision.idle_timeout_seconds", None),
    (_with(decision={"straggler_delay_ms": "500"}), "decision.straggler_delay_ms", None),
    (_with(decision={"straggler_delay_ms": 1.5}), "decision.straggler_delay_ms", None),
    (_with(decision={"verdict_cache_size": -1}), "decision.verdict_cache_size", None),
    (_with(decision={"hard_timeout_second": 5}), "decision.hard_timeout_second", "hard_timeout_seconds"),
    (_with(limits={"max_traces": True}), "limits.max_traces", None),
    (_with(limits={"max_bytes": 10}), "limits.max_bytes", None),
    (_with(limits={"max_span": 10}), "limits.max_span", "max_spans"),
    (_with(exporter={"timeout_seconds": float("nan")}), "exporter.timeout_seconds", None),
    (_with(exporter={"insecure": "false"}), "exporter.insecure", None),
    (_with(exporter={"compression": "gzp"}), "exporter.compression", "gzip"),
    (_with(exporter={"protocl": "grpc"}), "exporter.protocl", "protocol"),
    (_with(exporter={"queue": {"max_batch": 3}}), "exporter.queue.max_batch", "max_batches"),
    (_with(exporter={"retry": {"initial_backoff_ms": 0}}), "exporter.retry.initial_backoff_ms", None),
    (_with(exporter={"retry": {"max_elapsed_seconds": -1}}), "exporter.retry.max_elapsed_seconds", None),
    (_with(exporter={"headers": {"x-tenant": "acme\r\nx-evil: 1"}}), "exporter.headers.x-tenant", None),
    (_with(exporter={"headers": {"x-tenant": "a\nb"}}), "exporter.headers.x-tenant", None),
    (_with(exporter={"headers": {"x-tenant": "a\x00b"}}), "exporter.headers.x-tenant", None),
    (_with(exporter={"headers": {"x-tenant": "caf\u00e9"}}), "exporter.headers.x-tenant", None),
    (_with(exporter={"headers": {"x-tenant": 42}}), "exporter.headers.x-tenant", None),
    (_with(exporter={"headers": {"bad name": "v"}}), "exporter.headers", None),
    (_with(receivers={"grpc": {"max_message_byte": 5}}), "receivers.grpc.max_message_byte", "max_message_bytes"),
    (_with(receivers={"http": {"max_body_bytes": 0}}), "receivers.http.max_body_bytes", None),
    (_with(receivers={"htp": {}}), "receivers.htp", "http"),
    (_with(receivers={"grpc": {"keepalive_time_seconds": float("nan")}}),
     "receivers.grpc.keepalive_time_seconds", None),
    (_with(receivers={"grpc": {"workers": 0}}), "receivers.grpc.workers", None),
    (_with(receivers={"http": {"max_connection": 5}}), "receivers.http.max_connection", "max_connections"),
    (_with(receivers={"http": {"max_body_bytes": 2048, "max_inflight_bytes": 1024}}),
     "receivers.http.max_inflight_bytes", None),
    (_with(buffer={"journal_dri": "/j"}), "buffer.journal_dri", "journal_dir"),
    (_with(buffer={"journal_dir": ""}), "buffer.journal_dir", None),
    (_with(buffer={"journal_dir": " "}), "buffer.journal_dir", None),
    (_with(buffer={"journal_dir": 3}), "buffer.journal_dir", None),
    (_with(buffer={"journal_sync": "fsyn"}), "buffer.journal_sync", "fsync"),
    (_with(buffer={"journal_sync": True}), "buffer.journal_sync", None),
    (_with(buffer={"journal_max_bytes": 1000}), "buffer.journal_max_bytes", None),
    (_with(buffer={"journal_max_bytes": "1GB"}), "buffer.journal_max_bytes", None),
    (_with(buffer={"journal_segment_bytes": 1024}), "buffer.journal_segment_bytes", None),
    (_with(buffer={"journal_max_bytes": 2097152, "journal_segment_bytes": 2097152}),
     "buffer.journal_segment_bytes", None),
    (_with(health={"endpoit": "0.0.0.0:1"}), "health.endpoit", "endpoint"),
    (_with(telemetry={"log_level": "verbose"}), "telemetry.log_level", None),
    (_with(telemetry={"metrics_exporter": "otpl"}), "telemetry.metrics_exporter", "otlp"),
    (_with(detectoin={}), "detectoin", "detection"),
    # the detection section: the docs always said an unknown key there is an error
    (_with(detection={"budgets": {"max_steps": "2"}}), "detection.budgets.max_steps", None),
    (_with(detection={"budget": {"max_steps": 2}}), "detection.budget", "budgets"),
    (_with(detection={"agent": {"budgets": {"enforced": True}}}), "detection.agent.budgets.enforced", "enforce"),
    (_with(detection={"agent": {"budgets": {}}, "loop_detection": {}}), "detection.loop_detection", None),
    (_with(detection={"anomaly": {"token_spike_factor": float("nan")}}), "detection.anomaly.token_spike_factor", None),
    (_with(detection={"tools": {"retries": {"max_attempts": 2}}}), "detection.tools.retries", None),
    (_with(detection_config=""), "detection_config", None),
]


@pytest.mark.parametrize(("data", "key", "suggestion"), BAD_COLLECTOR)
def test_collector_table_names_the_key(data, key, suggestion):
    with pytest.raises(ConfigError) as info:
        build_collector_config(data, source="c.yaml", env={})
    message = str(info.value)
    assert message.startswith("c.yaml: ") and key in message, message
    if suggestion is not None:
        assert f"did you mean '{suggestion}'?" in message, message


def test_gateway_keys_in_detection_say_where_they_belong():
    data = _with(detection={"agent": {"safe_mode": {"enabled": False}}})
    with pytest.raises(ConfigError, match=r"detection\.safe_mode: the tool gateway acts in the instrumented process"):
        build_collector_config(data, source="c.yaml", env={})


def test_a_shared_app_config_file_with_gateway_keys_is_accepted(tmp_path):
    shared = tmp_path / "agentwatch.yaml"
    shared.write_text("agent:\n  tools:\n    retries: {max_attempts: 2}\n  anomaly: {stop_on: [critical]}\n")
    config = build_collector_config(_with(detection_config=str(shared)), source="c.yaml", env={})
    assert config.detection.gateway.retries.max_attempts == 2


def test_header_from_an_environment_variable_with_a_line_break():
    data = _with(exporter={"headers": {"authorization": "Bearer ${env:TOKEN}"}})
    with pytest.raises(ConfigError) as info:
        build_collector_config(data, source="c.yaml", env={"TOKEN": "abc\r\nx-injected: 1"})
    assert "exporter.headers.authorization" in str(info.value)
    assert "abc" not in str(info.value)  # the secret is not echoed
    config = build_collector_config(data, source="c.yaml", env={"TOKEN": "abc"})
    assert config.exporter.headers == {"authorization": "Bearer abc"}


def test_detection_config_file_is_checked_and_named(tmp_path):
    (tmp_path / "agentwatch.yaml").write_text("agent:\n  budgets: {max_stepz: 7}\n")
    path = _write(tmp_path, "exporter: {endpoint: 'x:1'}\ndetection_config: agentwatch.yaml\n")
    with pytest.raises(ConfigError) as info:
        load_collector_config(path, env={})
    message = str(info.value)
    assert str(tmp_path / "agentwatch.yaml") in message and "agent.budgets.max_stepz" in message
    assert "did you mean 'max_steps'?" in message


def test_yaml_file_nan_is_rejected_with_file_and_key(tmp_path):
    path = _write(tmp_path, "exporter: {endpoint: 'x:1'}\ndecision: {hard_timeout_seconds: .nan}\n")
    with pytest.raises(ConfigError) as info:
        load_collector_config(path, env={})
    assert str(path) in str(info.value) and "decision.hard_timeout_seconds" in str(info.value)


def test_receiver_limits_default_and_load():
    config = build_collector_config(
        _with(receivers={"grpc": {"workers": 2, "keepalive_time_seconds": 0}, "http": {"max_body_bytes": 128 << 20}}),
        env={},
    )
    assert config.grpc is not None and config.grpc.workers == 2 and config.grpc.keepalive_time_seconds == 0.0
    assert config.grpc.max_concurrent_rpcs == 128
    assert config.http is not None and config.http.max_inflight_bytes == 128 << 20  # at least one body


def test_valid_values_keep_their_types():
    config = build_collector_config(
        _with(decision={"hard_timeout_seconds": 90, "straggler_delay_ms": 0}, exporter={"timeout_seconds": 5}),
        env={},
    )
    assert config.decision.hard_timeout_seconds == 90.0 and isinstance(config.decision.hard_timeout_seconds, float)
    assert config.exporter.timeout_seconds == 5.0 and isinstance(config.exporter.timeout_seconds, float)
    assert config.decision.straggler_delay_ms == 0
    full = build_collector_config({"exporter": {"endpoint": "x:1"}, "health": None, "decision": None}, env={})
    assert full.health is not None and full.health.port == 13133 and full.decision.hard_timeout_seconds == 30.0


def test_header_errors_never_echo_the_value():
    data = _with(exporter={"headers": {"authorization": "Bearer s3cr3t\n"}})
    with pytest.raises(ConfigError) as info:
        build_collector_config(data, source="c.yaml", env={})
    assert "exporter.headers.authorization" in str(info.value) and "s3cr3t" not in str(info.value)


def test_the_journal_is_off_by_default_and_its_directory_is_relative_to_the_file(tmp_path):
    default = build_collector_config({"exporter": {"endpoint": "x:1"}}, env={})
    assert default.buffer.journal_dir is None and default.buffer.journal_sync == "write"
    path = tmp_path / "collector.yaml"
    path.write_text("exporter: {endpoint: 'x:1'}\nbuffer: {journal_dir: journal, journal_sync: fsync}\n")
    config = load_collector_config(path, env={})
    assert config.buffer.journal_dir == str(tmp_path / "journal") and config.buffer.journal_sync == "fsync"
    assert config.buffer.journal_max_bytes == 1 << 30 and config.buffer.journal_segment_bytes == 16 << 20
