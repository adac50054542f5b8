"""Tests for the wire schemas: every inbound message is decoded or rejected with a reason."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest

from stream_reco.events import (
    MAX_ATTRIBUTES_BYTES,
    MAX_CONTEXT_BYTES,
    MAX_DEADLETTER_BYTES,
    MAX_EMBEDDING,
    MAX_EXCLUDE,
    MAX_ID_LEN,
    MAX_MESSAGE_BYTES,
    MAX_TAGS,
    MAX_TS_MS,
    MIN_TS_MS,
    CatalogItem,
    Event,
    Rejected,
    Request,
    Tombstone,
    dead_letter,
    decode_catalog,
    decode_event,
    decode_request,
)

TS = 1_700_000_000_000  # 2023-11-14 in ms


def event(**change: Any) -> bytes:
    doc: dict[str, Any] = {
        "event_id": "e-1",
        "type": "add_to_cart",
        "session_id": "s-1",
        "item_id": "item-0001",
        "ts": TS,
    }
    doc.update(change)
    return orjson.dumps({k: v for k, v in doc.items() if v is not ...})


def request(**change: Any) -> bytes:
    doc: dict[str, Any] = {"request_id": "r-1", "session_id": "s-1"} | change
    return orjson.dumps(doc)


def rejected(result: object, *words: str) -> str:
    assert isinstance(result, Rejected), result
    for word in words:
        assert word in result.reason, (word, result.reason)
    return result.reason


# -- events ----------------------------------------------------------------------------------


def test_valid_event_is_decoded_and_unknown_fields_ignored() -> None:
    raw = event(
        user_id="u-9",
        quantity=3,
        price=19.5,
        recommendation_id="rec-1",
        context={"page": "pdp"},
        colour="blue",
    )
    assert decode_event(raw) == Event(
        event_id="e-1",
        type="add_to_cart",
        session_id="s-1",
        item_id="item-0001",
        ts=TS,
        user_id="u-9",
        quantity=3,
        price=19.5,
        recommendation_id="rec-1",
    )


def test_optional_fields_default() -> None:
    ev = decode_event(event(user_id=None))
    assert isinstance(ev, Event)
    assert (ev.user_id, ev.quantity, ev.price, ev.recommendation_id) == (None, 1, None, None)


def test_every_event_type_is_accepted() -> None:
    for kind in ("view", "click", "add_to_cart", "remove_from_cart", "purchase"):
        ev = decode_event(event(type=kind))
        assert isinstance(ev, Event) and ev.type == kind


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", ("not valid JSON",)),
        (b"[1, 2]", ("JSON object", "list")),
        (b'"view"', ("JSON object", "str")),
        (b"", ("empty",)),
        (None, ("empty",)),
        (b" " * (MAX_MESSAGE_BYTES + 1), ("bytes", str(MAX_MESSAGE_BYTES))),
    ],
)
def test_unreadable_events_are_rejected(raw: bytes | None, words: tuple[str, ...]) -> None:
    rejected(decode_event(raw), "invalid event", *words)


def test_message_at_the_size_limit_is_read() -> None:
    raw = event()
    padded = raw + b" " * (MAX_MESSAGE_BYTES - len(raw))
    assert len(padded) == MAX_MESSAGE_BYTES
    assert isinstance(decode_event(padded), Event)


@pytest.mark.parametrize("name", ["event_id", "session_id", "item_id"])
@pytest.mark.parametrize("value", [..., "", None, 42, "x" * (MAX_ID_LEN + 1)])
def test_bad_ids_are_rejected(name: str, value: object) -> None:
    rejected(decode_event(event(**{name: value})), name)


def test_id_at_the_length_limit_is_accepted() -> None:
    ev = decode_event(event(item_id="x" * MAX_ID_LEN))
    assert isinstance(ev, Event) and len(ev.item_id) == MAX_ID_LEN


def test_optional_ids_are_still_checked_when_present() -> None:
    rejected(decode_event(event(user_id="")), "user_id")
    rejected(decode_event(event(recommendation_id=7)), "recommendation_id")


@pytest.mark.parametrize("kind", ["sniff", "", None, "VIEW", 1])
def test_unknown_type_is_rejected(kind: object) -> None:
    rejected(decode_event(event(type=kind)), "type")


@pytest.mark.parametrize(
    "ts",
    [
        ...,
        str(TS),
        TS + 0.5,
        True,
        TS // 1000,  # seconds, not milliseconds
        946_684_800_000 - 1,  # before 2000
        4_102_444_800_000 + 1,  # after 2100
        -1,
    ],
)
def test_bad_timestamps_are_rejected(ts: object) -> None:
    rejected(decode_event(event(ts=ts)), "ts")


@pytest.mark.parametrize("seconds", [TS // 1000, MIN_TS_MS // 1000, MAX_TS_MS // 1000])
def test_a_ts_in_seconds_is_named_as_such_with_the_value_to_send(seconds: int) -> None:
    reason = rejected(decode_event(event(ts=seconds), latest_ts=TS), f"ts={seconds} is outside")
    assert "epoch milliseconds" in reason and "seconds" in reason
    assert str(seconds * 1000) in reason


@pytest.mark.parametrize("ts", [MIN_TS_MS // 1000 - 1, MAX_TS_MS // 1000 + 1, -1, 0, TS + 1])
def test_a_ts_that_is_not_seconds_gets_no_seconds_hint(ts: int) -> None:
    reason = rejected(decode_event(event(ts=ts), latest_ts=TS), "ts")
    assert "seconds" not in reason


def test_events_dated_after_the_latest_allowed_time_are_rejected() -> None:
    assert isinstance(decode_event(event(ts=TS), latest_ts=TS), Event)
    rejected(decode_event(event(ts=TS + 1), latest_ts=TS), "ts")


@pytest.mark.parametrize("quantity", [0, -1, True, 1.5, "2", 10_001])
def test_bad_quantities_are_rejected(quantity: object) -> None:
    rejected(decode_event(event(quantity=quantity)), "quantity")


@pytest.mark.parametrize("price", [-0.01, 1e10, "9.99", True])
def test_bad_prices_are_rejected(price: object) -> None:
    rejected(decode_event(event(price=price)), "price")


def test_nan_literal_is_not_json() -> None:
    # orjson refuses NaN/Infinity literals, so a NaN price cannot reach the range check.
    raw = event().replace(b"}", b',"price":NaN}')
    rejected(decode_event(raw), "not valid JSON")


def test_zero_and_integer_prices_are_accepted() -> None:
    for price in (0, 5, 0.0):
        ev = decode_event(event(price=price))
        assert isinstance(ev, Event) and ev.price == float(price)
        assert isinstance(ev.price, float)


@pytest.mark.parametrize("context", [[1, 2], "page=pdp", 3])
def test_context_must_be_an_object(context: object) -> None:
    rejected(decode_event(event(context=context)), "context")


def test_context_too_big_is_rejected() -> None:
    big = {"blob": "x" * MAX_CONTEXT_BYTES}
    rejected(decode_event(event(context=big)), "context", str(MAX_CONTEXT_BYTES))
    assert isinstance(decode_event(event(context={"blob": "x" * 100})), Event)


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b"\xff\xfe{}", "byte 0xff at offset 0"),
        (event().replace(b'"s-1"', b'"s-\xe9"'), "byte 0xe9 at offset"),  # Latin-1, not UTF-8
        (b'{"item_id": "\xed\xa0\x80"}', "byte 0xed at offset 13"),  # an encoded surrogate
    ],
    ids=["leading-bytes", "latin-1", "surrogate"],
)
def test_values_that_are_not_utf8_are_named_plainly(raw: bytes, where: str) -> None:
    rejected(decode_event(raw), "invalid event: value is not UTF-8", where)
    rejected(decode_request(raw, 10, 100), "invalid request: value is not UTF-8", where)
    rejected(decode_catalog(b"i", raw), "invalid catalogue record: value is not UTF-8", where)


def test_valid_utf8_beyond_ascii_is_read() -> None:
    ev = decode_event(event(item_id="caf\u00e9-\u6771\u4eac-\U0001f600"))
    assert isinstance(ev, Event) and ev.item_id == "caf\u00e9-\u6771\u4eac-\U0001f600"


# -- catalogue -------------------------------------------------------------------------------


def test_valid_catalog_record() -> None:
    raw = orjson.dumps(
        {
            "item_id": "item-7",
            "title": "Oak Lamp",
            "category": "home",
            "brand": "Oak",
            "price": 35,
            "in_stock": False,
            "tags": ["wood", "light"],
            "margin": -0.2,
            "extra": {"ignored": True},
        }
    )
    assert decode_catalog(b"item-7", raw) == CatalogItem(
        item_id="item-7",
        title="Oak Lamp",
        category="home",
        brand="Oak",
        price=35.0,
        in_stock=False,
        tags=("wood", "light"),
        margin=-0.2,
    )


def test_catalog_defaults() -> None:
    rec = decode_catalog(None, b'{"item_id": "item-8"}')
    assert rec == CatalogItem(item_id="item-8")
    assert isinstance(rec, CatalogItem)
    assert (rec.title, rec.in_stock, rec.tags, rec.price) == ("", True, (), None)


@pytest.mark.parametrize("value", [None, b"", b"null", b" null\n"])
def test_null_value_with_key_is_a_tombstone(value: bytes | None) -> None:
    assert decode_catalog(b"item-9", value) == Tombstone("item-9")


@pytest.mark.parametrize("key", [None, b""])
def test_tombstone_without_key_is_rejected(key: bytes | None) -> None:
    rejected(decode_catalog(key, None), "tombstone", "key")


def test_tombstone_key_must_be_a_valid_id() -> None:
    rejected(decode_catalog(b"x" * (MAX_ID_LEN + 1), None), "item_id")


@pytest.mark.parametrize("value", [None, b"null", orjson.dumps({"item_id": "item-\u00e9"})])
def test_catalogue_key_that_is_not_utf8_is_rejected(value: bytes | None) -> None:
    # Latin-1 "item-\xe9": decoded with replacement it named an item that was never sent.
    rejected(decode_catalog(b"item-\xe9", value), "key is not UTF-8", "0xe9")


@pytest.mark.parametrize("tags", ["wood", [1, 2], ["ok", None], {"a": 1}])
def test_bad_tags_are_rejected(tags: object) -> None:
    raw = orjson.dumps({"item_id": "item-1", "tags": tags})
    rejected(decode_catalog(b"item-1", raw), "tags")


def test_too_many_tags_are_rejected() -> None:
    raw = orjson.dumps({"item_id": "item-1", "tags": ["t"] * (MAX_TAGS + 1)})
    rejected(decode_catalog(b"item-1", raw), "tags")


@pytest.mark.parametrize("in_stock", [1, 0, "true", "yes"])
def test_in_stock_must_be_boolean(in_stock: object) -> None:
    raw = orjson.dumps({"item_id": "item-1", "in_stock": in_stock})
    rejected(decode_catalog(b"item-1", raw), "in_stock")


def test_catalog_record_needs_an_item_id() -> None:
    rejected(decode_catalog(b"item-1", b'{"title": "Lamp"}'), "invalid catalogue record", "item_id")


# -- requests --------------------------------------------------------------------------------


def test_request_uses_default_k() -> None:
    req = decode_request(request(), default_k=10, max_k=100)
    assert req == Request(request_id="r-1", session_id="s-1", k=10)


def test_request_with_all_fields() -> None:
    raw = request(k=5, user_id="u-1", placement="cart", exclude=["a", "b", "a"], colour="red")
    req = decode_request(raw, default_k=10, max_k=100)
    assert req == Request("r-1", "s-1", 5, "u-1", "cart", frozenset({"a", "b"}))


def test_k_at_max_is_accepted() -> None:
    req = decode_request(request(k=100), default_k=10, max_k=100)
    assert isinstance(req, Request) and req.k == 100


@pytest.mark.parametrize("k", [101, 0, -3, "5", 2.5, True])
def test_bad_k_is_rejected(k: object) -> None:
    rejected(decode_request(request(k=k), default_k=10, max_k=100), "invalid request", "k")


@pytest.mark.parametrize("exclude", ["item-1", {"item-1": True}, [1, 2], ["a", None]])
def test_exclude_must_be_a_list_of_ids(exclude: object) -> None:
    rejected(decode_request(request(exclude=exclude), 10, 100), "exclude")


def test_too_many_excludes_are_rejected() -> None:
    many = [f"i{n}" for n in range(MAX_EXCLUDE + 1)]
    rejected(decode_request(request(exclude=many), 10, 100), "exclude", str(MAX_EXCLUDE))
    ok = decode_request(request(exclude=many[:MAX_EXCLUDE]), 10, 100)
    assert isinstance(ok, Request) and len(ok.exclude) == MAX_EXCLUDE


def test_request_ids_are_required() -> None:
    rejected(decode_request(request(request_id=""), 10, 100), "request_id")
    rejected(decode_request(orjson.dumps({"request_id": "r"}), 10, 100), "session_id")
    rejected(decode_request(b"[]", 10, 100), "JSON object")


# -- dead letters ----------------------------------------------------------------------------


def test_dead_letter_keeps_original_bytes_and_reason() -> None:
    value = b"\xff\x00not json at all"
    key = b"s-\xfe"
    doc = orjson.loads(dead_letter("invalid event: bad", "reco-events", 3, 42, key, value, TS))
    assert base64.b64decode(doc["value_b64"]) == value
    assert base64.b64decode(doc["key_b64"]) == key
    assert doc["reason"] == "invalid event: bad"
    assert (doc["source_topic"], doc["partition"], doc["offset"], doc["ts"]) == (
        "reco-events",
        3,
        42,
        TS,
    )


def test_dead_letter_of_missing_key_and_value() -> None:
    doc = orjson.loads(dead_letter("empty", "reco-catalog", None, None, None, None, TS))
    assert doc["key_b64"] is None and doc["value_b64"] is None
    assert doc["reason"] == "empty"


def test_rejected_event_round_trips_through_dead_letter() -> None:
    raw = event(ts="yesterday")
    result = decode_event(raw)
    reason = rejected(result, "ts")
    doc = orjson.loads(dead_letter(reason, "reco-events", 0, 1, None, raw, TS))
    assert base64.b64decode(doc["value_b64"]) == raw
    assert doc["reason"] == reason


# -- keys, vectors, attributes, excludes, oversized dead letters -------------------------------


def test_catalogue_key_must_match_item_id() -> None:
    raw = orjson.dumps({"item_id": "item-1"})
    assert isinstance(decode_catalog(b"item-1", raw), CatalogItem)
    assert isinstance(decode_catalog(None, raw), CatalogItem)  # no key: nothing to contradict
    rejected(decode_catalog(b"item-2", raw), "key", "item_id")


@pytest.mark.parametrize(
    "embedding", [[], "oops", [1.0, "x"], [True], [1.0] * (MAX_EMBEDDING + 1), {"a": 1}]
)
def test_bad_embeddings_are_rejected(embedding: object) -> None:
    raw = orjson.dumps({"item_id": "i", "embedding": embedding})
    rejected(decode_catalog(b"i", raw), "embedding")


def test_good_embedding_and_attributes_are_accepted() -> None:
    raw = orjson.dumps({"item_id": "i", "embedding": [0.1, -2, 3.5], "attributes": {"size": "M"}})
    assert isinstance(decode_catalog(b"i", raw), CatalogItem)


@pytest.mark.parametrize("attributes", [[1], "x", {"blob": "y" * MAX_ATTRIBUTES_BYTES}])
def test_bad_attributes_are_rejected(attributes: object) -> None:
    raw = orjson.dumps({"item_id": "i", "attributes": attributes})
    rejected(decode_catalog(b"i", raw), "attributes")


@pytest.mark.parametrize("entry", ["", "x" * (MAX_ID_LEN + 1), 7, None])
def test_exclude_entries_must_be_ids(entry: object) -> None:
    rejected(decode_request(request(exclude=["ok", entry]), 10, 100), "exclude[1]")


def test_dead_letter_of_a_huge_message_is_cut_but_identifies_it() -> None:
    value = bytes(range(256)) * (4 * MAX_DEADLETTER_BYTES // 256)
    doc = orjson.loads(dead_letter("too big", "t", 0, 1, b"k", value, 5))
    assert base64.b64decode(doc["value_b64"]) == value[:MAX_DEADLETTER_BYTES]
    assert doc["value_truncated"] is True and doc["value_size"] == len(value)
    assert doc["value_sha256"] == hashlib.sha256(value).hexdigest()
    small = orjson.loads(dead_letter("bad", "t", 0, 1, None, b"{", 5))
    assert small["value_truncated"] is False and small["key_b64"] is None


@pytest.mark.parametrize("field", ["session_id", "event_id", "item_id"])
@pytest.mark.parametrize("bad", ["x}:y", "{tag}", "a{"])
def test_ids_with_braces_are_rejected(field: str, bad: str) -> None:
    # Keys wrap ids in braces: session "x}:y" with event "z" and session "x" with event "y}:z"
    # once shared one dedup key, so the second event was dropped as a duplicate.
    rejected(decode_event(event(**{field: bad})), field, "{ or }")


def test_ids_that_are_no_key_material_may_hold_braces() -> None:
    # A braced GUID as user_id or recommendation_id becomes no Redis key: accepted.
    got = decode_event(event(user_id="{3F25-04E1}", recommendation_id="{r}"))
    assert not isinstance(got, Rejected), got


@pytest.mark.parametrize("bad", ["a\x1fb", "tab\there", "nl\n", "del\x7f"])
def test_ids_with_control_characters_are_rejected(bad: str) -> None:
    rejected(decode_event(event(item_id=bad)), "item_id", "control")
