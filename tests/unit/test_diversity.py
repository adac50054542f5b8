"""Tests for the final picks: the rules hold on every response, and each feature does its job."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from stream_reco.events import CatalogItem
from stream_reco.ranking import rules
from stream_reco.ranking.diversity import (
    BASE_WEIGHTS,
    SLOTS,
    Slot,
    boosted,
    dominant_categories,
    metadata_similarity,
    select,
    slot_counts,
    wanted,
)
from stream_reco.ranking.policy import Policy
from stream_reco.state import Interaction, SessionView

SEEDS = range(300)


def item(item_id: str, category: str = "", brand: str = "", **kw: object) -> CatalogItem:
    return CatalogItem(item_id, title=item_id, category=category, brand=brand, **kw)  # type: ignore[arg-type]


def session(
    *recent: tuple[str, str], cart: tuple[str, ...] = (), bought: tuple[str, ...] = ()
) -> SessionView:
    """A session from (item, type) pairs, newest first, one second apart."""
    n = len(recent)
    return SessionView(
        "s",
        recent=tuple(Interaction(i, t, 1000 * (n - pos)) for pos, (i, t) in enumerate(recent)),
        cart=dict.fromkeys(cart, 1),
        purchased=frozenset(bought),
        last_ts=1000 * n,
    )


def ids(picks: list[Slot]) -> list[str]:
    return [p.item_id for p in picks]


# -- random worlds for the property tests ----------------------------------------------------


def world(
    rng: random.Random, blank: str = ""
) -> tuple[list[tuple[str, float]], dict[str, CatalogItem], SessionView, Policy, int, set[str]]:
    """A random catalogue, candidate list, session, policy, k and block set; `blank` is the
    category of some items (default: none known)."""
    n = rng.randint(0, 120)
    cats = [f"c{j}" for j in range(rng.randint(1, 8))]
    meta = {
        f"i{j}": item(
            f"i{j}",
            rng.choice([*cats, blank]),
            rng.choice(["b0", "b1", "b2", ""]),
            in_stock=rng.random() > 0.1,
            margin=rng.choice([None, -0.2, *(rng.random() for _ in range(3))]),
            price=rng.choice([None, rng.uniform(1, 100)]),
        )
        for j in range(n)
        if rng.random() > 0.05  # a few items the catalogue does not know
    }
    every = [f"i{j}" for j in range(n)]
    ranked = sorted(((rng.choice(every), rng.random()) for _ in range(n)), key=lambda p: -p[1])
    if rng.random() < 0.3:
        rng.shuffle(ranked)  # scores that disagree with the ranker's order
    seen = rng.sample(every, min(n, rng.randint(0, 8)))
    types = ["view", "click", "add_to_cart", "remove_from_cart", "purchase"]
    s = session(
        *((i, rng.choice(types)) for i in seen),
        cart=tuple(rng.sample(every, min(n, rng.randint(0, 3)))),
        bought=tuple(rng.sample(every, min(n, rng.randint(0, 2)))),
    )
    policy = Policy(
        category_cap=rng.choice([None, 1, 2, 3]),
        mmr_lambda=rng.choice([1.0, 0.7, 0.3, 0.0]),
        margin_boost=rng.choice([0.0, 0.5, 2.0]),
        price_boost=rng.choice([0.0, 0.3]),
        promoted=tuple(rng.sample(every, min(n, rng.randint(0, 6)))),
        promoted_share=rng.choice([0.0, 0.1, 0.2, 0.5]),
        discovery_share=rng.choice([0.0, 0.15, 0.2, 0.25]),
        exclude=rng.sample(every, min(n, rng.randint(0, 3))),
    )
    k = rng.randint(1, 25)
    return ranked, meta, s, policy, k, set(rng.sample(every, min(n, rng.randint(0, 3))))


def test_rules_hold_on_every_response() -> None:
    for seed in SEEDS:
        ranked, meta, s, policy, k, block = world(random.Random(seed))
        picks = select(ranked, meta, s, policy, k, block)
        got = ids(picks)
        banned = set(s.cart) | s.purchased | policy.exclude | block
        assert len(got) <= k and len(set(got)) == len(got), seed
        assert not set(got) & banned, seed
        assert all(i in meta and meta[i].in_stock for i in got), seed
        assert all(p.slot in SLOTS for p in picks), seed
        if policy.category_cap is not None:
            per = Counter(meta[i].category for i in got if meta[i].category)
            assert max(per.values(), default=0) <= policy.category_cap, seed
        assert all(
            i in policy.promoted for i, p in zip(got, picks, strict=True) if p.slot == "promoted"
        )


def _capacity(items: list[str], meta: dict[str, CatalogItem], cap: int | None) -> int:
    """How many of `items` fit under the cap together."""
    per = Counter(meta[i].category for i in items)
    return sum(n if not c or cap is None else min(n, cap) for c, n in per.items())


def test_exactly_the_promoted_share_when_enough_are_eligible() -> None:
    for seed in SEEDS:
        ranked, meta, s, policy, k, block = world(random.Random(seed))
        picks = select(ranked, meta, s, policy, k, block)
        banned = rules.blocked(s, policy.exclude) | block
        eligible = [i for i in policy.promoted if rules.allowed(i, meta, banned, True)]
        want, _ = slot_counts(policy, k)
        got = sum(p.slot == "promoted" for p in picks)
        assert got == min(want, _capacity(eligible, meta, policy.category_cap)), seed


def test_discovery_slots_come_from_outside_the_dominant_categories() -> None:
    for seed in SEEDS:
        ranked, meta, s, policy, k, block = world(random.Random(seed))
        picks = select(ranked, meta, s, policy, k, block)
        main = dominant_categories(s, meta, BASE_WEIGHTS)
        found = [p.item_id for p in picks if p.slot == "discovery"]
        assert all(meta[i].category and meta[i].category not in main for i in found), seed
        _, want = slot_counts(policy, k)
        if len(found) < want and main:
            # Short only because nothing else outside them could be shown.
            per = Counter(meta[i].category for i in ids(picks))
            cap = policy.category_cap
            for i, _ in ranked:
                info = meta.get(i)
                if i in ids(picks) or not rules.allowed(
                    i, meta, rules.blocked(s, policy.exclude) | block, True
                ):
                    continue
                outside = info is not None and info.category and info.category not in main
                assert not outside or (cap is not None and per[info.category] >= cap), seed


def test_fills_k_whenever_an_allowed_candidate_fits() -> None:
    for seed in SEEDS:
        ranked, meta, s, policy, k, block = world(random.Random(seed))
        picks = ids(select(ranked, meta, s, policy, k, block))
        if len(picks) == k:
            continue
        banned = rules.blocked(s, policy.exclude) | block
        left = {i for i, _ in ranked if rules.allowed(i, meta, banned, True)} - set(picks)
        per = Counter(meta[i].category for i in picks)
        cap = policy.category_cap
        assert all(
            cap is not None and meta[i].category and per[meta[i].category] >= cap for i in left
        ), seed


def test_default_policy_is_todays_behaviour() -> None:
    """Nothing configured: the first k allowed candidates, in the ranker's order."""
    for seed in SEEDS:
        ranked, meta, s, _, k, block = world(random.Random(seed))
        picks = select(ranked, meta, s, Policy(), k, block)
        banned = rules.blocked(s, ()) | block
        today = list(dict.fromkeys(i for i, _ in ranked if rules.allowed(i, meta, banned, True)))
        assert ids(picks) == today[:k], seed
        assert {p.slot for p in picks} <= {"relevance"}


