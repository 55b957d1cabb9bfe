"""Configuration precedence (argument > environment > file > defaults) and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentwatch.config import load_config
from agentwatch.errors import ConfigError

SEED_004 = """
agent:
  budgets:
    max_steps: 25
    max_seconds: 60
    max_tool_calls: 40
    max_usd: 1.0
  loop_detection:
    repeated_calls_threshold: 3
    no_progress_threshold: 6
  tools:
    allow: ["search.read", "kb.read", "ticket.create"]
    deny: ["db.write", "payment.*"]
    idempotency_required: ["ticket.create"]
  logging:
    redact: ["authorization", "cookie", "token", "api_key"]
"""


def test_defaults_impose_no_budget() -> None:
    cfg = load_config(env={})
    assert cfg.budget.is_empty()
    assert cfg.loop.repeated_calls_threshold == 3
    assert cfg.tools.denial("anything") is None


def test_seed_004_file_shape(tmp_path: Path) -> None:
    path = tmp_path / "agentwatch.yaml"
    path.write_text(SEED_004)
    cfg = load_config(env={"AGENTWATCH_CONFIG": str(path)})
    assert cfg.budget.max_steps == 25 and cfg.budget.max_usd == 1.0
    assert cfg.tools.denial("payment.refund") is not None
    assert cfg.tools.denial("search.read") is None
    assert "not in the allow list" in (cfg.tools.denial("email.send") or "")
    assert cfg.tools.is_side_effect("ticket.create")
    # the file's keys add to the built-in ones (password stays redacted)
    assert {"authorization", "cookie", "token", "api_key", "password", "secret"} <= set(cfg.redact_keys)


def test_precedence(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(SEED_004)
    env = {"AGENTWATCH_CONFIG": str(path), "AGENTWATCH_MAX_STEPS": "10", "AGENTWATCH_TOOLS_DENY": "x.*, y"}
    cfg = load_config({"agent": {"budgets": {"max_steps": 5}}}, env=env)
    assert cfg.budget.max_steps == 5  # argument wins
    assert cfg.budget.max_seconds == 60  # file value kept
    assert cfg.tools.deny == ("x.*", "y")  # environment over file
    assert load_config(env=env).budget.max_steps == 10


def test_local_file_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "agentwatch.yaml").write_text("agent: {budgets: {max_tool_calls: 7}}")
    assert load_config(env={}).budget.max_tool_calls == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("agent: [unclosed", "not valid YAML at line 1"),
        ("- a list", "must hold a mapping"),
        ("agent: {budgets: {max_stepz: 3}}", "unknown key 'agent.budgets.max_stepz'"),
        ("agent: {loop_detection: {repeated_calls_threshold: 0}}", "must be >= 2"),
        ("agent: {anomaly: {disabled: [NOT_A_FLAG]}}", "agent.anomaly.disabled[0] must be one of"),
        ("agent: {entities: {patterns: [{type: x, regex: '('}]}}", "regex is not a valid regular expression"),
        ("agent: {tools: {allow: search.read}}", "agent.tools.allow must be a list"),
    ],
)
def test_broken_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(env={"AGENTWATCH_CONFIG": str(path)})
    assert message in str(caught.value)


def test_bad_environment_value() -> None:
    with pytest.raises(ConfigError, match="AGENTWATCH_MAX_STEPS"):
        load_config(env={"AGENTWATCH_MAX_STEPS": "lots"})


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(env={"AGENTWATCH_CONFIG": "/nonexistent/agentwatch.yaml"})


# --------------------------------------------------------------------------- one strict schema

import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from importlib import resources  # noqa: E402
from typing import Any  # noqa: E402

import yaml  # noqa: E402
from jsonschema import Draft202012Validator  # noqa: E402

import agentwatch  # noqa: E402
from agentwatch.config import ENV_VARIABLES, OTHER_ENV_VARIABLES  # noqa: E402
from agentwatch.config_schema import AGENT_SCHEMA, COLLECTOR_SCHEMA, NOT_IMPLEMENTED, problems  # noqa: E402
from agentwatch.semconv import Flag, Severity  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# (YAML text, the dotted key the error must name, the suggestion it must make or None)
BAD_YAML = [
    # what was seen: a quoted number or boolean silently disabled an enforced budget
    ('agent: {budgets: {max_steps: "2", enforce: true}}', "agent.budgets.max_steps", None),
    ("agent: {budgets: {max_steps: 2, enforce: 'false'}}", "agent.budgets.enforce", None),
    ("agent: {budgets: {max_usd: -1}}", "agent.budgets.max_usd", None),
    ("agent: {budgets: {max_usd: .nan}}", "agent.budgets.max_usd", None),
    ("agent: {budgets: {max_seconds: 1e999}}", "agent.budgets.max_seconds", None),
    ("agent: {budgets: {max_seconds: -.inf}}", "agent.budgets.max_seconds", None),
    ("agent: {budgets: {max_steps: ten}}", "agent.budgets.max_steps", None),
    ("agent: {budgets: {max_steps: 0}}", "agent.budgets.max_steps", None),
    ("agent: {budgets: {max_steps: 2.5}}", "agent.budgets.max_steps", None),
    ("agent: {budgets: {max_tokens: true}}", "agent.budgets.max_tokens", None),
    # typos and unknown keys, at every level
    ("agnet: {budgets: {max_steps: 3}}", "agnet", "agent"),
    ("budgets: {max_steps: 3}", "budgets", "agent.budgets"),
    ("agent: {budget: {max_steps: 3}}", "agent.budget", "budgets"),
    ("agent: {budgets: {max_steps: 3, enforced: true}}", "agent.budgets.enforced", "enforce"),
    ("agent: {loop_detection: {repeated_call_threshold: 3}}", "agent.loop_detection.repeated_call_threshold",
     "repeated_calls_threshold"),
    ("agent: {tools: {alow: [a]}}", "agent.tools.alow", "allow"),
    ("agent: {tools: {enforce: 'yes'}}", "agent.tools.enforce", None),
    ("agent: {tools: {deny: [a, '']}}", "agent.tools.deny[1]", None),
    ("agent: {anomaly: {token_spike_factr: 3}}", "agent.anomaly.token_spike_factr", "token_spike_factor"),
    ("agent: {anomaly: {token_spike_factor: .nan}}", "agent.anomaly.token_spike_factor", None),
    ("agent: {anomaly: {token_spike_factor: 0.5}}", "agent.anomaly.token_spike_factor", None),
    ("agent: {anomaly: {token_spike_min_history: -1}}", "agent.anomaly.token_spike_min_history", None),
    ("agent: {anomaly: {inline: 'false'}}", "agent.anomaly.inline", None),
    ("agent: {anomaly: {disabled: [TOKEN_SPIK]}}", "agent.anomaly.disabled[0]", "TOKEN_SPIKE"),
    ("agent: {anomaly: {severity: {TOKEN_SPIKE: hgh}}}", "agent.anomaly.severity.TOKEN_SPIKE", "high"),
    ("agent: {anomaly: {severity: {TOKEN_SPIK: low}}}", "agent.anomaly.severity", "TOKEN_SPIKE"),
    ("agent: {entities: {prefix: {cust: customer}}}", "agent.entities.prefix", "prefixes"),
    ("agent: {entities: {patterns: [{type: x, regx: 'a'}]}}", "agent.entities.patterns[0].regx", "regex"),
    ("agent: {entities: {patterns: [{type: x}]}}", "agent.entities.patterns[0].regex", None),
    ("agent: {limits: {max_run: 5}}", "agent.limits.max_run", "max_runs"),
    ("agent: {limits: {run_ttl_seconds: 0}}", "agent.limits.run_ttl_seconds", None),
    ("agent: {limits: {run_ttl_seconds: .inf}}", "agent.limits.run_ttl_seconds", None),
    ("agent: {logging: {redact: [authorization, 7]}}", "agent.logging.redact[1]", None),
    ("agent: {logging: {redact: authorization}}", "agent.logging.redact", None),
    ("agent: {logging: {redact: ['']}}", "agent.logging.redact[0]", None),
    ("agent: {logging: {max_content_chars: -5}}", "agent.logging.max_content_chars", None),
    ("agent: {prices: {my-model: {input: 1, outptu: 2}}}", "agent.prices.my-model.outptu", "output"),
    ("agent: {prices: {my-model: {input: -1}}}", "agent.prices.my-model.input", None),
    ("agent: {prices: {my-model: 3}}", "agent.prices.my-model", None),
]


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agentwatch.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(env={"AGENTWATCH_CONFIG": str(path)})
    message = str(caught.value)
    assert str(path) in message, message
    return message


@pytest.mark.parametrize(("text", "key", "suggestion"), BAD_YAML)
def test_yaml_table_names_the_key(tmp_path: Path, text: str, key: str, suggestion: str | None) -> None:
    message = _error(tmp_path, text)
    assert re.search(rf"(^|[\s']){re.escape(key)}($|[\s'])", message), message
    if suggestion is not None:
        assert f"did you mean '{suggestion}'?" in message, message


@pytest.mark.parametrize(("text", "key", "suggestion"), BAD_YAML)
def test_api_mapping_table_names_the_key(text: str, key: str, suggestion: str | None) -> None:
    """The same table through config= (agentwatch.instrument, AnomalyProcessor, AnomalyExporter)."""
    with pytest.raises(ConfigError) as caught:
        load_config(yaml.safe_load(text), env={})
    message = str(caught.value)
    assert message.startswith("config argument:") and key in message, message
    if suggestion is not None:
        assert f"did you mean '{suggestion}'?" in message


def test_every_problem_is_listed(tmp_path: Path) -> None:
    message = _error(tmp_path, "agent: {budgets: {max_steps: '2', enforced: true}, tools: {enforce: 'false'}}")
    assert "3 problems" in message
    for key in ("agent.budgets.max_steps", "agent.budgets.enforced", "agent.tools.enforce"):
        assert key in message
    assert "a quoted number" in message and "a quoted boolean" in message


SEED_004_FULL = """
agent:
  budgets: {max_steps: 25, max_seconds: 60, max_tool_calls: 40, max_usd: 1.0}
  loop_detection: {repeated_calls_threshold: 3, no_progress_threshold: 6}
  tools:
    allow: ["search.read", "kb.read", "ticket.create"]
    idempotency_required: ["ticket.create"]
    timeouts_s: {default: 10, "search.read": 5, "ticket.create": 15}
    retries: {max_attempts: 2, retryable_status: [429, 500, 503, 504], backoff_ms: [250, 750, 2000]}
    circuit_breakers: {enabled: true, failure_threshold: 5, window_seconds: 60}
  validation:
    input: {strict: true}
    output: {fail_closed: true}
  logging:
    level: "info"
    structured: true
    include: ["run_id", "tool", "args_hash", "elapsed_s", "status", "stop_reason", "cost_usd"]
    redact: ["authorization", "cookie", "token", "api_key"]
  safe_mode:
    enabled: false
    allowed_tools: ["search.read", "kb.read"]
  anomaly:
    stop_on: [critical]
