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


# --------------------------------------------------------------------------- bounded work (docs/limits.md)

EVIL = "^(a+)+$"  # backtracks catastrophically in Python's re on "aaaa...a!"
EVIL_ARG = "a" * 60 + "!"


def _timed(call: object) -> tuple[object, float]:
    """Result and CPU seconds (not wall time: this shared machine's load must not fail a test)."""
    import time

    started = time.process_time()
    result = call()  # type: ignore[operator]
    return result, time.process_time() - started


def test_backtracking_patterns_run_in_linear_time() -> None:
    checker = SchemaChecker()
    cases = [
        ({"type": "object", "properties": {"q": {"type": "string", "pattern": EVIL}}}, {"q": EVIL_ARG}),
        ({"type": "object", "patternProperties": {EVIL: {"type": "integer"}}}, {EVIL_ARG: "x", "aaa": "y"}),
        ({"type": "object", "patternProperties": {EVIL: {}}, "additionalProperties": False}, {EVIL_ARG: 1}),
        ({"type": "object", "propertyNames": {"pattern": EVIL}}, {EVIL_ARG: 1}),
        ({"type": "array", "items": {"type": "string", "pattern": EVIL}}, [EVIL_ARG] * 100),
    ]
    for schema, arguments in cases:
        (ok, problem), took = _timed(lambda s=schema, a=arguments: checker.check(s, a))
        assert took < 0.5, (schema, took)
        assert ok is True and problem is not None, (schema, problem)
    ok, problem = checker.check(cases[1][0], {"aaa": 1})
    assert (ok, problem) == (True, None)


def test_ecma_patterns_re2_runs_and_ones_it_cannot() -> None:
    checker = SchemaChecker()
    letters = {"type": "string", "pattern": "^\\p{L}+$"}  # ECMA-262 (u flag) and RE2, not Python's re
    assert checker.check(letters, "été") == (True, None)
    assert checker.check(letters, "1")[1] is not None
    lookahead = {"type": "string", "pattern": "^(?=a)(a+)+$"}  # valid ECMA, no RE2: skipped, never flagged
    (ok, problem), took = _timed(lambda: checker.check(lookahead, EVIL_ARG))
    assert (ok, problem) == (True, None) and took < 0.5
    assert checker.check({"type": "string", "pattern": "(["}, "x") == (False, None)  # invalid everywhere
    assert checker.check({"type": "string", "pattern": "^a"}, "a\ud800")[1] is None  # lone surrogate: no error
    assert checker.check({"type": "string", "pattern": "^a"}, "\ud800")[1] is not None


def test_oversized_inputs_are_unverifiable_not_flagged() -> None:
    from agentwatch.engine.schema import MAX_PATTERN_INPUT_CHARS, MAX_SCHEMA_CHARS, MAX_SCHEMA_DEPTH
    from agentwatch.hashing import MAX_DEPTH, Unparsed

    checker = SchemaChecker()
    long_string = {"type": "string", "pattern": "^b"}
    assert checker.check(long_string, "a" * (MAX_PATTERN_INPUT_CHARS + 1)) == (True, None)
    assert checker.check(long_string, "a")[1] is not None
    huge = {"type": "object", "description": "x" * MAX_SCHEMA_CHARS}
    assert checker.check(huge, {}) == (False, None)
    deep: dict[str, object] = {"type": "object"}
    for _ in range(MAX_SCHEMA_DEPTH):
        deep = {"type": "object", "properties": {"a": deep}}
    assert checker.check(deep, {}) == (False, None)
    very_deep: object = {}
    for _ in range(100_000):
        very_deep = {"not": very_deep}
    assert checker.check(very_deep, {}) == (False, None)
    recursive = {"type": "array", "items": {"$ref": "#"}}
    for depth in (MAX_DEPTH + 1, 100_000):
        args: object = []
        for _ in range(depth - 1):
            args = [args]
        assert checker.check(recursive, args) == (False, None)  # would descend as deep as the arguments
        assert checker.check({"type": "array"}, args) == (True, None)  # descends no deeper than the schema
    assert checker.check({"type": "string"}, Unparsed("[[[")) == (False, None)


