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
