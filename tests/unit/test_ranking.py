"""Tests for candidates and ranking: source weights, normalising, blend, rules and reasons."""

from __future__ import annotations

import random

import pytest

from stream_reco.candidates import Candidate, cooccurrence, popularity, revisit, similar
from stream_reco.candidates.ann import ItemIndex
from stream_reco.candidates.vectors import content_vector
from stream_reco.config import Settings
from stream_reco.events import CatalogItem
from stream_reco.ranking import blend, explain, rules
from stream_reco.ranking.policy import Policy
from stream_reco.state import Interaction, SessionView

WEIGHTS = Settings().weights


def session(*recent: tuple[str, str], cart: dict[str, int] | None = None) -> SessionView:
    """A session from (item, type) pairs, newest first."""
    n = len(recent)
    return SessionView(
        "s",
        recent=tuple(Interaction(i, t, 1000 + n - pos) for pos, (i, t) in enumerate(recent)),
        cart=cart or {},
        purchased=frozenset(),
        last_ts=1000 + n,
    )


def source_weights(s: SessionView, limit: int = 10) -> dict[str, float]:
    return {it.item_id: w for it, w in cooccurrence.sources(s, WEIGHTS, limit)}


# -- cooccurrence.sources --------------------------------------------------------------------


def test_cart_item_counts_more_than_a_newer_view() -> None:
    w = source_weights(session(("v", "view"), ("c", "add_to_cart"), cart={"c": 1}))
    assert w["c"] > w["v"]


def test_cart_item_counts_as_cart_even_if_only_viewed_recently() -> None:
    # Added long ago (out of the recent list's cap) and viewed again since: still in the cart.
    w = source_weights(session(("v", "view"), ("c", "view"), cart={"c": 1}))
    assert w["c"] == pytest.approx(WEIGHTS["add_to_cart"])  # cart items lead the sources
    assert w["v"] == pytest.approx(WEIGHTS["view"] * cooccurrence.RECENCY)
    [(it, _)] = cooccurrence.sources(session(("c", "view"), cart={"c": 1}), WEIGHTS, 5)
    assert it.type == "add_to_cart"


def test_cart_items_stay_sources_after_many_later_views() -> None:
    views = [(f"v{n}", "view") for n in range(12)]
    expand = cooccurrence.sources(session(*views, ("c", "add_to_cart"), cart={"c": 1}), WEIGHTS, 5)
    assert [it.item_id for it, _ in expand] == ["c", "v0", "v1", "v2", "v3"]


def test_recency_decreases_weight() -> None:
    w = source_weights(session(("a", "view"), ("b", "view"), ("c", "view")))
    assert w["a"] > w["b"] > w["c"] > 0
    assert w["b"] / w["a"] == pytest.approx(cooccurrence.RECENCY)


def test_removed_from_cart_counts_as_a_view() -> None:
    w = source_weights(session(("r", "remove_from_cart"), ("v", "view")))
    assert w["r"] == pytest.approx(WEIGHTS["view"])
    assert w["r"] > w["v"]


def test_item_taken_out_of_the_cart_is_not_a_cart_source() -> None:
    # Added, then removed: the cart (authoritative) no longer holds it.
    s = session(("r", "remove_from_cart"), ("r", "add_to_cart"))
    [(it, weight)] = cooccurrence.sources(s, WEIGHTS, 10)
    assert it.type != "add_to_cart"  # else explain says "in your cart"
    assert weight == pytest.approx(WEIGHTS["view"])


def test_zero_weight_types_still_expand() -> None:
    zero = Settings(weights=dict(WEIGHTS) | {"view": 0.0}).weights
    out = cooccurrence.sources(session(("a", "view")), zero, 10)
    assert len(out) == 1 and out[0][1] > 0


def test_sources_respect_the_window() -> None:
    s = session(("a", "view"), ("b", "view"), ("c", "view"))
    assert list(source_weights(s, limit=2)) == ["a", "b"]


# -- cooccurrence.gather / popularity.gather -------------------------------------------------


def a_source(item: str, weight: float, kind: str = "view") -> tuple[Interaction, float]:
    return Interaction(item, kind, 0), weight