"""

NOT_YET: list[str] = []  # every key of the schema is implemented


def test_seed_004_full_config_loads_and_every_key_lands(tmp_path: Path) -> None:
    """Seed 004's own safe-default config: every key is implemented and reaches the Config."""
    path = tmp_path / "agentwatch.yaml"
    path.write_text(SEED_004_FULL)
    config = load_config(str(path), env={})
    gw = config.gateway
    assert gw.timeout_for("ticket.create") == 15 and gw.timeout_for("other") == 10
    assert gw.retries.max_attempts == 2 and gw.retries.backoff_ms == (250, 750, 2000)
    assert gw.breakers.enabled and gw.breakers.failure_threshold == 5
    assert gw.input_strict and gw.output_fail_closed
    assert gw.safe_mode.allowed_tools == ("search.read", "kb.read") and not gw.safe_mode.enabled
    assert gw.stop_on_severities == {"critical"}
    assert gw.requires_idempotency("ticket.create")
    assert config.call_log is True and config.log_level == "info"
    assert config.call_log_include == ("run_id", "tool", "args_hash", "elapsed_s", "status", "stop_reason", "cost_usd")
    assert "password" in config.redact_keys and "cookie" in config.redact_keys


def test_unknown_structured_log_field_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, "agent:\n  logging: {structured: true, include: [run_id, tenant]}\n")
    assert "agent.logging.include" in message


