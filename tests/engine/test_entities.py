"""Entity extraction: shapes found, types given, bounds kept, and the "type:id" round trip."""

from __future__ import annotations

import json

from agentwatch.config import EntityConfig
from agentwatch.engine import EntityExtractor, format_entities, parse_entities
from agentwatch.engine.entities import MAX_ENTITIES, normalise_type

from .conftest import make_config

DEFAULT = EntityExtractor(make_config().entities)


def ids(value: object, extractor: EntityExtractor = DEFAULT) -> list[str]:
    return [eid for _, eid in extractor.extract(value)]


def test_prefixed_and_snake_ids_in_prose() -> None:
    found = DEFAULT.extract(
        "my user ID is mia_li_3668; order ord_555 for cust_789, paid with credit_card_4421486, "
        "certificate_7504069 and gift_card_1234567"
    )
    assert found == (
        ("mia_li", "mia_li_3668"),
        ("order", "ord_555"),
        ("customer", "cust_789"),
        ("credit_card", "credit_card_4421486"),
        ("certificate", "certificate_7504069"),
        ("gift_card", "gift_card_1234567"),
    )


def test_prefix_needs_a_digit_and_words_are_not_ids() -> None:
    assert ids("customer_service and order_history, user_name") == []
    assert ids("see ord_A12 and CUST_9") == ["ord_A12", "CUST_9"]


def test_uuid_and_codes() -> None:
    text = "job 123e4567-e89b-12d3-a456-426614174000, booking ZFA04Y, flight HAT136, not ABCDEF nor A4"
    assert DEFAULT.extract(text) == (
        ("uuid", "123e4567-e89b-12d3-a456-426614174000"),
        ("code", "ZFA04Y"),
        ("code", "HAT136"),
    )


def test_values_under_id_keys_typed_by_key() -> None:
    found = DEFAULT.extract(
        {
            "customer_id": "cust_012",
            "userId": "u1234",
            "ReservationID": "XY12Z",
            "order_id": 98765,
            "note_id": "n/a",
            "id": 7,
            "flag_id": True,
        }
    )
    assert found == (
        ("customer", "cust_012"),
        ("user", "u1234"),
        ("reservation", "XY12Z"),
        ("order", "98765"),
    )


def test_bare_id_takes_prefix_then_enclosing_key() -> None:
    found = DEFAULT.extract(
        {
            "customer": {"id": "A1234"},
            "orders": [{"id": "XY99"}, {"id": "ord_77"}],
            "payment_methods": {"credit_card_4421486": {"id": "credit_card_4421486"}},
        }
    )
    assert found == (
        ("customer", "A1234"),
        ("order", "XY99"),
        ("order", "ord_77"),
        ("credit_card", "credit_card_4421486"),
    )


def test_plural_type_keys_mark_strings_not_numbers() -> None:
    found = DEFAULT.extract({"reservations": ["ZFA04Y", "AQLBTL"], "invoice": 2500, "orders": ["A12B"]})
    assert found == (("reservation", "ZFA04Y"), ("order", "A12B"))


def test_json_strings_are_parsed_and_numbers_outside_id_keys_ignored() -> None:
    result = json.dumps({"order_id": "ord_555", "customer_id": "cust_012", "total": 12345, "zip": "78750"})
    assert DEFAULT.extract(result) == (("order", "ord_555"), ("customer", "cust_012"))
    assert DEFAULT.extract('{"broken": "json", ord_9 ') == (("order", "ord_9"),)


def test_configured_patterns_and_prefixes() -> None:
    extractor = EntityExtractor(
        EntityConfig(prefixes={"tkt": "ticket"}, patterns=(("reservation", r"\b[A-Z]{6}\b"),))
    )
    assert extractor.extract("ticket tkt_42x for AQLBTL") == (
        ("ticket", "tkt_42x"),
        ("reservation", "AQLBTL"),
    )
    # a pattern also makes a digit-less value under an id key an id
    assert extractor.extract({"reservation_id": "AQLBTL"}) == (("reservation", "AQLBTL"),)
    assert extractor.prefix_type("TKT_9") == "ticket"
    assert extractor.prefix_type("plain") is None


def test_deduplicated_and_deterministic() -> None:
    value = {"b": "ord_2 ord_1", "a": ["ord_1", "ord_2"], "c": {"order_id": "ord_1"}}
    first = DEFAULT.extract(value)
    assert first == DEFAULT.extract(json.loads(json.dumps(value)))
    assert len(first) == len(set(first))
    assert [e for e in first if e[1] == "ord_1"] == [("order", "ord_1")]


def test_bounded_on_huge_and_hostile_input() -> None:
    many = " ".join(f"ord_{i:05d}" for i in range(5000))
    assert len(DEFAULT.extract(many)) == MAX_ENTITIES
    assert len(DEFAULT.extract(many, limit=10)) == 10
    deep: object = "ord_1"
    for _ in range(50_000):
        deep = [deep]
    assert DEFAULT.extract(deep) == ()  # the node budget runs out before the leaf; no RecursionError
    cyclic: dict[str, object] = {"order_id": "ord_3"}
    cyclic["self"] = cyclic
    assert ("order", "ord_3") in DEFAULT.extract(cyclic)
    big = "x" * 5_000_000 + " ord_4"
    assert DEFAULT.extract(big) == ()  # beyond the scan window
    assert DEFAULT.extract(None) == ()
    assert DEFAULT.extract(12345) == ()
    assert DEFAULT.extract({1: "ord_5", None: [b"x"]}) == (("order", "ord_5"),)


