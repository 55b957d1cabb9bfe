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