def test_lower_lambda_never_shows_fewer_categories_than_pure_relevance() -> None:
    # Every item categorised: an item of unknown category resembles nothing, so λ = 0 would
    # rightly favour it, without adding a category anyone can count.
    for seed in SEEDS:
        ranked, meta, s, _, k, block = world(random.Random(seed), blank="c-misc")
        shown = {
            lam: {
                meta[i].category
                for i in ids(select(ranked, meta, s, Policy(mmr_lambda=lam), k, block))
            }
            for lam in (0.0, 1.0)
        }
        banned = rules.blocked(s, ()) | block
        available = {meta[i].category for i, _ in ranked if rules.allowed(i, meta, banned, True)}
        # λ = 0 takes a new category whenever one is left: as many as k allows.
        assert len(shown[0.0]) == min(k, len(available)) >= len(shown[1.0]), seed


def test_cost_stays_within_k_times_candidates_similarities() -> None:
    rng = random.Random(7)
    meta = {f"i{j}": item(f"i{j}", f"c{j % 4}", f"b{j % 5}") for j in range(300)}
    ranked = [(f"i{j}", 1.0 - j / 300) for j in range(300)]
    calls = 0
    sim = metadata_similarity(meta)

    def counted(a: str, b: str) -> float:
        nonlocal calls
        calls += 1
        return sim(a, b)

    s = session(*((f"i{rng.randrange(300)}", "view") for _ in range(5)))
    policy = Policy(
        category_cap=6, mmr_lambda=0.3, discovery_share=0.2, promoted=("i299",), promoted_share=0.1
    )
    picks = select(ranked, meta, s, policy, 20, similarity=counted)
    assert len(picks) == 20
    assert 0 < calls <= 20 * 300


