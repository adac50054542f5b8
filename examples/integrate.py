"""Integrate a shop: publish a catalogue, send events, get recommendations, change a rule."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from stream_reco.client import RecoClient, RecoTimeout
from stream_reco.config import Settings

settings = Settings.from_env()  # Kafka, topics, web port: from the STREAM_RECO_* variables
run = uuid.uuid4().hex[:6]  # fresh session and event ids, so the script can run again

ITEMS = [  # item_id, title, category, price
    ("mug-red", "Red Mug", "kitchen", 9.9),
    ("mug-blue", "Blue Mug", "kitchen", 9.9),
    ("teapot", "Glass Teapot", "kitchen", 24.0),
    ("kettle", "Steel Kettle", "kitchen", 39.0),
    ("grinder", "Coffee Grinder", "kitchen", 49.0),
    ("lamp-desk", "Desk Lamp", "lighting", 29.0),
    ("lamp-floor", "Floor Lamp", "lighting", 89.0),
    ("bulbs", "LED Bulbs (4)", "lighting", 12.0),
    ("tent", "Two-person Tent", "outdoor", 149.0),
    ("stove", "Camp Stove", "outdoor", 59.0),
    ("lantern", "Camping Lantern", "outdoor", 19.0),
    ("sleeping-bag", "Sleeping Bag", "outdoor", 79.0),
]
CATALOG = [
    {"item_id": i, "title": t, "category": c, "price": p, "in_stock": i != "kettle"}
    for i, t, c, p in ITEMS
]
CATEGORY = {i: c for i, _, c, _ in ITEMS}
SHOPPERS = [  # earlier visits: the items each viewed; the last one went into the cart
    ["mug-red", "teapot", "kettle", "grinder"],
    ["mug-blue", "teapot", "grinder"],
    ["mug-red", "mug-blue", "kettle", "teapot"],
    ["mug-blue", "lamp-desk", "bulbs"],
    ["tent", "stove", "lantern"],
    ["lamp-floor", "bulbs", "lantern"],
]
YOU, VIEWED = f"you-{run}", ["mug-red", "mug-blue"]


def event(n: int, session_id: str, item_id: str, kind: str) -> dict[str, Any]:
    return {
        "event_id": f"{session_id}-{n}",  # unique within its session
        "type": kind,
        "session_id": session_id,
        "item_id": item_id,
        "ts": int(time.time() * 1000),  # when the shopper acted, epoch milliseconds
    }


def until(what: str, ask: Callable[[], dict], done: Callable[[dict], bool]) -> dict:
    """Ask every half second until the answer is `done`; give up after 30 s."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            answer = ask()
            if done(answer):
                return answer
        except RecoTimeout:  # a worker that has only just started may miss a first request
            pass
        time.sleep(0.5)
    sys.exit(f"no {what} within 30 s: is the worker running (see worker.log)?")


def show(title: str, answer: dict) -> None:
    print(title)
    for rec in answer["items"]:
        category = CATEGORY.get(rec["item_id"], "?")
        print(f"  {rec['item_id']:<13} {category:<9} {rec['reason']}")


def cites_your_items(answer: dict) -> bool:  # the worker has applied your events
    return any(f"({v})" in rec["reason"] for rec in answer["items"] for v in VIEWED)


def one_per_category(answer: dict) -> bool:
    counts = Counter(CATEGORY.get(rec["item_id"], "?") for rec in answer["items"])
    return bool(counts) and max(counts.values()) == 1


with RecoClient.from_settings(settings, timeout=2.0) as client:
    # 1. The catalogue: one record per item, keyed by its item_id.
    client.publish_catalog(CATALOG)
    print(f"catalogue: {len(CATALOG)} items in 3 categories, kettle out of stock")

    # 2. Events: earlier shoppers, then your own visit to two product pages.
    for s, items in enumerate(SHOPPERS):
        for n, item_id in enumerate(items):
            kind = "add_to_cart" if n == len(items) - 1 else "view"
            client.track(event(n, f"shopper-{run}-{s}", item_id, kind))
    for n, item_id in enumerate(VIEWED):
        client.track(event(n, YOU, item_id, "view"))
    client.flush()
    print(f"events: {len(SHOPPERS)} earlier visits, then yours ({YOU}) viewing {VIEWED}")

    # 3. Recommendations over Kafka, once the worker has applied your events.
    def ask() -> dict:
        return client.recommend(YOU, k=4, placement="product_page")

    show("over Kafka (product_page, k=4):", until("answer from your visit", ask, cites_your_items))

    # 4. The same session over HTTP, on the worker's web port.
    query = f"session_id={YOU}&k=4&placement=product_page"
    url = f"http://127.0.0.1:{settings.web_port}/recommendations?{query}"
    with urllib.request.urlopen(url, timeout=5) as response:
        show(f"over HTTP (GET {url}):", json.load(response))

    # 5. A rule, changed at runtime: at most one item per category on product pages.
    client.set_rules("product_page", {"category_cap": 1})
    since = time.monotonic()
    after = until("answer under the new rule", ask, one_per_category)
    show(f"after set_rules category_cap=1 ({time.monotonic() - since:.1f} s later):", after)
    client.set_rules("product_page", None)  # and drop it again: the shop as it was
