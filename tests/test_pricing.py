"""Cost from the bundled price table: exact, dated snapshots, cache aware, unknown = None."""

from __future__ import annotations

import pytest

from agentwatch.pricing import PriceTable


def test_exact_and_snapshot_names() -> None:
    table = PriceTable()
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.lookup("gpt-4o-mini")
    assert table.lookup("gpt-4o-2024-08-06") == table.lookup("gpt-4o")
    assert table.lookup("claude-3-5-sonnet-20241022") == table.lookup("claude-3-5-sonnet")
    assert table.lookup("gpt-4oo") is None  # a prefix must end at a separator


def test_openai_cached_tokens_are_cheaper() -> None:
    table = PriceTable()
    full = table.cost("gpt-4o", 1000, 100)
    cached = table.cost("gpt-4o", 1000, 100, cache_read_tokens=800)
    assert full == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)
    assert cached == pytest.approx((200 * 2.5 + 800 * 1.25 + 100 * 10) / 1e6)


def test_anthropic_cache_write_and_read() -> None:
    # GenAI rule: input_tokens already includes cache read and cache creation tokens
    cost = PriceTable().cost("claude-sonnet-4-5", 1000 + 2000 + 500, 100, 2000, 500)
    assert cost == pytest.approx((1000 * 3 + 2000 * 0.3 + 500 * 3.75 + 100 * 15) / 1e6)


def test_unknown_model_has_no_cost() -> None:
    assert PriceTable().cost("my-local-llama", 100, 10) is None
    assert PriceTable().cost(None, 100, 10) is None


def test_overrides() -> None:
    table = PriceTable({"my-local-llama": {"input": 0.1, "output": 0.2}, "gpt-4o": {"output": 1.0}})
    assert table.cost("my-local-llama", 1_000_000, 0) == pytest.approx(0.1)
    assert table.cost("gpt-4o", 0, 1_000_000) == pytest.approx(1.0)