# -- exclusions ------------------------------------------------------------------------------


def test_every_kind_of_exclusion() -> None:
    meta = {i: item(i) for i in "abcdefg"} | {"o": item("o", in_stock=False)}
    ranked = [(i, 1.0) for i in "abcdefgoz"]  # z: unknown to the catalogue
    s = session(("a", "view"), cart=("b",), bought=("c",))
    picks = select(ranked, meta, s, Policy(exclude=["d"]), 10, block={"e"})
    assert ids(picks) == ["a", "f", "g"]
    loose = select(ranked, meta, s, Policy(), 10, require_catalog=False)
    assert ids(loose) == ["a", "d", "e", "f", "g", "z"]


def test_category_and_brand_exclusions_hold_in_every_slot_kind() -> None:
    meta = {
        "k1": item("k1", "kitchen", "Acme"),
        "k2": item("k2", "kitchen", "Acme"),
        "o1": item("o1", "office", "Inko"),
        "o2": item("o2", "office", "Acme"),
        "g1": item("g1", "garden", "Verde"),
        "g2": item("g2", "garden", "Verde"),
        "t1": item("t1", "toys", "Acme"),
    }
    ranked = [(i, 1 - n / 10) for n, i in enumerate(meta)]
    s = session(("k1", "view"))
    rules_ = Policy(
        exclude_categories=["kitchen"],
        exclude_brands=["Inko"],
        promoted=["k2", "o1", "g2"],
        promoted_share=0.4,
        discovery_share=0.2,
        mmr_lambda=0.7,
    )
    picks = select(ranked, meta, s, rules_, 5)
    assert ids(picks) and not {"k1", "k2", "o1"} & set(ids(picks))
    assert [p.item_id for p in picks if p.slot == "promoted"] == ["g2"]
    assert {p.slot for p in picks} == set(SLOTS)  # each kind was tried
    plain = select(ranked, meta, s, Policy(exclude_categories=["kitchen"]), 10)
    assert ids(plain) == ["o1", "o2", "g1", "g2", "t1"]  # the pure-relevance path too


def test_category_and_brand_exclusions_in_random_worlds() -> None:
    for seed in SEEDS:
        rng = random.Random(seed)
        ranked, meta, s, policy, k, block = world(rng)
        cats = sorted({m.category for m in meta.values() if m.category})
        shelf = Policy(
            **{f: getattr(policy, f) for f in ("category_cap", "mmr_lambda", "promoted")},
            promoted_share=policy.promoted_share,
            discovery_share=policy.discovery_share,
            exclude_categories=rng.sample(cats, min(len(cats), rng.randint(0, 2))),
            exclude_brands=rng.sample(["b0", "b1", "b2"], rng.randint(0, 1)),
        )
        for p in select(ranked, meta, s, shelf, k, block):
            info = meta[p.item_id]
            assert info.category not in shelf.exclude_categories, seed
            assert info.brand not in shelf.exclude_brands, seed


# -- relevance order, boosts and MMR ---------------------------------------------------------


