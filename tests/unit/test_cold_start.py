"""Cold start from the catalogue alone: newest items round-robin over categories, ranked after
anything shoppers used, explained as new."""

from __future__ import annotations

import random

from stream_reco.candidates import Candidate, newest, popularity
from stream_reco.events import CatalogItem
from stream_reco.ranking import blend, explain, model


def shelf(**categories: str) -> dict[str, CatalogItem]:
    """Metadata from item=category pairs."""
    return {i: CatalogItem(i, i.upper(), category=c) for i, c in categories.items()}


def test_round_robin_over_categories_newest_first() -> None:
    meta = shelf(a1="mugs", a2="mugs", a3="mugs", b1="tea", c1="pans", b2="tea")
    newest_first = ["a1", "a2", "a3", "b1", "c1", "b2"]
    # Each category's newest item, in the order of those items; then the second round.
    assert newest.order(newest_first, meta) == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_order_leaves_out_sold_out_and_unknown_items() -> None:
    meta = shelf(a1="mugs", a2="mugs", b1="tea")
    meta["a1"] = CatalogItem("a1", category="mugs", in_stock=False)
    assert newest.order(["gone", "a1", "a2", "b1"], meta) == ["a2", "b1"]


def test_items_without_a_category_share_one_turn() -> None:
    meta = shelf(x1="", x2="", a1="mugs", a2="mugs")
    assert newest.order(["x1", "x2", "a1", "a2"], meta) == ["x1", "a1", "x2", "a2"]


def test_no_category_repeats_before_every_category_had_its_turn() -> None:
    rng = random.Random(7)
    cats = [f"c{n}" for n in range(6)]
    meta = {f"i{n}": CatalogItem(f"i{n}", category=rng.choice(cats)) for n in range(200)}
    ordered = newest.order(list(meta), meta)
    assert sorted(ordered) == sorted(meta)
    present = {m.category for m in meta.values()}
    first_round = [meta[i].category for i in ordered[: len(present)]]
    assert sorted(first_round) == sorted(present)


def test_the_feature_falls_evenly_from_one_in_the_given_order() -> None:
    found: dict[str, Candidate] = {}
    newest.add(["b", "a", "c", "d"], found)
    values = [found[i].features[newest.FEATURE] for i in ("b", "a", "c", "d")]
    assert values == [1.0, 0.75, 0.5, 0.25]


def test_the_catalogue_is_read_only_when_popularity_came_back_short() -> None:
    assert newest.short([], 30)
    assert newest.short([("p", 1.0)] * 29, 30)
    assert not newest.short([("p", 1.0)] * 30, 30)


def test_session_then_popular_then_new_in_catalogue_order() -> None:
    found: dict[str, Candidate] = {}
    # A stale popular item: a hundredth of the top one's popularity still outranks every
    # catalogue pick.
    popularity.gather([("p1", 100.0), ("p2", 1.0)], found)
    newest.add(["n1", "n2", "n3", "p2"], found)
    found["s"] = Candidate("s", {"cooc": 0.01})
    ordered = [c.item_id for c, _ in blend.order(list(found.values()), blend.DEFAULT)]
    assert ordered == ["s", "p1", "p2", "n1", "n2", "n3"]


def test_newness_weighs_less_than_popularity_and_more_than_nothing() -> None:
    assert 0 < blend.DEFAULT[newest.FEATURE] <= blend.DEFAULT["pop"] / 1000
    # Not a session feature: a catalogue pick never jumps the session-based tier.
    assert newest.FEATURE not in blend.SESSION_FEATURES


def test_a_catalogue_only_pick_says_it_is_new_and_why() -> None:
    meta = shelf(n1="mugs")
    assert explain.reason(Candidate("n1", {newest.FEATURE: 1.0}), meta) == newest.REASON
    assert "no shopping data" in newest.REASON
    # Once shoppers used it, popularity is the reason.
    both = Candidate("n1", {newest.FEATURE: 1.0, "pop": 0.2})
    assert explain.reason(both, meta) == "popular"


def test_the_learned_model_scores_and_learns_the_new_feature() -> None:
    start = model.blend_weights()
    assert start.weights[newest.FEATURE] == blend.DEFAULT[newest.FEATURE]
    learner = model.Learner(start, lr=0.5)
    learner.learn({newest.FEATURE: 1.0}, [{"pop": 0.01}])
    learned = learner.snapshot()
    assert learned.weights[newest.FEATURE] > start.weights[newest.FEATURE]
    again = model.Weights.from_json(learned.to_json())
    assert again.score({newest.FEATURE: 1.0}) == learned.score({newest.FEATURE: 1.0})
    # A model published before the feature existed scores it 0 rather than failing.
    old = model.Weights(3, 10, {"pop": 0.001})
    assert old.score({newest.FEATURE: 1.0}) == 0.0
