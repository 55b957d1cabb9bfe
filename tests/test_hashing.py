"""The contract's args hash: canonical JSON, SHA-256, 16 hex digits, stable everywhere."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from agentwatch.hashing import args_hash, canonical_json


def test_contract_definition() -> None:
    args = {"b": 1, "a": "café", "nested": {"z": [1, 2], "y": None}}
    canonical = '{"a":"café","b":1,"nested":{"y":null,"z":[1,2]}}'
    assert canonical_json(args) == canonical
    assert args_hash(args) == hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def test_json_text_and_object_agree() -> None:
    assert args_hash('{"b": 1, "a": 2}') == args_hash({"a": 2, "b": 1})
    assert args_hash("") == args_hash({})


def test_non_json_text_is_hashed_as_a_string() -> None:
    assert args_hash("not json {") == hashlib.sha256(b'"not json {"').hexdigest()[:16]


def test_same_in_another_process() -> None:
    code = "from agentwatch.hashing import args_hash; print(args_hash({'q': 'x', 'n': [1, 2]}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == args_hash({"n": [1, 2], "q": "x"})


def test_cycles_and_objects_never_raise() -> None:
    cyclic: dict[str, object] = {}
    cyclic["self"] = cyclic
    assert len(args_hash(cyclic)) == 16
    assert len(args_hash({"o": object(), "s": {3, 1, 2}, "b": b"\xff"})) == 16


def test_canonical_json_is_json_dumps_with_the_canonical_settings() -> None:
    # The encoder is built once for speed; it must agree with json.dumps everywhere.
    import json

    values: list[object] = [
        {"ü": "é\u2028", "a": [1, 2.5, -0.0, 1e300, None, True, False], "n": {"b": {}, "a": []}},
        "plain", 7, 3.25, None, [], {}, float("inf"), {"k": "\"quoted\" \\ \n\t"}, {"s": "\ud800"},
    ]
    for value in values:
        expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert canonical_json(value) == expected


def test_parse_arguments_reads_model_text_like_json_loads() -> None:
    from agentwatch.hashing import parse_arguments

    assert parse_arguments('{"a":1}') == {"a": 1}
    assert parse_arguments('  {"a": 1}\n') == {"a": 1}
    assert parse_arguments(b'{"a":[1]}') == {"a": [1]}
    assert parse_arguments("[1, 2]") == [1, 2]
    assert parse_arguments("   ") == {}
    assert parse_arguments("123abc") == "123abc"
    assert parse_arguments('{"a":1} trailing') == '{"a":1} trailing'
    assert parse_arguments('{"a":') == '{"a":'
    assert parse_arguments({"already": "parsed"}) == {"already": "parsed"}


def test_a_cycle_is_detected_not_recursed_into() -> None:
    # The encoder keeps json.dumps' cycle markers: a cycle is refused at once (no deep recursion
    # that a raised recursion limit could turn into a C stack overflow) and hashed by its repr.
    import json

    outer: dict[str, object] = {"k": []}
    outer["k"].append(outer)  # type: ignore[attr-defined]
    assert canonical_json(outer) == json.dumps(repr(outer), ensure_ascii=False)
    assert canonical_json({"same": [1], "again": [1]}) == '{"again":[1],"same":[1]}'


# --------------------------------------------------------------------------- bounds (docs/limits.md)


def _nested(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_nesting_up_to_the_limit_is_canonical_and_unchanged() -> None:
    import hashlib

    from agentwatch.hashing import MAX_DEPTH, parse_arguments

    text = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_arguments(text) == _nested(MAX_DEPTH)
    assert canonical_json(_nested(MAX_DEPTH)) == text
    assert args_hash(text) == args_hash(_nested(MAX_DEPTH)) == hashlib.sha256(text.encode()).hexdigest()[:16]
    # brackets inside strings are not nesting
    many = {"s": "[" * 10_000, "t": ["{"] * 500}
    assert canonical_json(many) == json_dumps_canonical(many)


def json_dumps_canonical(value: object) -> str:
    import json

    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def test_deep_text_is_hashed_raw_and_never_raises() -> None:
    import hashlib

    from agentwatch.hashing import MAX_DEPTH, Unparsed, parse_arguments

    for depth in (MAX_DEPTH + 1, 1_000, 100_000):
        text = '{"a":' * depth + "1" + "}" * depth
        parsed = parse_arguments(text)
        assert isinstance(parsed, Unparsed) and parsed == text
        assert args_hash(text) == hashlib.sha256(text.encode()).hexdigest()[:16]
        assert args_hash(parsed) == args_hash(text)


def test_deep_values_are_cut_at_the_limit_stably() -> None:
    from agentwatch.hashing import DEPTH_MARKER, MAX_DEPTH, value_hash

    for depth in (MAX_DEPTH + 1, 1_000, 100_000):
        value = _nested(depth)
        text = canonical_json(value)
        assert text == "[" * MAX_DEPTH + json_dumps_canonical(DEPTH_MARKER) + "]" * MAX_DEPTH
        assert len(args_hash(value)) == 16 and len(value_hash(value)) == 16
    code = (
        "from agentwatch.hashing import args_hash\n"
        "v = []\n"
        "for _ in range(999): v = [v]\n"
        "print(args_hash(v))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == args_hash(_nested(1_000))


def test_text_too_long_is_not_parsed() -> None:
    import hashlib

    from agentwatch.hashing import MAX_ARGUMENT_CHARS, Unparsed, parse_arguments

    text = '{"a":"' + "x" * MAX_ARGUMENT_CHARS + '"}'
    assert isinstance(parse_arguments(text), Unparsed)
    assert args_hash(text) == hashlib.sha256(text.encode()).hexdigest()[:16]