def test_lambda_one_keeps_relevance_order_even_with_a_cap() -> None:
    meta = {f"i{j}": item(f"i{j}", "same") for j in range(5)} | {"x": item("x", "other")}
    ranked = [(f"i{j}", 1 - j / 10) for j in range(5)] + [("x", 0.1)]
    assert ids(select(ranked, meta, session(), Policy(), 4)) == ["i0", "i1", "i2", "i3"]
    capped = select(ranked, meta, session(), Policy(category_cap=2), 4)
    assert ids(capped) == ["i0", "i1", "x"]


def test_lower_lambda_brings_in_other_categories() -> None:
    meta = {f"a{j}": item(f"a{j}", "A", "b") for j in range(6)}
    meta |= {"b0": item("b0", "B", "b"), "c0": item("c0", "C", "z")}
    ranked = [(f"a{j}", 1 - j / 100) for j in range(6)] + [("b0", 0.8), ("c0", 0.7)]
    assert {meta[i].category for i in ids(select(ranked, meta, session(), Policy(), 4))} == {"A"}
    mixed = ids(select(ranked, meta, session(), Policy(mmr_lambda=0.5), 4))
    assert mixed[0] == "a0" and {"b0", "c0"} <= set(mixed)
    # C shares neither category nor brand with a0, so it comes before B.
    assert mixed.index("c0") < mixed.index("b0")


def test_a_plugged_in_similarity_is_used() -> None:
    meta = {i: item(i, "same") for i in "abc"}
    ranked = [("a", 1.0), ("b", 0.99), ("c", 0.98)]

    def twins(x: str, y: str) -> float:
        return 1.0 if {x, y} == {"a", "b"} else 0.0

    assert ids(select(ranked, meta, session(), Policy(mmr_lambda=0.5), 2, similarity=twins)) == [
        "a",
        "c",
    ]


def test_scores_never_jump_the_rankers_order() -> None:
    meta = {i: item(i) for i in "abc"}
    ranked = [("a", 0.5), ("b", 0.9), ("c", 0.1)]  # b is listed after a: it stays after a
    picks = select(ranked, meta, session(), Policy(mmr_lambda=0.5), 3)
    assert ids(picks) == ["a", "b", "c"]
    assert [p.score for p in picks] == [0.5, 0.5, 0.1]


def test_margin_boost_formula() -> None:
    meta = {
        "a": item("a", margin=0.1),
        "b": item("b", margin=0.4),
        "c": item("c", margin=-0.3),
        "d": item("d"),
    }
    ranked = [("a", 1.0), ("b", 0.9), ("c", 0.8), ("d", 0.7)]
    out = dict(boosted(ranked, meta, Policy(margin_boost=1.0)))
    assert out == pytest.approx({"a": 1.0 * 1.25, "b": 0.9 * 2.0, "c": 0.8, "d": 0.7})
    assert [i for i, _ in boosted(ranked, meta, Policy(margin_boost=1.0))] == ["b", "a", "c", "d"]
    assert boosted(ranked, meta, Policy()) == ranked


def test_price_boost_formula() -> None:
    meta = {"a": item("a", price=10.0), "b": item("b", price=40.0)}
    out = dict(boosted([("a", 1.0), ("b", 1.0)], meta, Policy(price_boost=0.5, margin_boost=1)))
    assert out == pytest.approx({"a": 1.0 * 1.125, "b": 1.0 * 1.5})


# -- promoted slots --------------------------------------------------------------------------


def test_promoted_items_are_spread_not_stacked_on_top() -> None:
    meta = {f"i{j}": item(f"i{j}") for j in range(20)} | {"p1": item("p1"), "p2": item("p2")}
    ranked = [(f"i{j}", 1 - j / 100) for j in range(20)]
    picks = select(ranked, meta, session(), Policy(promoted=("p1", "p2"), promoted_share=0.2), 10)
    assert [n for n, p in enumerate(picks) if p.slot == "promoted"] == [3, 6]
    assert picks[0].item_id == "i0" and picks[3].score == 0.0  # not a candidate: no score