def test_format_and_parse_round_trip() -> None:
    entities = (("customer", "cust_789"), ("url", "https://x/y:z"), ("order", "ord:555"))
    strings = format_entities(entities)
    assert strings == ("customer:cust_789", "url:https://x/y:z", "order:ord:555")
    assert parse_entities(strings) == entities
    assert parse_entities(["noprefix", "", ":", "t:", 5, None, "a:b"]) == (("id", "noprefix"), ("a", "b"))
    assert parse_entities(None) == ()
    assert parse_entities("customer:cust_1") == ()  # a bare string is not a list of entities


def test_normalise_type() -> None:
    assert normalise_type("customer_id") == "customer"
    assert normalise_type("customerId") == "customer"
    assert normalise_type("Customer") == "customer"
    assert normalise_type("credit card") == "credit_card"


def test_deep_json_strings_and_total_scan_are_bounded() -> None:
    import time

    from agentwatch.engine.entities import MAX_SCAN_TOTAL
    from agentwatch.hashing import MAX_DEPTH

    for depth in (MAX_DEPTH + 1, 1_000, 100_000):  # too deep to parse: scanned as prose, never raises
        text = '{"order_id": "ord_555", "x":' * depth + "1" + "}" * depth
        assert DEFAULT.extract(text) == (("order", "ord_555"),)
    shallow = '{"x":' * 3 + '{"order_id": "ord_555"}' + "}" * 3
    assert ("order", "ord_555") in DEFAULT.extract(shallow)
    # many long strings: prose scanning stops at the total budget
    late = ["word " * 40_000] * (MAX_SCAN_TOTAL // 200_000 + 1) + ["see cust_12345"]
    started = time.process_time()
    assert DEFAULT.extract(late) == ()
    assert time.process_time() - started < 1.0
    assert DEFAULT.extract(late[-2:]) != ()


# ---------------------------------------------------------------------------- credentials are not entities

AWS_ID = "AKIAIOSFODNN7EXAMPLE"
OPENAI_KEY = "sk-proj-A1B2C3D4E5-abcdefghijklmnop0123"
UUID_KEY = "3f2a1c9e-7b4d-4e8a-9c1f-2d3e4f5a6b7c"


def test_values_under_credential_keys_are_never_entities() -> None:
    found = DEFAULT.extract(
        {
            "aws_access_key_id": AWS_ID,
            "api_key": UUID_KEY,
            "token": "tok_12345",
            "credentials": {"client_id": "app_123", "client_secret": "sec_999"},
            "X-Auth-Token": "abc_12345",
            "order_id": "ord_555",
        }
    )
    assert found == (("order", "ord_555"),)


def test_secret_shaped_values_are_never_entities_nor_fragments_of_them() -> None:
    assert DEFAULT.extract({"customer_id": OPENAI_KEY, "order_id": "ord_555"}) == (("order", "ord_555"),)
    text = (
        f"key {OPENAI_KEY} and {AWS_ID}; jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJBQkMxMjM0NSJ9.c2lnbmF0dXJlLXNpZw; "
        "db https://bob:hunter_123@db.internal/x; order ord_555"
    )
    assert ids(text) == ["ord_555"]
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE+ABC12/DEF\n-----END RSA PRIVATE KEY----- ord_555"
    assert ids(pem) == ["ord_555"]


def test_ids_named_as_credentials_in_prose_are_not_entities() -> None:
    assert ids(f"my API key is {UUID_KEY}, order ord_555") == ["ord_555"]
    assert ids("password: abc_123 for cust_789") == ["cust_789"]
    assert ids("login with password zed_4421 failed; token=tk_998877") == []
    # an id merely near a credential word is still an id
    assert ids("the api key rotation for cust_789 is done") == ["cust_789"]


def test_repeated_texts_are_scanned_once_with_the_same_result() -> None:
    """The text cache is invisible: the same entities, in order, bounded in size."""
    from agentwatch.engine import entities as mod

    extractor = EntityExtractor()
    text = "Customer cust_789 asks about order ord_555 and ticket TCK-42."
    first = extractor.extract(text)
    assert extractor.extract(text) == first == EntityExtractor()._extract(text, mod.MAX_ENTITIES)
    for i in range(mod._TEXT_CACHE_SIZE + 10):
        extractor.extract(f"order ord_{i}")
    assert len(extractor._text_cache) <= mod._TEXT_CACHE_SIZE
    long_text = "Customer cust_789 writes: " + "the printer is on fire. " * (mod._TEXT_CACHE_CHARS // 20)
    assert [e for e in extractor.extract(long_text) if e[1] == "cust_789"]
    assert long_text not in extractor._text_cache
