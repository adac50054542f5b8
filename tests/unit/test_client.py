"""The client's checks before anything is sent: requests, events, catalogue records and rules
refused as the worker would."""

from __future__ import annotations

import re
import time
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from stream_reco.client import (
    InvalidEvent,
    InvalidItem,
    InvalidRequest,
    InvalidRules,
    RecoClient,
    RecoTimeout,
    encode_event,
    encode_item,
    encode_request,
    encode_rules,
)
from stream_reco.client.wire import encode_removal
from stream_reco.errors import ConfigError, StreamRecoError
from stream_reco.events import (
    CatalogItem,
    Rejected,
    Request,
    Tombstone,
    decode_catalog,
    decode_event,
    decode_request,
)
from stream_reco.ranking.policy import RulesUpdate, decode_config


def event(**change: Any) -> dict[str, Any]:
    doc = {
        "event_id": "e-1",
        "type": "add_to_cart",
        "session_id": "s-1",
        "item_id": "item-1",
        "ts": int(time.time() * 1000),
        "quantity": 2,
    }
    return {k: v for k, v in {**doc, **change}.items() if v is not ...}


def test_request_sends_only_what_was_given_and_decodes_as_the_worker_reads_it() -> None:
    assert orjson.loads(encode_request("c-1", "s-1")) == {"request_id": "c-1", "session_id": "s-1"}
    raw = encode_request("c-2", "s-1", 3, placement="cart", exclude=iter(["a", "b"]), user_id="u")
    assert decode_request(raw, 10, 100) == Request(
        "c-2", "s-1", 3, user_id="u", placement="cart", exclude=frozenset({"a", "b"})
    )


def test_request_names_the_item_in_view_only_when_given() -> None:
    raw = encode_request("c-3", "s-1", 4, placement="product_page", item_id="item-7")
    assert orjson.loads(raw)["item_id"] == "item-7"
    assert decode_request(raw, 10, 100) == Request(
        "c-3", "s-1", 4, placement="product_page", item_id="item-7"
    )
    assert "item_id" not in orjson.loads(encode_request("c-4", "s-1", item_id=None))


@pytest.mark.parametrize(
    ("args", "options", "reason"),
    [
        (("c-1", "s-1"), {"item_id": ""}, "invalid request: item_id must be a non-empty"),
        (("c-1", "s-1", 0), {}, "invalid request: k=0 is outside 1..100"),
        (("c-1", "s-1", 101), {}, "invalid request: k=101 is outside 1..100"),
        (("c-1", "s-1", True), {}, "invalid request: k must be an integer"),
        (("c-1", ""), {}, "invalid request: session_id must be a non-empty string"),
        (("c-1", "s-1"), {"exclude": [""]}, "invalid request: exclude[0] must be a non-empty"),
        (("c-1", "s-1"), {"exclude": "item-1"}, "invalid request: exclude must be a list of item"),
        (("c-1", "s-1"), {"placement": "p" * 129}, "invalid request: placement is longer"),
    ],
)
def test_request_the_worker_would_dead_letter_is_refused(
    args: tuple[Any, ...], options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidRequest) as err:
        encode_request(*args, **options)
    assert err.value.reason.startswith(reason) and str(err.value) == err.value.reason
    assert isinstance(err.value, ValueError) and isinstance(err.value, StreamRecoError)


def test_request_k_follows_the_workers_max_k() -> None:
    assert orjson.loads(encode_request("c-1", "s-1", 500, max_k=1000))["k"] == 500
    with pytest.raises(InvalidRequest):
        encode_request("c-1", "s-1", 500)


def test_request_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="invalid request"):
        encode_request("c-1", "s-1", exclude=[object()])  # type: ignore[list-item]


def test_valid_event_is_sent_as_given_keyed_by_its_session() -> None:
    doc = event(context={"page": "cart"})
    assert encode_event(doc) == ("s-1", orjson.dumps(doc))
    assert encode_event(MappingProxyType(doc)) == ("s-1", orjson.dumps(doc))


@pytest.mark.parametrize(
    "change",
    [
        {"event_id": ""},
        {"type": "like"},
        {"session_id": ...},
        {"ts": 1_000},
        {"ts": "in 2 hours"},  # past the default max_future_s
        {"quantity": 0},
        {"price": -1},
        {"context": {"x": "y" * 5000}},
    ],
)
def test_invalid_event_is_refused_with_the_workers_reason(change: dict[str, Any]) -> None:
    now = int(time.time() * 1000)
    if change.get("ts") == "in 2 hours":
        change = {"ts": now + 2 * 3600 * 1000}
    bad = event(**change)
    worker = decode_event(orjson.dumps(bad), now + 3600 * 1000)
    assert isinstance(worker, Rejected)
    with pytest.raises(InvalidEvent) as err:
        encode_event(bad)
    # A time limit in a reason is "now" plus the allowance, read a millisecond apart by the
    # two: compared as the same sentence with any instant in it.
    instant = re.compile(r"\d{13}")
    assert instant.sub("<ms>", err.value.reason) == instant.sub("<ms>", worker.reason)


def test_event_ts_limit_follows_max_future_s() -> None:
    later = event(ts=int(time.time() * 1000) + 2 * 3600 * 1000)
    assert encode_event(later, max_future_s=3 * 3600)[0] == "s-1"


def test_event_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="invalid event"):
        encode_event(event(price={1, 2}))


def test_timeout_is_a_timeout_error() -> None:
    assert issubclass(RecoTimeout, TimeoutError) and issubclass(RecoTimeout, StreamRecoError)


