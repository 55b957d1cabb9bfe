"""Masked fingerprints and similarity sketches: what counts as new in substance."""

from __future__ import annotations

from agentwatch.engine import noise
from agentwatch.hashing import args_hash, value_hash

PAGE = " ".join(f"Paragraph {k} explains plan {k % 7} with limits of {k * 13} spans and retention." for k in range(80))


def test_args_key_masks_timestamps_and_volatile_keys_but_not_ids() -> None:
    a = {"q": "pricing", "ts": 1733480000, "requested_at": "2026-12-06T12:00:00Z"}
    b = {"q": "pricing", "ts": 1733480099, "requested_at": "2026-12-06T12:05:31Z"}
    assert args_hash(a) != args_hash(b) and noise.args_key(a) == noise.args_key(b)
    since = [{"q": f"news since 2026-12-06 12:0{m}:01"} for m in (0, 9)]
    assert noise.args_key(since[0]) == noise.args_key(since[1])
    plain = {"order_id": "ord_1", "date": "2024-05-20"}
    assert noise.args_key(plain) == args_hash(plain)  # nothing volatile: the exact hash
    assert noise.args_key(plain, args_hash(plain)) == args_hash(plain)  # the quick check agrees
    assert noise.args_key(a, args_hash(a)) == noise.args_key(b, args_hash(b)) != args_hash(a)
    nested = {"filters": {"since": "2026-12-06T12:00:00Z", "tags": ["a"]}}
    assert noise.args_key(nested, args_hash(nested)) != args_hash(nested)
    uid = "123e4567-e89b-12d3-a456-426614174000"
    assert noise.args_key({"doc": uid}) != noise.args_key({"doc": uid.replace("1", "2")})  # ids stay


def test_result_key_masks_request_ids_and_times_and_shares_empty() -> None:
    r1 = {"items": [1, 2], "request_id": "req_8f7a", "trace": "0af7651916cd43dd8448eb211c80319c"}
    r2 = {"items": [1, 2], "request_id": "req_91bc", "trace": "1bc7651916cd43dd8448eb211c80319d"}
    assert noise.result_key(r1) == noise.result_key(r2)
    assert noise.result_key({"items": [1, 3], "request_id": "x"}) != noise.result_key(r1)
    assert noise.result_key("Done at 2026-12-06 12:01:02") == noise.result_key("Done at 2026-12-06 12:07:59")
    assert noise.result_key("Done on 2026-12-06") != noise.result_key("Done on 2026-12-07")  # dates stay
    uid = "123e4567-e89b-12d3-a456-426614174000"
    assert noise.result_key(f"created {uid}") == noise.result_key(f"created {uid.replace('1', '9')}")
    assert noise.result_key("ok") == value_hash("ok")
    for empty in ("", "  \n", [], {}):
        assert noise.is_empty(noise.result_key(empty))
    assert noise.is_empty(None) and not noise.is_empty(value_hash("x"))


def test_near_identical_pages_are_similar_and_different_pages_are_not() -> None:
    a = noise.sketch(PAGE + " Fetched 2026-12-06T12:00:11Z. 1200 visitors online.")
    b = noise.sketch(PAGE + " Fetched 2026-12-06T12:04:51Z. 1342 visitors online. New banner today!")
    other = noise.sketch(PAGE.replace("explains", "covers").replace("retention", "billing"))
    assert a is not None and b is not None and other is not None
    assert noise.similar(a, b)
    assert not noise.similar(a, other)
    assert noise.sketch("short") is None and noise.sketch(12) is None
    assert noise.containment("zz", a) is None  # malformed sketch: no opinion


def test_sketch_reads_a_bounded_prefix() -> None:
    head = PAGE[: noise.MAX_SKETCH_CHARS]
    assert noise.sketch(head + "x" * 100_000) == noise.sketch(head + "y" * 100_000)
