"""The ranking step without Redis: exclusions, the model switch, depth, the budget, fallback."""

from __future__ import annotations

import pytest

from stream_reco.candidates import Candidate
from stream_reco.config import Settings
from stream_reco.events import CatalogItem
from stream_reco.ranking import blend, model, policy, rank
from stream_reco.runtime import Runtime
from stream_reco.state import Interaction, SessionView

SETTINGS = Settings()
FIXED = blend.for_settings(SETTINGS)


def cand(item_id: str, **features: float) -> Candidate:
    return Candidate(item_id, dict(features))


def world() -> tuple[SessionView, dict[str, Candidate], dict[str, CatalogItem]]:
    """A session that viewed v1 then v2 and has c1 in its cart; candidates around them."""
    session = SessionView(
        "s",
        recent=(Interaction("v2", "view", 2), Interaction("v1", "view", 1)),
        cart={"c1": 1},
        last_ts=2,
    )
    found = {
        "a": cand("a", cooc=0.9),
        "b": cand("b", cooc=0.5),
        "c": cand("c", pop=1.0),
        "d": cand("d", pop=0.5, model_only=0.0),
        "v2": cand("v2", in_session=1.0, last=1.0),
        "c1": cand("c1", cooc=1.0),
    }
    meta = {i: CatalogItem(i, i.upper(), category="x") for i in [*found, "v1"]}
    return session, found, meta


def run(a: rank.Ask, *, weights: model.Weights | None = None, late: bool = False) -> list[str]:
    session, found, meta = world()
    current = weights or model.Weights(0, 0, FIXED)
    p = rank.plan(a, session, found, current, FIXED, model_ready=weights is not None, late=late)
    head, slots = rank.select(p, a, p.head(a.first_depth), session, meta, SETTINGS)
    return [pk.item_id for pk in rank.answer(p, head, slots, meta).picks]


def test_session_items_come_first_and_blocked_items_never() -> None:
    a = rank.ask(Runtime(), 10)
    # c1 (cart) and v2 (the item in view: the session's latest) are never shown.
    assert run(a) == ["a", "b", "c", "d"]


def test_the_request_and_the_policy_block_items_before_the_session_is_known() -> None:
    live = Runtime(rules=policy.from_dict({"default": {"exclude": ["b"]}}))
    a = rank.ask(live, 10, exclude=["c"], item_id="d")
    assert a.block == {"b", "c", "d"}
    # The page's item is d, so the session's latest item (v2) is no longer the one in view.
    assert sorted(run(a)) == ["a", "v2"]


def test_a_placement_may_show_the_item_in_view() -> None:
    rules = {"placements": {"recent": {"exclude_item_in_view": False}}}
    a = rank.ask(Runtime(rules=policy.from_dict(rules)), 10, placement="recent")
    assert "v2" in run(a)


def test_rank_has_no_item_in_view_unless_named() -> None:
    only = ["v2", "a"]
    assert set(run(rank.ask(Runtime(), 2, only=only))) >= {"v2"}
    assert "v2" not in run(rank.ask(Runtime(), 2, only=only, item_id="v2"))


def test_the_model_ranks_when_ready_and_hands_back_when_late() -> None:
    learned = model.Weights(7, 5000, {"pop": 1.0}, edge=0.1)
    a = rank.ask(Runtime(), 2)
    session, found, meta = world()
    on = rank.plan(a, session, found, learned, FIXED, model_ready=True, late=False)
    assert (on.use_model, on.degraded) == (True, None)
    assert [c.item_id for c, _ in on.ranked[:2]] == ["c", "d"]  # popularity alone, its verdict
    head, slots = rank.select(on, a, on.head(10), session, meta, SETTINGS)
    assert rank.answer(on, head, slots, meta).model_version == 7
    off = rank.plan(a, session, found, learned, FIXED, model_ready=True, late=True)
    assert (off.use_model, off.degraded) == (False, "blend")
    head, slots = rank.select(off, a, off.head(10), session, meta, SETTINGS)
    late = rank.answer(off, head, slots, meta)
    assert late.model_version == 0 and late.degraded == "blend"
    assert [pk.item_id for pk in late.picks] == ["a", "b"]


def test_the_learner_hears_of_the_picks_and_at_most_ten_passed_over() -> None:
    session = SessionView("s")
    found = {f"i{n:02d}": cand(f"i{n:02d}", pop=1 - n / 100) for n in range(30)}
    meta = {i: CatalogItem(i) for i in found}
    a = rank.ask(Runtime(), 3)
    p = rank.plan(
        a, session, found, model.Weights(0, 0, FIXED), FIXED, model_ready=False, late=False
    )
    head, slots = rank.select(p, a, p.head(a.first_depth), session, meta, SETTINGS)
    shown = rank.answer(p, head, slots, meta).shown
    assert [i for i, _ in shown] == [f"i{n:02d}" for n in range(3 + rank.SHOWN_NEGATIVES)]


def test_depth_grows_once_when_too_few_items_are_available() -> None:
    a = rank.ask(Runtime(), 10)
    assert a.first_depth == 30  # plain rules: k + 20
    assert a.deeper(found=10, depth=30, ranked=500) is None  # filled
    assert a.deeper(found=4, depth=30, ranked=500) == 500  # look at everything, once
    assert a.deeper(found=4, depth=500, ranked=500) is None  # nothing more to look at
    shop = rank.ask(Runtime(rules=policy.from_dict({"default": {"category_cap": 3}})), 10)
    assert shop.first_depth == 70  # rules that reshuffle need a deeper pool


