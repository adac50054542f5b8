"""End to end on the real stack: catalogue and events in Kafka -> worker -> responses out."""

from __future__ import annotations

import base64
import itertools
import time
from typing import Any

import orjson

from stream_reco.config import Settings
from tests.integration.conftest import Kafka, cli, uid, wait_item, wait_session

TS = 1_750_000_000_000
_n = itertools.count()


def event(session: str, item: str, kind: str = "view", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": uid("ev"),
        "type": kind,
        "session_id": session,
        "item_id": item,
        "ts": TS + next(_n) * 1000,
        "user_id": None,
        **extra,
    }


def item(item_id: str, title: str, in_stock: bool = True) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "title": title,
        "category": "kitchen",
        "brand": "Acme",
        "price": 10.0,
        "in_stock": in_stock,
        "tags": ["t"],
    }


def catalogue(kafka: Kafka, *records: dict[str, Any]) -> None:
    """Publish catalogue records and wait until the worker has applied them."""
    for r in records:
        kafka.send(kafka.settings.topic_catalog, r["item_id"], r)
    for r in records:
        wait_item(kafka.settings, r["item_id"], r["in_stock"])


def together(kafka: Kafka, first: str, second: str, sessions: int = 5) -> None:
    """Sessions where `first` is viewed and `second` added to cart; waits for their pushes."""
    s = kafka.settings
    for _ in range(sessions):
        sid = uid("bg")
        kafka.send(s.topic_events, sid, event(sid, first))
        kafka.send(s.topic_events, sid, event(sid, second, "add_to_cart"))
        kafka.wait_for(lambda t, d, sid=sid: d.get("session_id") == sid)


def push_for(kafka: Kafka, session: str) -> tuple[dict[str, Any], float]:
    _, doc, when = kafka.wait_for(
        lambda t, d: (
            t == kafka.settings.topic_responses
            and d["session_id"] == session
            and d["trigger"] == "add_to_cart"
        )
    )
    return doc, when


def test_cart_addition_pushes_cooccurring_item_with_reason(kafka: Kafka) -> None:
    a, b = uid("A"), uid("B")
    catalogue(kafka, item(a, "Blue Mug"), item(b, "Tea Pot"))
    together(kafka, a, b)
    sid = uid("shopper")
    cart = event(sid, a, "add_to_cart")
    sent = kafka.send(kafka.settings.topic_events, sid, cart)
    doc, arrived = push_for(kafka, sid)
    assert doc["request_id"] is None and doc["recommendation_id"]
    assert doc["event_id"] == cart["event_id"]  # a client matches the push to its cart event
    first = doc["items"][0]
    assert first["item_id"] == b
    assert a in first["reason"] and "Blue Mug" in first["reason"]
    assert arrived - sent < 1.0, f"push took {arrived - sent:.3f}s"


def test_same_event_twice_counts_once(kafka: Kafka, settings: Settings) -> None:
    a = uid("A")
    catalogue(kafka, item(a, "Lamp"))
    sid = uid("dup")
    ev = event(sid, a, "add_to_cart", quantity=2)
    kafka.send(settings.topic_events, sid, ev)
    push_for(kafka, sid)
    kafka.send(settings.topic_events, sid, ev)  # redelivery: same event_id
    marker = event(sid, uid("other"))  # a later event proves the duplicate was consumed
    kafka.send(settings.topic_events, sid, marker)
    wait_session(settings, sid, 2)
    state = cli(settings, "inspect", "--session", sid)
    assert marker["item_id"] in [r[0] for r in state["recent"]]
    assert state["events"] == 2
    assert state["cart"] == {a: 2}
    assert [r[0] for r in state["recent"]].count(a) == 1
    pushes = [d for d in kafka.responses() if d["session_id"] == sid]
    assert len(pushes) == 1