def test_gateway_keys_are_in_the_published_schema_with_their_shape() -> None:
    """Editors know the keys (and their shape) even before they are implemented."""
    data = yaml.safe_load(SEED_004_FULL)
    schema = json.loads(resources.files("agentwatch").joinpath("data/agentwatch.schema.json").read_text())
    assert list(Draft202012Validator(schema).iter_errors(data)) == []
    bad = {"agent": {"tools": {"retries": {"max_attempt": 2}}}}
    assert [list(e.absolute_path) for e in Draft202012Validator(schema).iter_errors(bad)] == [
        ["agent", "tools", "retries"]
    ]


def test_not_implemented_marker_is_the_one_switch() -> None:
    """Each not-implemented key carries the marker and says so in its description; nothing else does."""
    marked: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get(NOT_IMPLEMENTED):
                marked.append(path)
                assert node["description"].startswith("(Not implemented yet in this version"), path
            elif "Not implemented" in str(node.get("description", "")):
                raise AssertionError(f"{path}: description says not implemented, marker missing")
            for key, value in node.items():
                walk(value, f"{path}.{key}" if key != "properties" else path)

    walk(json.loads(resources.files("agentwatch").joinpath("data/agentwatch.schema.json").read_text()), "")
    assert sorted(m.replace(".$defs.agent", "agent") for m in marked) == sorted(NOT_YET)


