"""Ids in normal form, and the liberal scan that learns every id a run could have read."""

from __future__ import annotations

from agentwatch.engine.ids import MAX_LEARN_IDS, learnable_ids, normalise_id


def test_decoration_case_and_numbers_normalise_to_one_id() -> None:
    forms = ["#W9300146", "W9300146", "'w9300146'.", '"W9300146"', "(W9300146),", " #w9300146 "]
    assert {normalise_id(f) for f in forms} == {"w9300146"}
    assert normalise_id(9523456873) == normalise_id("9523456873") == normalise_id(9523456873.0) == "9523456873"
    assert normalise_id("cust_789") == "cust_789"  # inner underscores are part of the id
    assert normalise_id("a-b-1") == "a-b-1"


def test_values_under_any_key_and_words_in_prose_are_learnt() -> None:
    found = set(learnable_ids({"T-Shirt": "9523456873", "price": 2599, "note": "order #W9300146 shipped"}))
    assert {"9523456873", "2599", "w9300146"} <= found
    assert set(learnable_ids('{"items": [{"Mug": 4545791457}]}')) >= {"4545791457"}  # JSON text is parsed
    assert "w2378156" in learnable_ids(["your order id:W2378156 is ready"])
    assert "ord_12" in learnable_ids({"ord_12": {"status": "ok"}})  # ids used as keys


def test_small_numbers_and_booleans_are_not_ids() -> None:
    assert learnable_ids({"qty": 2, "ok": True, "n": None, "x": 1.5}) == []


def test_bounded() -> None:
    many = {f"k{i}": f"v{i}x" for i in range(10 * MAX_LEARN_IDS)}
    assert len(learnable_ids(many)) <= MAX_LEARN_IDS
    assert len(learnable_ids(many, limit=10)) <= 10
    deep: object = "id_123"
    for _ in range(500):
        deep = [deep]
    assert learnable_ids(deep) == []  # deeper than the depth bound: ignored, no recursion error