def test_promoted_priority_relevant_first_and_only_eligible_ones() -> None:
    meta = {f"i{j}": item(f"i{j}") for j in range(10)}
    meta |= {"out": item("out", in_stock=False), "late": item("late"), "cart": item("cart")}
    ranked = [(f"i{j}", 1 - j / 100) for j in range(10)]
    promoted = ("out", "cart", "gone", "late", "i7")
    policy = Policy(promoted=promoted, promoted_share=0.2)
    picks = select(ranked, meta, session(cart=("cart",)), policy, 10)
    assert {p.item_id for p in picks if p.slot == "promoted"} == {"i7", "late"}
    assert len(picks) == 10 and len(set(ids(picks))) == 10


def test_slot_counts_round_half_up_and_promoted_come_first() -> None:
    assert slot_counts(Policy(promoted=("p",), promoted_share=0.5), 5) == (3, 0)
    assert slot_counts(Policy(promoted_share=0.5), 5) == (0, 0)  # nothing to promote
    assert slot_counts(Policy(discovery_share=0.25), 10) == (0, 3)
    assert slot_counts(Policy(discovery_share=0.2), 2) == (0, 0)
    both = Policy(promoted=("p",), promoted_share=1.0, discovery_share=0.2)
    assert slot_counts(both, 10) == (10, 0)


# -- discovery slots -------------------------------------------------------------------------


def discovery_world() -> tuple[list[tuple[str, float]], dict[str, CatalogItem]]:
    meta = {f"s{j}": item(f"s{j}", "shoes") for j in range(20)}
    meta |= {f"h{j}": item(f"h{j}", "hats") for j in range(3)} | {"n": item("n")}
    ranked = [(f"s{j}", 1 - j / 100) for j in range(20)] + [("n", 0.5), ("h0", 0.4), ("h1", 0.3)]
    return ranked, meta


def test_discovery_takes_the_best_items_outside_the_session_focus() -> None:
    ranked, meta = discovery_world()
    s = session(("s0", "view"), ("s1", "add_to_cart"), cart=("s1",))
    picks = select(ranked, meta, s, Policy(discovery_share=0.2), 10)
    found = [(n, p.item_id) for n, p in enumerate(picks) if p.slot == "discovery"]
    assert found == [(3, "h0"), (6, "h1")]  # spread; the uncategorised "n" proves nothing
    assert len(picks) == 10 and "s1" not in ids(picks)


def test_no_discovery_without_known_session_categories() -> None:
    ranked, meta = discovery_world()
    for s in (session(), session(("unknown", "view")), session(("n", "view"))):
        picks = select(ranked, meta, s, Policy(discovery_share=0.2), 10)
        assert all(p.slot == "relevance" for p in picks)


def test_dominant_categories_weigh_type_and_recency() -> None:
    meta = {"s": item("s", "shoes"), "h": item("h", "hats"), "b": item("b", "bags")}
    # The hat in the cart (4, one step back: 2) outweighs the newer shoe view (1), but not 80%.
    assert dominant_categories(
        session(("s", "view"), ("h", "add_to_cart"), cart=("h",)), meta, BASE_WEIGHTS
    ) == {"hats", "shoes"}
    assert dominant_categories(
        session(("h", "add_to_cart"), ("s", "view"), cart=("h",)), meta, BASE_WEIGHTS
    ) == {"hats"}
    # Two recent shoe views against one old bag view: bags are not the focus.
    s = session(("s", "view"), ("s", "click"), ("x", "view"), ("b", "view"))  # x: unknown
    assert dominant_categories(s, meta, BASE_WEIGHTS) == {"shoes"}
    even = session(("s", "view"), ("b", "view"))  # shoes 1, bags 0.5: 67% < 80%
    assert dominant_categories(even, meta, BASE_WEIGHTS) == {"shoes", "bags"}


def test_dominant_categories_with_a_half_life() -> None:
    meta = {"s": item("s", "shoes"), "b": item("b", "bags")}
    s = session(("s", "view"), ("b", "purchase"))  # the purchase was one second earlier
    assert dominant_categories(s, meta, BASE_WEIGHTS, half_life_s=1000.0) == {"bags"}
    assert dominant_categories(s, meta, BASE_WEIGHTS, half_life_s=0.1) == {"shoes"}


def integrators_session() -> SessionView:
    """An old cart item in category A, then four views in category B (newest first)."""
    return session(*((f"b{j}", "view") for j in range(4)), ("a0", "add_to_cart"), cart=("a0",))