# (environment, the variable the error must name, the suggestion or None)
BAD_ENV = [
    ({"AGENTWATCH_ENFORCE": "maybe"}, "AGENTWATCH_ENFORCE", None),
    ({"AGENTWATCH_TOOLS_ENFORCE": "on"}, "AGENTWATCH_TOOLS_ENFORCE", None),
    ({"AGENTWATCH_MAX_STEPS": "ten"}, "AGENTWATCH_MAX_STEPS", None),
    ({"AGENTWATCH_MAX_STEPS": "2.5"}, "AGENTWATCH_MAX_STEPS", None),
    ({"AGENTWATCH_MAX_STEPS": "0"}, "AGENTWATCH_MAX_STEPS", None),
    ({"AGENTWATCH_MAX_STEPS": "-3"}, "AGENTWATCH_MAX_STEPS", None),
    ({"AGENTWATCH_MAX_USD": "-1"}, "AGENTWATCH_MAX_USD", None),
    ({"AGENTWATCH_MAX_USD": "nan"}, "AGENTWATCH_MAX_USD", None),
    ({"AGENTWATCH_MAX_SECONDS": "inf"}, "AGENTWATCH_MAX_SECONDS", None),
    ({"AGENTWATCH_MAX_SECONDS": "1e999"}, "AGENTWATCH_MAX_SECONDS", None),
    ({"AGENTWATCH_LOOP_THRESHOLD": "1"}, "AGENTWATCH_LOOP_THRESHOLD", None),
    ({"AGENTWATCH_MAX_CONTENT_CHARS": "0"}, "AGENTWATCH_MAX_CONTENT_CHARS", None),
    ({"AGENTWATCH_DISABLED_FLAGS": "TOKEN_SPIKE,LOOP_DETECTD"}, "AGENTWATCH_DISABLED_FLAGS", "LOOP_DETECTED"),
    ({"AGENTWATCH_MAX_STEP": "3"}, "AGENTWATCH_MAX_STEP", "AGENTWATCH_MAX_STEPS"),
    ({"AGENTWATCH_ENFORCED": "true"}, "AGENTWATCH_ENFORCED", "AGENTWATCH_ENFORCE"),
    ({"AGENTWATCH_BUDGET_USD": "1"}, "AGENTWATCH_BUDGET_USD", None),
    ({"AGENTWATCH_SAFE_MODE": "perhaps"}, "AGENTWATCH_SAFE_MODE", None),
]


@pytest.mark.parametrize(("env", "name", "suggestion"), BAD_ENV)
def test_environment_table_names_the_variable(env: dict[str, str], name: str, suggestion: str | None) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env=env)
    message = str(caught.value)
    assert name in message, message
    if suggestion is not None:
        assert suggestion in message and "did you mean" in message, message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("Yes", True), ("false", False), ("0", False), ("NO", False)],
)
def test_environment_booleans(raw: str, expected: bool) -> None:
    assert load_config(env={"AGENTWATCH_ENFORCE": raw, "AGENTWATCH_MAX_STEPS": "3"}).budget.enforce is expected