def test_the_budget_counts_from_the_start_and_never_reaches_zero() -> None:
    now = [100.0]
    budget = rank.Budget(0.05, 100.0, clock=lambda: now[0])
    assert budget.left(0.8) == pytest.approx(0.04) and not budget.late
    now[0] = 100.03
    assert budget.late  # past half: the model's scoring is given up first
    now[0] = 101.0
    assert budget.left() == 1e-3


def test_the_fallback_keeps_every_exclusion_it_can_know() -> None:
    stock = [
        ("p1", CatalogItem("p1", category="wine")),
        ("p2", CatalogItem("p2", in_stock=False)),
        ("p3", CatalogItem("p3")),
        ("p4", None),
        ("p5", CatalogItem("p5")),
    ]
    rules = policy.from_dict({"default": {"exclude_categories": ["wine"]}})
    live = Runtime(rules=rules, fallback=stock)
    answer = rank.fallback(live, rank.ask(live, 10, exclude=["p5"]))
    assert [pk.item_id for pk in answer.picks] == ["p3", "p4"]
    assert answer.degraded == "popular"


def test_the_answer_keeps_the_whole_allowed_candidate_order_for_the_evaluator() -> None:
    session, found, meta = world()
    a = rank.ask(Runtime(), 2)
    p = rank.plan(
        a, session, found, model.Weights(0, 0, FIXED), FIXED, model_ready=False, late=False
    )
    head, slots = rank.select(p, a, p.head(a.first_depth), session, meta, SETTINGS)
    out = rank.answer(p, head, slots, meta)
    assert [c.item_id for c, _ in out.ranked] == ["a", "b", "c", "d"]  # beyond k, no blocked


def _many(n: int) -> tuple[SessionView, dict[str, Candidate]]:
    """n candidates by falling co-occurrence (i0 best), some also popular."""
    session = SessionView("s", recent=(Interaction("v", "view", 1),), events=3, last_ts=1)
    found = {f"i{k}": cand(f"i{k}", cooc=1.0 - k / (2 * n)) for k in range(n)}
    found["v"] = cand("v", in_session=1.0, last=1.0, pop=1.0)
    for k in range(0, n, 3):
        found[f"i{k}"].features["pop"] = k / n
    return session, found


def test_the_model_reorders_only_the_blends_first_hundred() -> None:
    session, found = _many(150)
    a = rank.Ask(10, policy.Policy(), frozenset())
    # A model that prefers popular items: within the first 100 it brings them up; beyond
    # them it never looks (it learned from lists of the first 100, with derived features).
    weights = model.Weights(1, 500, {"cooc": 1.0, "pop": 5.0, "pop_rr": 1.0}, edge=0.1)
    p = rank.plan(a, session, found, weights, FIXED, model_ready=True, late=False)
    head, tail = p.ranked[: p.learned], p.ranked[p.learned :]
    assert p.learned == 100 - 1  # the blend's first 100, less the item in view
    assert all("cooc_sqrt" in c.features for c, _ in head)
    assert all(("pop_rr" in c.features) == ("pop" in c.features) for c, _ in head)
    assert not any("cooc_sqrt" in c.features for c, _ in tail)
    by_blend = [c.item_id for c, _ in blend.order(list(found.values())) if c.item_id != "v"]
    assert [c.item_id for c, _ in tail] == by_blend[99:]  # in the blend's order
    assert head[0][0].item_id != "i0" and "pop" in head[0][0].features
    # The second stage re-scores only what the model scored first.
    meta = {c.item_id: CatalogItem(c.item_id, c.item_id, category="x") for c, _ in p.ranked}
    deep, _ = rank.select(p, a, p.head(len(p.ranked)), session, meta, SETTINGS)
    assert [c.item_id for c, _ in deep[p.learned :]] == [c.item_id for c, _ in tail]


def test_the_blend_derives_nothing_unless_an_example_asks() -> None:
    a = rank.Ask(10, rank.LEARNING, frozenset())
    blend_only = model.Weights(0, 0, FIXED)
    session, found = _many(120)
    p = rank.plan(a, session, found, blend_only, FIXED, model_ready=False, late=False)
    assert p.learned == 0 and not any("cooc_sqrt" in c.features for c, _ in p.ranked)
    plain = [c.item_id for c, _ in p.ranked]
    session, found = _many(120)
    p = rank.plan(a, session, found, blend_only, FIXED, model_ready=False, late=False, derive=True)
    assert p.learned == 100 and [c.item_id for c, _ in p.ranked] == plain  # the blend's order
    assert all("cooc_sqrt" in c.features for c, _ in p.ranked[:100] if "cooc" in c.features)
    assert not any("cooc_sqrt" in c.features for c, _ in p.ranked[100:])


def test_a_sources_rank_reads_the_same_whatever_a_request_excludes() -> None:
    a = rank.Ask(10, rank.LEARNING, frozenset())
    served = rank.Ask(10, policy.Policy(), frozenset({"i3"}))  # the item in view and i3 blocked
    ranks = []
    for ask in (a, served):
        session, found = _many(30)
        weights = model.Weights(1, 500, {"pop_rr": 1.0}, edge=0.1)
        p = rank.plan(ask, session, found, weights, FIXED, model_ready=True, late=False)
        ranks.append({c.item_id: c.features.get("pop_rr") for c, _ in p.ranked})
    example, answer = ranks
    assert all(example[i] == r for i, r in answer.items())  # v and i3 only left the list
    assert set(example) - set(answer) == {"v", "i3"}