def test_recent_views_outweigh_an_old_cart_item() -> None:
    meta = {f"a{j}": item(f"a{j}", "A") for j in range(3)} | {
        f"b{j}": item(f"b{j}", "B") for j in range(12)
    }
    meta |= {"c0": item("c0", "C")}
    s = integrators_session()
    assert dominant_categories(s, meta, BASE_WEIGHTS) == {"B"}
    ranked = [(f"b{j}", 1 - j / 100) for j in range(4, 12)] + [("a1", 0.5), ("c0", 0.4)]
    picks = select(ranked, meta, s, Policy(discovery_share=0.2), 5)
    found = [meta[p.item_id].category for p in picks if p.slot == "discovery"]
    assert found == ["A"]  # the best candidate outside B, not another B item


def test_the_cart_item_counts_at_its_time_as_add_to_cart() -> None:
    meta = {"a": item("a", "A"), "b": item("b", "B")}
    # Weights: a = 4 (add_to_cart) x 0.5 (one step back) = 2, b = 1 (view): a holds 67%.
    s = session(("b", "view"), ("a", "view"), cart=("a",))
    assert dominant_categories(s, meta, BASE_WEIGHTS) == {"A", "B"}
    taken_out = session(("b", "view"), ("a", "remove_from_cart"), ("a", "add_to_cart"))
    # Taken out again: a view, one step back (0.5), against b's 1: b leads.
    assert dominant_categories(taken_out, meta, BASE_WEIGHTS) == {"B", "A"}
    # By age instead: a's events came a second before b's, which a 0.1 s half-life all but erases.
    assert dominant_categories(taken_out, meta, BASE_WEIGHTS, half_life_s=0.1) == {"B"}


def test_policy_event_weights_change_the_focus() -> None:
    ranked, meta = discovery_world()
    meta |= {"hat": item("hat", "hats")}
    s = session(("s0", "view"), ("hat", "click"))
    default = select(ranked, meta, s, Policy(discovery_share=0.2), 10)
    assert not {"h0", "h1"} & {p.item_id for p in default if p.slot == "discovery"}
    heavy = Policy(discovery_share=0.2, event_weights={"view": 10.0})
    assert {p.item_id for p in select(ranked, meta, s, heavy, 10) if p.slot == "discovery"} == {
        "h0",
        "h1",
    }


def test_wanted_names_session_and_promoted_items() -> None:
    s = session(("a", "view"), cart=("c",))
    assert wanted(s, Policy(promoted=("p",))) == {"a", "c", "p"}


@pytest.mark.parametrize("seed", range(50))
def test_pure_relevance_shortcut_takes_what_the_greedy_pass_takes(seed: int) -> None:
    rng = random.Random(seed)
    ranked = [(f"i{n}", rng.choice([1.0, 0.5, rng.random()])) for n in range(40)]
    ranked.sort(key=lambda pair: -pair[1])
    meta = {i: item(i, rng.choice("abc"), in_stock=rng.random() > 0.2) for i, _ in ranked}
    session = SessionView("s", cart={ranked[rng.randrange(40)][0]: 1})
    fast = select(ranked, meta, session, Policy(), 10)
    # A cap no list of 10 can reach sends the same request down the greedy path.
    greedy = select(ranked, meta, session, Policy(category_cap=10), 10)
    assert fast == greedy and len(fast) == 10


def test_negative_scores_keep_their_relevance() -> None:
    """A learned model's scores may all be negative: their order still weighs in MMR, rather
    than every one counting as 0 and diversity alone deciding."""
    meta = {i: CatalogItem(i, i, category=c) for i, c in (("a1", "A"), ("a2", "A"), ("b", "B"))}
    ranked = [("a1", -1.0), ("a2", -1.1), ("b", -5.0)]
    picks = select(ranked, meta, SessionView("s"), Policy(mmr_lambda=0.9), 2, set())
    assert ids(picks) == ["a1", "a2"]
    shifted = [(i, s + 10.0) for i, s in ranked]  # the same order, positive: the same picks
    assert ids(select(shifted, meta, SessionView("s"), Policy(mmr_lambda=0.9), 2, set())) == [
        "a1",
        "a2",
    ]