def test_environment_values_parse_strictly_and_empty_means_unset() -> None:
    cfg = load_config(env={"AGENTWATCH_MAX_STEPS": " 7 ", "AGENTWATCH_MAX_USD": "0.25", "AGENTWATCH_TOOLS_DENY": "",
                           "AGENTWATCH_PAGE_WEBHOOK_URL": "http://x", "AGENTWATCH_CONFIG": ""})
    assert cfg.budget.max_steps == 7 and cfg.budget.max_usd == 0.25 and cfg.tools.deny == ()


def test_every_agentwatch_variable_read_in_the_code_is_known() -> None:
    """A new AGENTWATCH_* variable read anywhere must be registered, or users setting it get a ConfigError."""
    known = ENV_VARIABLES.keys() | OTHER_ENV_VARIABLES
    found = set()
    for path in (REPO / "src" / "agentwatch").rglob("*.py"):
        found |= set(re.findall(r"[\"'](AGENTWATCH_[A-Z0-9_]+)[\"']", path.read_text("utf-8")))
    assert found <= known, sorted(found - known)


# (Budget keyword arguments, the field the error must name)
BAD_BUDGETS = [
    ({"max_steps": "2"}, "Budget.max_steps"),
    ({"max_steps": 2.0}, "Budget.max_steps"),
    ({"max_steps": True}, "Budget.max_steps"),
    ({"max_steps": 0}, "Budget.max_steps"),
    ({"max_tool_calls": -1}, "Budget.max_tool_calls"),
    ({"max_tokens": "lots"}, "Budget.max_tokens"),
    ({"max_unique_calls": 0}, "Budget.max_unique_calls"),
    ({"max_usd": -1}, "Budget.max_usd"),
    ({"max_usd": math.nan}, "Budget.max_usd"),
    ({"max_usd": "1.0"}, "Budget.max_usd"),
    ({"max_seconds": math.inf}, "Budget.max_seconds"),
    ({"max_seconds": 0}, "Budget.max_seconds"),
    ({"enforce": "false"}, "Budget.enforce"),
    ({"enforce": 1}, "Budget.enforce"),
]


@pytest.mark.parametrize(("kwargs", "name"), BAD_BUDGETS)
def test_budget_arguments_are_checked(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(agentwatch.ConfigError, match=re.escape(name)):
        agentwatch.Budget(**kwargs)


def test_budget_from_span_attributes_skips_invalid_values() -> None:
    """Span attributes are untrusted input, not configuration: invalid limits are dropped, never raised."""
    from agentwatch import semconv as sc

    attrs = {sc.BUDGET_MAX_STEPS: -1, sc.BUDGET_MAX_USD: math.nan, sc.BUDGET_MAX_SECONDS: 5.0,
             sc.BUDGET_MAX_TOOL_CALLS: 4.0, sc.BUDGET_ENFORCE: "true"}
    budget = agentwatch.Budget.from_attributes(attrs)
    assert budget == agentwatch.Budget(max_seconds=5.0, max_tool_calls=4, enforce=False)
    assert agentwatch.Budget.from_attributes({sc.BUDGET_MAX_STEPS: "2"}) is None


def test_valid_values_load_as_before(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(
        "agent:\n"
        "  budgets: {max_steps: 3.0, max_usd: 1, max_seconds: null, enforce: true}\n"
        "  tools:\n"  # a null section overrides nothing
        "  anomaly: {severity: {TOKEN_SPIKE: low}, disabled: [NO_PROGRESS]}\n"
        "  prices: {My-Model: {input: 1, output: 2}}\n"
    )
    cfg = load_config(env={"AGENTWATCH_CONFIG": str(path)})
    assert cfg.budget == agentwatch.Budget(max_steps=3, max_usd=1, enforce=True)
    assert isinstance(cfg.budget.max_steps, int)
    assert cfg.tools.idempotency_keys == ("idempotency_key", "idempotencyKey", "request_id", "dedupe_key")
    assert cfg.anomaly.severity == {"TOKEN_SPIKE": "low"} and cfg.anomaly.disabled == {"NO_PROGRESS"}
    assert cfg.prices == {"my-model": {"input": 1.0, "output": 2.0}}  # looked up lower-cased


def test_config_argument_of_the_wrong_kind() -> None:
    with pytest.raises(ConfigError, match="got int"):
        load_config(42, env={})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"agent\.budgets\.max_steps"):
        agentwatch.AnomalyProcessor(_NullProcessor(), config={"agent": {"budgets": {"max_steps": "2"}}})


class _NullProcessor:
    def on_start(self, span: Any, parent_context: Any = None) -> None: ...
    def on_end(self, span: Any) -> None: ...
    def shutdown(self) -> None: ...
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


# --------------------------------------------------------------------------- published schemas and examples


def _readme_yaml_blocks() -> list[tuple[str, Any]]:
    blocks = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for i, text in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text("utf-8"), re.S)):
            blocks.append((f"{doc.name}#{i}", yaml.safe_load(text)))
    return blocks


