"""Tests for the simulated storefront: determinism, wire format, shop rules and learnable signal."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from stream_reco.simulator import Storefront, make_catalog

EVENT_TYPES = {"view", "click", "add_to_cart", "remove_from_cart", "purchase"}
CATALOG_KEYS = {"item_id", "title", "category", "brand", "price", "in_stock", "tags", "margin"}


def sessions(n: int, seed: int = 0, catalog_seed: int = 0) -> list[list[dict[str, object]]]:
    shop = Storefront(make_catalog(seed=catalog_seed), seed=seed)
    return [shop.session() for _ in range(n)]


def carts(session: list[dict[str, object]]) -> set[str]:
    return {str(e["item_id"]) for e in session if e["type"] == "add_to_cart"}


def test_catalog_is_deterministic_and_well_formed() -> None:
    catalog = make_catalog(n_items=50, n_categories=3, seed=4)
    assert catalog == make_catalog(n_items=50, n_categories=3, seed=4)
    assert catalog != make_catalog(n_items=50, n_categories=3, seed=5)
    assert [item["item_id"] for item in catalog][:2] == ["item-0000", "item-0001"]
    assert len({item["item_id"] for item in catalog}) == 50
    assert len({item["category"] for item in catalog}) == 3
    for item in catalog:
        assert set(item) == CATALOG_KEYS
        assert isinstance(item["price"], float) and item["price"] > 0
        assert isinstance(item["in_stock"], bool)
        assert isinstance(item["tags"], list) and 1 <= len(item["tags"]) <= 3
        assert str(item["title"]).startswith(str(item["brand"]))
        assert 0.0 < float(item["margin"]) < 1.0  # type: ignore[arg-type]


def test_catalog_extends_word_lists_and_pads_ids() -> None:
    catalog = make_catalog(n_items=20_000, n_categories=15, n_brands=20, seed=1)
    assert catalog[0]["item_id"] == "item-00000"
    assert "category-14" in {item["category"] for item in catalog}
    assert "brand-19" in {item["brand"] for item in catalog}


def test_catalog_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_catalog(n_items=0)
    with pytest.raises(ValueError):
        make_catalog(out_of_stock_share=1.5)


def test_same_seed_same_events_and_different_seeds_differ() -> None:
    assert sessions(30, seed=7) == sessions(30, seed=7)
    assert sessions(30, seed=7) != sessions(30, seed=8)
    shop_a, shop_b = Storefront(make_catalog(), seed=1), Storefront(make_catalog(), seed=2)
    assert shop_a.complements != shop_b.complements


def test_events_follow_the_wire_format() -> None:
    all_sessions = sessions(300, seed=3)
    event_ids = [e["event_id"] for s in all_sessions for e in s]
    assert len(event_ids) == len(set(event_ids))
    assert len({s[0]["session_id"] for s in all_sessions}) == 300
    for session in all_sessions:
        assert len({e["session_id"] for e in session}) == 1
        assert len({e["user_id"] for e in session}) == 1
        stamps = [e["ts"] for e in session]
        assert stamps == sorted(stamps)
        assert 2 <= sum(e["type"] in ("view", "click") for e in session)
        for event in session:
            assert event["type"] in EVENT_TYPES
            assert isinstance(event["ts"], int)
            assert event["recommendation_id"] is None
            assert event["user_id"] is None or str(event["user_id"]).startswith("user-")
            assert str(event["event_id"]).startswith("sim-e")
            has_quantity = event["type"] in ("add_to_cart", "remove_from_cart", "purchase")
            assert ("quantity" in event) == has_quantity
            assert ("price" in event) == (event["type"] in ("add_to_cart", "purchase"))
            if has_quantity:
                assert isinstance(event["quantity"], int) and event["quantity"] >= 1


def test_sessions_follow_each_other_in_time() -> None:
    shop = Storefront(make_catalog(), seed=0, start_ms=1_000)
    first, second = shop.session(), shop.session()
    assert first[0]["ts"] == 1_000
    assert second[0]["ts"] > first[-1]["ts"]


def test_behaviour_mix_is_roughly_as_designed() -> None:
    all_sessions = sessions(2000, seed=5)
    with_cart = [s for s in all_sessions if carts(s)]
    bought = [s for s in with_cart if any(e["type"] == "purchase" for e in s)]
    assert 0.3 < len(with_cart) / len(all_sessions) < 0.5
    assert 0.25 < len(bought) / len(with_cart) < 0.45
    anonymous = sum(s[0]["user_id"] is None for s in all_sessions)
    assert 0.4 < anonymous / len(all_sessions) < 0.6


def test_out_of_stock_items_are_never_carted_or_bought() -> None:
    catalog = make_catalog(seed=2, out_of_stock_share=0.3)
    out_of_stock = {item["item_id"] for item in catalog if not item["in_stock"]}
    shop = Storefront(catalog, seed=2)
    events = [e for _ in range(1000) for e in shop.session()]
    seen = {e["item_id"] for e in events}
    carted = {e["item_id"] for e in events if e["type"] in ("add_to_cart", "purchase")}
    assert seen & out_of_stock  # they are still browsed
    assert not carted & out_of_stock


def test_purchases_and_removals_only_of_items_in_cart() -> None:
    for session in sessions(1000, seed=9):
        cart: dict[object, object] = {}
        for event in session:
            if event["type"] == "add_to_cart":
                cart[event["item_id"]] = event["quantity"]
            elif event["type"] in ("remove_from_cart", "purchase"):
                assert cart.get(event["item_id"]) == event["quantity"]
                if event["type"] == "remove_from_cart":
                    del cart[event["item_id"]]


def test_stream_is_time_ordered_and_respects_n_sessions() -> None:
    shop = Storefront(make_catalog(), seed=4)
    events = list(shop.stream(n_sessions=150, concurrency=10))
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps)
    assert len({e["session_id"] for e in events}) == 150
    assert len({e["event_id"] for e in events}) == len(events)
    # Sessions really overlap: the first ten events come from more than one shopper.
    assert len({e["session_id"] for e in events[:10]}) > 1
    again = list(Storefront(make_catalog(), seed=4).stream(n_sessions=150, concurrency=10))
    assert again == events


def test_endless_stream_keeps_going() -> None:
    endless = Storefront(make_catalog(), seed=0).stream()
    events = list(itertools.islice(endless, 5000))
    assert len(events) == 5000
    assert len({e["session_id"] for e in events}) > 200


def test_complements_are_bought_together_far_more_than_random_pairs() -> None:
    shop = Storefront(make_catalog(), seed=11)
    assert all(1 <= len(others) <= 3 for others in shop.complements.values())
    assert all(item not in others for item, others in shop.complements.items())
    all_carts = [carts(shop.session()) for _ in range(2000)]
    pairs = Counter(frozenset(p) for cart in all_carts for p in itertools.combinations(cart, 2))
    complement = [frozenset(p) for p in shop.complement_pairs()]
    items = list(shop.complements)
    rng = random.Random(0)
    randoms = [frozenset(rng.sample(items, 2)) for _ in range(len(complement))]
    complement_rate = sum(pairs[p] for p in complement) / len(complement)
    random_rate = sum(pairs[p] for p in randoms) / len(randoms)
    assert complement_rate > 1.0
    assert complement_rate > 5 * random_rate


def test_popularity_is_skewed() -> None:
    views = Counter(
        e["item_id"] for s in sessions(2000, seed=6) for e in s if e["type"] in ("view", "click")
    )
    top = sum(count for _, count in views.most_common(20))  # top 10% of 200 items
    assert top / sum(views.values()) > 0.3