@pytest.mark.parametrize(
    "options", [{"client_id": "a-b"}, {"client_id": ""}, {"timeout": 0}, {"max_pending": 0}]
)
def test_bad_client_options_are_refused_before_connecting(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RecoClient("127.0.0.1:9092", **options)


def item(**change: Any) -> dict[str, Any]:
    doc = {"item_id": "item-1", "title": "Red Mug", "category": "kitchen", "in_stock": True}
    return {k: v for k, v in {**doc, **change}.items() if v is not ...}


def test_catalogue_record_is_sent_as_given_keyed_by_its_item_id() -> None:
    doc = item(tags=["ceramic"], price=9.9)
    key, raw = encode_item(doc)
    assert (key, raw) == ("item-1", orjson.dumps(doc))
    assert encode_item(MappingProxyType(doc)) == (key, raw)
    checked = decode_catalog(key.encode(), raw)
    assert isinstance(checked, CatalogItem) and checked.title == "Red Mug"


@pytest.mark.parametrize(
    "change",
    [
        {"item_id": ...},
        {"item_id": ""},
        {"item_id": 17},
        {"in_stock": "no"},
        {"tags": "ceramic"},
        {"price": -1},
        {"embedding": []},
        {"title": "t" * 70_000},  # past the 64 KiB message limit
    ],
)
def test_catalogue_record_the_worker_would_dead_letter_is_refused(change: dict[str, Any]) -> None:
    bad = item(**change)
    key = bad["item_id"].encode() if isinstance(bad.get("item_id"), str) else None
    worker = decode_catalog(key, orjson.dumps(bad))
    assert isinstance(worker, Rejected)
    with pytest.raises(InvalidItem) as err:
        encode_item(bad)
    assert err.value.reason == worker.reason and str(err.value) == worker.reason


@pytest.mark.parametrize("bad", [None, ["item-1"], "item-1", {"item_id": {1, 2}}])
def test_catalogue_record_that_is_no_json_object_is_refused(bad: Any) -> None:
    with pytest.raises(InvalidItem, match="invalid catalogue record"):
        encode_item(bad)


def test_removal_is_a_tombstone_keyed_by_a_valid_item_id() -> None:
    assert encode_removal("item-1") == "item-1"
    assert decode_catalog(b"item-1", None) == Tombstone("item-1")
    for bad in ("", "x" * 129, "a\x00b", 17):
        worker = decode_catalog(bad.encode(), None) if isinstance(bad, str) else None
        with pytest.raises(InvalidItem, match="invalid catalogue record: ") as err:
            encode_removal(bad)  # type: ignore[arg-type]
        assert worker is None or (isinstance(worker, Rejected) and worker.reason == str(err.value))


def test_rules_are_checked_with_the_workers_decoder() -> None:
    key, raw = encode_rules("product_page", {"category_cap": 1, "exclude": ["item-7"]})
    assert key == "product_page" and raw is not None
    update = decode_config(key.encode(), raw)
    assert isinstance(update, RulesUpdate) and update.key == "product_page"
    assert update.overrides is not None and update.overrides["category_cap"] == 1
    assert encode_rules("default", MappingProxyType({"mmr_lambda": 0.7}))[0] == "default"
    assert encode_rules("product_page", None) == ("product_page", None)  # drops the override
    assert decode_config(b"product_page", None) == RulesUpdate("product_page", None)


@pytest.mark.parametrize(
    ("key", "overrides", "says"),
    [
        ("product_page", {"diversity": 1}, "unknown fields ['diversity']"),
        ("product_page", {"category_cap": "one"}, "category_cap"),
        ("product_page", {"discovery_share": 0.5}, "discovery_share must be 0 (off) or in"),
        ("", {"category_cap": 1}, "no key"),
        ("p" * 129, {"category_cap": 1}, "key"),
        ("product_page", ["category_cap"], "product_page"),
    ],
)
def test_rules_the_worker_would_dead_letter_are_refused_with_its_reason(
    key: str, overrides: Any, says: str
) -> None:
    worker = decode_config(key.encode(), orjson.dumps(overrides))
    assert isinstance(worker, Rejected) and says in worker.reason
    with pytest.raises(InvalidRules) as err:
        encode_rules(key, overrides)
    assert err.value.reason == worker.reason and str(err.value) == worker.reason


@pytest.mark.parametrize(
    ("key", "overrides", "says"),
    [
        ("product_page", {"exclude": {1}}, "invalid rules message: Type is not JSON serializable"),
        (None, {"category_cap": 1}, "invalid rules message: key must be a string, not None"),
    ],
)
def test_rules_that_cannot_be_sent_at_all_are_refused(key: Any, overrides: Any, says: str) -> None:
    with pytest.raises(InvalidRules, match=re.escape(says)):
        encode_rules(key, overrides)


def test_a_catalogue_with_one_bad_item_sends_nothing_and_names_it() -> None:
    client = RecoClient("127.0.0.1:9092")  # nothing connects until something is sent
    try:
        good = [item(item_id=f"item-{n}") for n in range(3)]
        with pytest.raises(InvalidItem) as err:
            client.publish_catalog([*good, item(item_id="item-9", in_stock="no")])
        reason = "invalid catalogue record: in_stock must be true or false"
        assert err.value.reason == reason and str(err.value) == f"items[3]: {reason}"
        assert len(client._producer) == 0  # nothing queued for Kafka
        with pytest.raises(InvalidRules):
            client.set_rules("default", {"category_cap": -1})
        with pytest.raises(InvalidItem):
            client.remove_item("")
        assert len(client._producer) == 0
    finally:
        client.close()