def _example_files() -> list[Path]:
    roots = [REPO / "collector", REPO / "examples"]
    return sorted(p for root in roots for p in [*root.rglob("*.yaml"), *root.rglob("*.yml")])


def _kind(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if "agent" in data:
        return AGENT_SCHEMA
    if "exporter" in data and set(data) <= set(_schema(COLLECTOR_SCHEMA)["properties"]):
        return COLLECTOR_SCHEMA
    return None


def _schema(name: str) -> dict[str, Any]:
    return json.loads(resources.files("agentwatch").joinpath(f"data/{name}").read_text("utf-8"))


def test_shipped_schemas_are_valid_draft_2020_12() -> None:
    for name in (AGENT_SCHEMA, COLLECTOR_SCHEMA):
        Draft202012Validator.check_schema(_schema(name))
        assert _schema(name)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_shipped_schema_lists_every_flag_and_severity() -> None:
    defs = _schema(AGENT_SCHEMA)["$defs"]
    assert defs["flag"]["enum"] == [f.value for f in Flag]
    assert defs["severity"]["enum"] == [s.value for s in Severity]


def test_defaults_validate() -> None:
    data = yaml.safe_load(resources.files("agentwatch").joinpath("data/defaults.yaml").read_text("utf-8"))
    assert problems(AGENT_SCHEMA, data) == []


def test_every_example_config_validates() -> None:
    checked = []
    files = [(str(p), yaml.safe_load(p.read_text("utf-8"))) for p in _example_files()]
    for name, data in _readme_yaml_blocks() + files:
        kind = _kind(data)
        if kind is not None:
            assert problems(kind, data) == [], name
            checked.append((name, kind))
    kinds = {kind for _, kind in checked}
    assert kinds == {AGENT_SCHEMA, COLLECTOR_SCHEMA}, checked
    assert any(n.endswith("agentwatch-collector.yaml") for n, _ in checked)


# --------------------------------------------------------------------------- agentwatch config [FILE]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agentwatch.cli", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={"PATH": "/usr/bin:/bin"})


def test_cli_config_validates_agent_and_collector_files(tmp_path: Path) -> None:
    good = tmp_path / "agentwatch.yaml"
    good.write_text("agent: {budgets: {max_steps: 5}}\n")
    result = _cli("config", str(good), cwd=tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout)["budget"]["max_steps"] == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: {budgets: {max_steps: 5, enforced: true}}\n")
    result = _cli("config", str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert "agent.budgets.enforced" in result.stderr and "did you mean 'enforce'?" in result.stderr
    collector = tmp_path / "collector.yaml"
    collector.write_text("exporter: {endpoint: 'x:1'}\ndecision: {hard_timeout_seconds: .nan}\n")
    result = _cli("config", str(collector), cwd=tmp_path)
    assert result.returncode == 2 and "decision.hard_timeout_seconds must be a finite number" in result.stderr
    collector.write_text("exporter: {endpoint: 'x:1'}\n")
    result = _cli("config", str(collector), cwd=tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout)["exporter"]["endpoint"] == "x:1"


def test_a_badly_broken_layer_gets_a_bounded_message() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"agent": {"tools": {"allow": list(range(1000))}}}, env={})
    lines = str(caught.value).splitlines()
    assert lines[0] == "config argument: 1000 problems:" and lines[-1] == "  - ... and 980 more"
    assert lines[1].startswith("  - agent.tools.allow[0] ") and lines[3].startswith("  - agent.tools.allow[2] ")