def test_gather_normalises_each_source() -> None:
    found: dict[str, Candidate] = {}
    neighbours = {
        "small": [("x", 2.0), ("y", 1.0)],
        "huge": [("z", 2000.0), ("w", 1000.0)],
    }
    cooccurrence.gather([a_source("small", 1.0), a_source("huge", 1.0)], neighbours, found)
    assert found["x"].features["cooc"] == pytest.approx(found["z"].features["cooc"])
    assert found["y"].features["cooc"] == pytest.approx(found["w"].features["cooc"])
    assert found["x"].features["cooc"] == pytest.approx(1.0)
    assert found["y"].features["cooc"] == pytest.approx(0.5)


def test_gather_sums_sources_and_keeps_the_strongest_for_the_reason() -> None:
    found: dict[str, Candidate] = {}
    expand = [a_source("a", 1.0, "view"), a_source("c", 4.0, "add_to_cart")]
    neighbours = {"a": [("x", 10.0)], "c": [("y", 5.0), ("x", 1.0)]}
    cooccurrence.gather(expand, neighbours, found)
    x = found["x"]
    assert x.features["cooc"] == pytest.approx(1.0 + 4.0 * 1.0 / 5.0)
    assert (x.source_item, x.source_type) == ("a", "view")  # 1.0 beats 0.8
    y = found["y"]
    # The share that picks the reason is weighted like the blend weighs the feature.
    assert (y.source_item, y.source_type) == ("c", "add_to_cart")
    assert y.source_share == pytest.approx(4.0 * blend.WEIGHTS["cooc"])


def test_sequence_source_wins_the_reason_when_it_weighs_more() -> None:
    found: dict[str, Candidate] = {}
    cooccurrence.gather([a_source("a", 1.0)], {"a": [("x", 3.0)]}, found)
    cooccurrence.gather([a_source("b", 1.0)], {"b": [("x", 3.0)]}, found, feature="seq")
    x = found["x"]
    assert x.features == {"cooc": 1.0, "seq": 1.0, "cooc0": 1.0, "seq0": 1.0}
    assert (x.source_item, x.source_kind) == ("b", "seq")
    assert "next after" in explain.reason(x, {})
    assert blend.score(x) == pytest.approx(blend.WEIGHTS["cooc"] + blend.WEIGHTS["seq"])


# -- what the reasons say about the session's items ---------------------------------------------

RED_MUG = {"r": CatalogItem("r", title="Red Mug", category="mugs", brand="Acme")}
REMOVED = session(("r", "remove_from_cart"), ("r", "add_to_cart"))  # the cart is empty again


def test_a_sequence_reason_after_a_cart_removal_says_viewed() -> None:
    found: dict[str, Candidate] = {}
    cooccurrence.gather(cooccurrence.recent(REMOVED, 3), {"r": [("x", 1.0)]}, found, "seq")
    assert explain.reason(found["x"], RED_MUG) == "often chosen next after Red Mug (r) you viewed"


def test_a_similarity_reason_after_a_cart_removal_says_viewed() -> None:
    meta = RED_MUG | {"x": CatalogItem("x", title="Blue Mug", category="mugs", brand="Acme")}
    index = ItemIndex()
    for item_id, info in meta.items():
        index.upsert(item_id, content_vector(info))
    found: dict[str, Candidate] = {}
    similar.gather(index, cooccurrence.recent(REMOVED, 3), found)
    assert explain.reason(found["x"], meta) == "similar to Red Mug (r) you viewed"


def test_a_cooccurrence_reason_of_a_cart_item_says_in_your_cart() -> None:
    s = session(("r", "view"), cart={"r": 1})  # added long ago, viewed again since
    for feature, expand in (
        ("seq", cooccurrence.recent(s, 3)),
        ("cooc", cooccurrence.sources(s, WEIGHTS, 3)),
    ):
        found: dict[str, Candidate] = {}
        cooccurrence.gather(expand, {"r": [("x", 1.0)]}, found, feature)
        assert explain.reason(found["x"], RED_MUG).endswith("Red Mug (r) in your cart")


def test_a_candidate_is_never_its_own_source() -> None:
    # Shoppers often go back to the item they just saw, so "a" follows "a" in the data.
    s = session(("a", "view"), ("b", "view"))
    found: dict[str, Candidate] = {}
    cooccurrence.gather(
        cooccurrence.recent(s, 3), {"a": [("a", 5.0), ("x", 1.0)], "b": [("a", 1.0)]}, found, "seq"
    )
    a = found["a"]
    assert a.features["seq"] == pytest.approx(1.0 + cooccurrence.SEQ_RECENCY)  # it still counts
    assert a.source_item == "b"  # the best *other* source names the reason
    assert explain.reason(a, {}) == "often chosen next after b you viewed"