def test_reference_fan_out_stops_at_the_budget() -> None:
    defs: dict[str, object] = {
        f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]} for i in range(40)
    }
    defs["d40"] = {"type": "object"}
    schema = {"$defs": defs, "$ref": "#/$defs/d0"}  # 2**40 evaluations unbounded
    checker = SchemaChecker()
    result, took = _timed(lambda: checker.check(schema, {}))
    assert result == (False, None) and took < 1.0


def test_a_nested_dollar_schema_cannot_switch_to_an_unbounded_validator() -> None:
    schema = {
        "type": "object",
        "properties": {"q": {"$schema": "http://json-schema.org/draft-07/schema#", "pattern": EVIL}},
    }
    result, took = _timed(lambda: SchemaChecker().check(schema, {"q": EVIL_ARG}))
    assert result == (False, None) and took < 0.5
    rooted = {"$schema": "http://json-schema.org/draft-07/schema#", "properties": {"q": {"pattern": EVIL}}}
    (ok, problem), took = _timed(lambda: SchemaChecker().check(rooted, {"q": EVIL_ARG}))
    assert ok and problem is not None and took < 0.5


def test_unevaluated_properties_beside_pattern_properties_is_skipped() -> None:
    schema = {"type": "object", "patternProperties": {EVIL: {}}, "unevaluatedProperties": False}
    result, took = _timed(lambda: SchemaChecker().check(schema, {EVIL_ARG: 1}))
    assert result == (True, None) and took < 0.5


def test_caches_are_bounded() -> None:
    from agentwatch.engine import schema as module

    checker = SchemaChecker()
    for i in range(module._CANONICAL_MAX + 10):
        checker.check({"type": "object", "title": str(i)}, {})
    assert len(checker._by_text) <= module._CANONICAL_MAX
    assert len(checker._by_id) <= module._IDENTITY_MAX
    for i in range(module._PATTERN_MAX + 10):
        checker.check({"type": "string", "pattern": f"^x{i}$"}, "x")
    assert len(module._patterns) <= module._PATTERN_MAX


def test_unique_items_is_linear_and_keeps_json_equality() -> None:
    checker = SchemaChecker()
    schema = {"type": "array", "uniqueItems": True}
    many = [{"a": i, "b": [i, {"c": str(i)}]} for i in range(5_000)]  # pairwise: 20 s
    result, took = _timed(lambda: checker.check(schema, many))
    assert result == (True, None) and took < 1.0
    (ok, problem), took = _timed(lambda: checker.check(schema, [*many, {"b": [7, {"c": "7"}], "a": 7}]))
    assert ok and problem is not None and "uniqueItems" in problem and took < 1.0
    assert checker.check(schema, [1, 1.0])[1] is not None  # JSON: the same number
    assert checker.check(schema, [1, True]) == (True, None)  # a boolean is not a number
    assert checker.check(schema, [[1, 2], [2, 1]]) == (True, None)
    assert checker.check(schema, [{"a": 1, "b": 2}, {"b": 2, "a": 1}])[1] is not None


def test_reason_never_quotes_the_offending_value(run: RunBuilder) -> None:
    secret = "sk-proj-" + "Q" * 30
    bad = run.feed(run.tool("t", {"id": secret}, 1, arguments={"id": secret}, tool_schema={
        "type": "object", "properties": {"id": {"type": "integer"}, "p": {"pattern": "^x$"}}}))
    assert flags(bad) == {"TOOL_ARG_MISMATCH"}
    assert "Q" * 8 not in bad[0].reason and 'fails type "integer" (at id)' in bad[0].reason
    bad = run.feed(run.tool("t", {"p": "hunter2"}, 2, arguments={"p": "hunter2"}, tool_schema={
        "type": "object", "properties": {"p": {"pattern": "^x$"}}}))
    assert "hunter2" not in bad[0].reason and 'fails pattern "^x$" (at p)' in bad[0].reason
