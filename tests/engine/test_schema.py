"""TOOL_ARG_MISMATCH against the tool's JSON Schema, with validator caching."""

from __future__ import annotations

from agentwatch.engine import Engine
from agentwatch.engine.schema import SchemaChecker

from .conftest import RunBuilder, flags

SCHEMA = {
    "type": "object",
    "properties": {"id": {"type": "string"}},
    "required": ["id"],
    "additionalProperties": False,
}


def test_mismatch_and_match(run: RunBuilder) -> None:
    assert run.feed(run.tool("t", {"id": "a"}, 1, arguments={"id": "a"}, tool_schema=SCHEMA)) == []
    bad = run.feed(run.tool("t", {"id": 1}, 2, arguments={"id": 1}, tool_schema=SCHEMA))
    assert flags(bad) == {"TOOL_ARG_MISMATCH"}
    assert 'fails type "string" (at id)' in bad[0].reason
    missing = run.feed(run.tool("t", {}, 3, arguments={}, tool_schema=SCHEMA))
    assert "'id' is a required property" in missing[0].reason


def test_no_arguments_no_check(run: RunBuilder) -> None:
    assert run.feed(run.tool("t", {"id": 1}, 1, tool_schema=SCHEMA)) == []


def test_invalid_schema_is_counted_not_flagged(engine: Engine) -> None:
    b = RunBuilder(engine)
    assert b.feed(b.tool("t", {}, 1, arguments={"a": 1}, tool_schema={"type": "no-such-type"})) == []
    assert (
        b.feed(b.tool("t", {}, 2, arguments={"a": 1}, tool_schema={"$ref": "https://example.invalid/s"}))
        == []
    )
    assert b.feed(b.tool("t", {}, 3, arguments={"a": 1}, tool_schema="not a schema")) == []  # type: ignore[arg-type]
    assert engine.stats["schema_invalid"] == 3
    assert engine.stats["internal_errors"] == 0


def test_validators_are_cached_by_identity_and_by_content() -> None:
    checker = SchemaChecker()
    assert checker.check(SCHEMA, {"id": "x"}) == (True, None)
    first = checker._validator(SCHEMA)
    assert checker._validator(SCHEMA) is first
    copy = {
        "additionalProperties": False,
        "required": ["id"],
        "type": "object",
        "properties": {"id": {"type": "string"}},
    }
    assert checker._validator(copy) is first  # same canonical JSON
    ok, problem = checker.check(copy, {"id": "x", "extra": 1})
    assert ok and problem is not None and "Additional properties" in problem


def test_reason_never_quotes_the_offending_value(run: RunBuilder) -> None:
    secret = "sk-proj-" + "Q" * 30
    bad = run.feed(run.tool("t", {"id": secret}, 1, arguments={"id": secret}, tool_schema={
        "type": "object", "properties": {"id": {"type": "integer"}, "p": {"pattern": "^x$"}}}))
    assert flags(bad) == {"TOOL_ARG_MISMATCH"}
    assert "Q" * 8 not in bad[0].reason and 'fails type "integer" (at id)' in bad[0].reason
    bad = run.feed(run.tool("t", {"p": "hunter2"}, 2, arguments={"p": "hunter2"}, tool_schema={
        "type": "object", "properties": {"p": {"pattern": "^x$"}}}))
    assert "hunter2" not in bad[0].reason and 'fails pattern "^x$" (at p)' in bad[0].reason