def test_an_item_found_only_through_itself_reads_as_a_revisit() -> None:
    s = session(("a", "view"))
    found: dict[str, Candidate] = {}
    cooccurrence.gather(cooccurrence.recent(s, 3), {"a": [("a", 5.0)]}, found, "seq")
    cooccurrence.gather(cooccurrence.sources(s, WEIGHTS, 3), {"a": [("a", 2.0)]}, found)
    revisit.gather(s, found)
    assert found["a"].source_item is None
    assert explain.reason(found["a"], {}) == "you viewed it earlier in this visit"


def test_no_reason_cites_its_own_item_in_random_sessions() -> None:
    rng = random.Random(5)
    items = [f"i{n}" for n in range(8)]
    kinds = ["view", "click", "add_to_cart", "remove_from_cart", "purchase"]
    for _ in range(300):
        s = session(*((rng.choice(items), rng.choice(kinds)) for _ in range(rng.randint(1, 6))))
        rows = {i: [(j, rng.random()) for j in rng.sample(items, 4)] for i in items}
        for row in rows.values():
            row.sort(key=lambda pair: -pair[1])
        found: dict[str, Candidate] = {}
        cooccurrence.gather(cooccurrence.recent(s, 3), rows, found, "seq")
        cooccurrence.gather(cooccurrence.sources(s, WEIGHTS, 3), rows, found)
        revisit.gather(s, found)
        for c in found.values():
            assert c.source_item != c.item_id
            assert c.item_id not in explain.reason(c, {}).split()


def test_explain_never_names_the_item_as_its_own_cause() -> None:
    # Whatever a future source records, the reason falls through to the next one.
    c = Candidate("a", {"seq": 1.0, "in_session": 1.0}, "a", "view", 1.0, "seq")
    assert explain.reason(c, {}) == "you viewed it earlier in this visit"


def test_gather_ignores_sources_without_neighbours() -> None:
    found: dict[str, Candidate] = {}
    cooccurrence.gather([a_source("lonely", 1.0)], {"lonely": []}, found)
    cooccurrence.gather([a_source("missing", 1.0)], {}, found)
    assert found == {}


def test_popularity_is_normalised_and_adds_to_existing_candidates() -> None:
    found = {"x": Candidate("x", {"cooc": 0.5}, "a", "view", 0.5)}
    popularity.gather([("p", 4000.0), ("x", 1000.0)], found)
    assert found["p"].features == {"pop": 1.0}
    assert found["x"].features == {"cooc": 0.5, "pop": 0.25}
    assert found["x"].source_item == "a"
    popularity.gather([], found)
    assert set(found) == {"p", "x"}


# -- blend -----------------------------------------------------------------------------------


def test_any_cooccurrence_candidate_beats_any_popular_only_one() -> None:
    weak = Candidate("weak", {"cooc": 1e-9})
    star = Candidate("star", {"pop": 1e9})
    both = Candidate("both", {"cooc": 0.5, "pop": 1.0})
    ranked = [c.item_id for c, _ in blend.order([star, weak, both])]
    assert ranked == ["both", "weak", "star"]


def test_popularity_breaks_cooccurrence_near_ties_and_orders_fallbacks() -> None:
    a = Candidate("a", {"cooc": 1.0, "pop": 0.1})
    b = Candidate("b", {"cooc": 1.0, "pop": 0.9})
    p1 = Candidate("p1", {"pop": 0.2})
    p2 = Candidate("p2", {"pop": 0.8})
    assert [c.item_id for c, _ in blend.order([a, p1, b, p2])] == ["b", "a", "p2", "p1"]


def test_ties_are_broken_by_item_id() -> None:
    cands = [Candidate(i, {"cooc": 1.0}) for i in ("item-2", "item-10", "item-1")]
    cands += [Candidate(i, {"pop": 0.5}) for i in ("z", "y")]
    ranked = blend.order(cands)
    assert [c.item_id for c, _ in ranked] == ["item-1", "item-10", "item-2", "y", "z"]
    assert blend.order(list(reversed(cands))) == ranked
    w = blend.WEIGHTS["cooc"]
    assert [s for _, s in ranked] == [w, w, w, 0.5 * blend.POP_SHARE, 0.5 * blend.POP_SHARE]


