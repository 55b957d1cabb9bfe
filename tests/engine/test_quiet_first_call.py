"""``quiet_first_call``: the promise implicit runs rely on to defer a new conversation's first call."""

from __future__ import annotations

from typing import Any

import pytest

from agentwatch.engine import Engine
from agentwatch.engine.engine import quiet_first_call

from .conftest import RunBuilder, make_config

CASES: list[dict[str, Any]] = [
    {"reads": "where is ord_1?", "calls": [("get_order", {"order_id": "ord_1"})]},
    {"reads": "where is #ORD_1?", "calls": [("get_order", {"order_id": "ord_1"})]},  # decorated, other case
    {"reads": "where is ord_1?", "calls": [("get_order", {"order_id": "ord_9"})]},  # invented
    {"reads": "hello", "calls": []},
    {"reads": None, "calls": [("get_order", {"order_id": "ord_1"})]},  # input not scanned
    {"reads": "where is ord_1?", "calls": [("refund", {"order_id": "ord_1"})], "offered_tools": ("get_order",)},
    {"reads": "where is ord_1?", "calls": [("get_order", {"order_id": "ord_1"})], "offered_tools": ("get_order",)},
    {"reads": "sku RTX4090", "calls": [("search", {"q": "RTX4090"})], "tokens": 10_000},
]


@pytest.mark.parametrize("case", CASES)
def test_a_quiet_first_call_gives_no_finding_in_a_new_run(case: dict[str, Any]) -> None:
    builder = RunBuilder(Engine(make_config()), run_key="conversation:c1")
    extra = {k: v for k, v in case.items() if k == "offered_tools"}
    record = builder.llm(calls=case["calls"], reads=case["reads"], tokens=case.get("tokens"), **extra)
    quiet = quiet_first_call(record)
    findings = builder.feed(record)
    if quiet:
        assert findings == [], "deferring this call would lose a finding"


def test_the_cases_cover_both_answers() -> None:
    answers = set()
    for case in CASES:
        builder = RunBuilder(Engine(make_config()), run_key="conversation:c1")
        extra = {k: v for k, v in case.items() if k == "offered_tools"}
        answers.add(quiet_first_call(builder.llm(calls=case["calls"], reads=case["reads"], **extra)))
    assert answers == {True, False}