def test_malformed_messages_are_dead_lettered_and_processing_goes_on(
    kafka: Kafka, settings: Settings, worker: Any
) -> None:
    sid = uid("bad")
    garbage = b"{this is not json"
    kafka.send(settings.topic_events, sid, garbage)
    kafka.send(settings.topic_events, sid, {**event(sid, "x"), "type": "teleport"})
    future = {**event(sid, "x"), "ts": int(time.time() * 1000) + 10 * 86_400_000}
    kafka.send(settings.topic_events, sid, future)
    good = event(sid, uid("fine"), "add_to_cart")
    kafka.send(settings.topic_events, sid, good)

    _, dead, _ = kafka.wait_for(
        lambda t, d: (
            t == settings.topic_deadletter
            and d["value_b64"]
            and base64.b64decode(d["value_b64"]) == garbage
        )
    )
    assert "JSON" in dead["reason"] and dead["source_topic"] == settings.topic_events
    assert dead["offset"] is not None and base64.b64decode(dead["key_b64"]) == sid.encode()
    _, wrong_type, _ = kafka.wait_for(
        lambda t, d: t == settings.topic_deadletter and "teleport" in d["reason"]
    )
    assert "type" in wrong_type["reason"]
    kafka.wait_for(
        lambda t, d: (
            t == settings.topic_deadletter
            and orjson.dumps(future) == base64.b64decode(d["value_b64"])
            and "ts" in d["reason"]
        )
    )
    push_for(kafka, sid)  # the valid event after them was processed
    state = cli(settings, "inspect", "--session", sid)
    assert state["events"] == 1 and good["item_id"] in state["cart"]
    assert worker.poll() is None, "worker exited"


def test_out_of_stock_items_are_never_recommended(kafka: Kafka, settings: Settings) -> None:
    a, gone, later = uid("A"), uid("gone"), uid("later")
    catalogue(kafka, item(a, "Tent"), item(gone, "Stove", in_stock=False), item(later, "Lamp"))
    together(kafka, a, gone)
    together(kafka, a, later)
    sid = uid("camper")
    kafka.send(settings.topic_events, sid, event(sid, a, "add_to_cart"))
    doc, _ = push_for(kafka, sid)
    assert later in [i["item_id"] for i in doc["items"]]

    catalogue(kafka, item(later, "Lamp", in_stock=False))  # sold out at runtime
    req = uid("req")
    kafka.send(settings.topic_requests, sid, {"request_id": req, "session_id": sid, "k": 20})
    _, answer, _ = kafka.wait_for(lambda t, d: d.get("request_id") == req)
    shown = [i["item_id"] for i in answer["items"]]
    assert later not in shown
    for d in kafka.responses():
        assert gone not in [i["item_id"] for i in d["items"]], d


def test_request_answers_with_k_and_respects_cart_purchases_and_exclude(
    kafka: Kafka, settings: Settings
) -> None:
    items = [uid(f"I{n}") for n in range(6)]
    catalogue(kafka, *(item(i, f"Thing {n}") for n, i in enumerate(items)))
    for other in items[1:]:
        together(kafka, items[0], other, sessions=2)
    sid = uid("buyer")
    kafka.send(settings.topic_events, sid, event(sid, items[0], "add_to_cart"))
    kafka.send(settings.topic_events, sid, event(sid, items[1], "add_to_cart"))
    kafka.send(settings.topic_events, sid, event(sid, items[1], "purchase"))
    kafka.send(settings.topic_events, sid, event(sid, items[2], "add_to_cart"))
    # Requests and events are separate topics with no order between them: a request sent right
    # after an event may be answered before the event lands, so wait until it has.
    wait_session(settings, sid, 4)
    req = uid("req")
    kafka.send(
        settings.topic_requests,
        sid,
        {
            "request_id": req,
            "session_id": sid,
            "k": 2,
            "exclude": [items[3]],
        },
    )
    _, answer, _ = kafka.wait_for(lambda t, d: d.get("request_id") == req)
    shown = [i["item_id"] for i in answer["items"]]
    assert answer["trigger"] == "request" and answer["session_id"] == sid
    assert len(shown) == 2
    assert not set(shown) & {items[0], items[1], items[2], items[3]}
    assert all(i["reason"] for i in answer["items"])


def test_tombstone_removes_item(kafka: Kafka, settings: Settings) -> None:
    a, b = uid("A"), uid("B")
    catalogue(kafka, item(a, "Desk"), item(b, "Chair"))
    together(kafka, a, b)
    kafka.send(settings.topic_catalog, b, None)
    wait_item(settings, b, None)
    assert cli(settings, "inspect", "--item", b)["known"] is False
    sid = uid("office")
    kafka.send(settings.topic_events, sid, event(sid, a, "add_to_cart"))
    doc, _ = push_for(kafka, sid)
    assert b not in [i["item_id"] for i in doc["items"]]