# -- rules -----------------------------------------------------------------------------------


def test_blocked_is_cart_purchased_and_excluded() -> None:
    s = SessionView("s", cart={"c": 1}, purchased=frozenset({"p"}))
    assert rules.blocked(s, ["e"]) == {"c", "p", "e"}
    assert rules.blocked(SessionView("s"), ()) == set()


def test_allowed_applies_block_stock_and_catalogue() -> None:
    meta = {
        "ok": CatalogItem("ok"),
        "gone": CatalogItem("gone", in_stock=False),
        "c": CatalogItem("c"),
    }
    block = {"c"}
    assert rules.allowed("ok", meta, block, require_catalog=True)
    assert not rules.allowed("c", meta, block, require_catalog=False)
    assert not rules.allowed("gone", meta, block, require_catalog=False)
    assert not rules.allowed("unknown", meta, block, require_catalog=True)
    assert rules.allowed("unknown", meta, block, require_catalog=False)
    assert not rules.allowed("unknown", meta, {"unknown"}, require_catalog=False)


def test_allowed_applies_the_policys_category_and_brand_exclusions() -> None:
    meta = {
        "mug": CatalogItem("mug", category="kitchen", brand="Acme"),
        "pen": CatalogItem("pen", category="office", brand="Inko"),
        "cup": CatalogItem("cup", category="kitchen > cups", brand="Acme"),
        "bare": CatalogItem("bare"),
    }
    shelf = Policy(exclude_categories=["kitchen"], exclude_brands=["Inko"])
    allowed = {i for i in [*meta, "unknown"] if rules.allowed(i, meta, set(), False, shelf)}
    assert allowed == {"cup", "bare", "unknown"}  # exact names; unknown metadata: no match
    assert rules.excluded_by_catalog(meta.items(), shelf) == {"mug", "pen"}
    assert rules.excluded_by_catalog(meta.items(), Policy()) == set()


def test_the_item_in_view_is_the_pages_item_else_the_latest_one() -> None:
    s = session(("b", "view"), ("a", "click"))
    assert rules.in_view(s, "page") == "page"
    assert rules.in_view(s, None) == "b"
    assert rules.in_view(SessionView("new"), None) is None
    assert rules.in_view(SessionView("new"), "page") == "page"


# -- explain ---------------------------------------------------------------------------------


def test_reason_names_source_item_title_and_where() -> None:
    meta = {"a": CatalogItem("a", title="Oak Lamp")}
    c = Candidate("x", {"cooc": 1.0}, source_item="a", source_type="add_to_cart", source_share=1)
    text = explain.reason(c, meta)
    assert "Oak Lamp" in text and "(a)" in text and "in your cart" in text
    bought = Candidate("x", {"cooc": 1.0}, source_item="a", source_type="purchase")
    assert "you bought" in explain.reason(bought, meta)


def test_reason_without_title_uses_the_id() -> None:
    c = Candidate("x", {"cooc": 1.0}, source_item="item-42", source_type="view")
    assert explain.reason(c, {}) == "often chosen with item-42 you viewed"
    untitled = {"item-42": CatalogItem("item-42")}
    assert explain.reason(c, untitled) == "often chosen with item-42 you viewed"


def test_popular_only_reason() -> None:
    assert explain.reason(Candidate("p", {"pop": 1.0}), {}) == "popular"
    # A source without a co-occurrence score is not a reason to name it.
    stale = Candidate("p", {"pop": 1.0, "cooc": 0.0}, source_item="a", source_type="view")
    assert explain.reason(stale, {}) == "popular"


def test_every_blend_feature_can_be_overridden_by_settings() -> None:
    from stream_reco.config import FEATURES

    # config.py cannot import the ranking package, so the two lists are kept in step here.
    assert set(FEATURES) == set(blend.DEFAULT)


def test_a_profile_candidate_says_it_comes_from_an_earlier_visit() -> None:
    from stream_reco.candidates import Candidate

    only_profile = Candidate("p", {"profile": 0.4, "pop": 0.1})
    assert explain.reason(only_profile, {}) == "you looked at it on an earlier visit"
    assert explain.reason(Candidate("q", {"pop": 0.1}), {}) == "popular"
