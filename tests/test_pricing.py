"""Cost from the bundled price table: exact, dated snapshots, cache aware, unknown = None."""

from __future__ import annotations

import re

import pytest

from agentwatch.pricing import PriceTable


def test_exact_and_snapshot_names() -> None:
    table = PriceTable()
    assert table.lookup("gpt-4o-mini-2024-07-18") == table.lookup("gpt-4o-mini")
    assert table.lookup("gpt-4o-2024-08-06") == table.lookup("gpt-4o")
    assert table.lookup("claude-3-5-sonnet-20241022") == table.lookup("claude-3-5-sonnet")
    assert table.lookup("gpt-4oo") is None  # a prefix must end at a separator
    assert table.lookup("claude-3-5-sonnet@20240620") == table.lookup("claude-3-5-sonnet")  # Vertex
    assert table.lookup("claude-3-5-sonnet-latest") == table.lookup("claude-3-5-sonnet")


@pytest.mark.parametrize(
    "model",
    ["gpt-5.4-2026-03-05", "o3-pro", "gpt-4.5-preview", "claude-opus-4-6", "gpt-4o-audio-preview", "o3-pro-2025-06-10"],
)
def test_a_name_that_only_starts_like_a_listed_model_has_no_price(model: str) -> None:
    """Another model at another price (o3-pro costs ten times o3): no cost beats a wrong one."""
    table = PriceTable()
    assert table.lookup(model) is None
    assert table.cost(model, 1000, 100) is None


def test_unpriced_models_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable()
    with caplog.at_level("WARNING", logger="agentwatch"):
        for _ in range(3):
            table.cost("o3-pro", 10, 10)
        table.cost("my-local-llama", 10, 10)
        table.cost("gpt-4o", 10, 10)
    assert table.unpriced == {"o3-pro": 3, "my-local-llama": 1}
    logged = [r.getMessage() for r in caplog.records if "no price" in r.getMessage()]
    assert len(logged) == 2 and "'o3-pro'" in logged[0]


def test_the_table_says_when_its_prices_were_checked() -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", PriceTable().as_of)


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
