"""Tests for the session baselines on tiny hand-made train sets with rankings computed by hand."""

from __future__ import annotations

from stream_reco.evaluation.baselines import (
    BASELINES,
    VSKNN,
    ItemKNN,
    Markov,
    Pop,
    SessionPop,
)

# Click counts: a 4, b 3, c 3, d 1, e 1 -> popularity order a, b, c, d, e (ties by id).
TRAIN = [["a", "b", "c"], ["a", "b"], ["b", "c", "d"], ["a", "c"], ["e", "a"]]


def test_pop_ranks_by_click_count_ties_by_id() -> None:
    pop = Pop()
    pop.fit(TRAIN)
    assert pop.recommend(["zz"], 5) == ["a", "b", "c", "d", "e"]
    assert pop.recommend(["a"], 2) == ["a", "b"]
    assert len(pop.recommend(["a"], 50)) == 5  # no more than the catalogue


def test_spop_counts_in_prefix_then_global_popularity() -> None:
    spop = SessionPop()
    spop.fit(TRAIN)
    # e clicked twice; c and d once each -> c first by global popularity; then POP fills.
    assert spop.recommend(["d", "e", "c", "e"], 5) == ["e", "c", "d", "a", "b"]
    # An item unknown to train is still recommended, after known items with the same count.
    assert spop.recommend(["zz", "d"], 3) == ["d", "zz", "a"]
    assert spop.recommend(["d", "e", "c", "e"], 1) == ["e"]


def test_markov_follows_transition_counts() -> None:
    markov = Markov()
    markov.fit(TRAIN)
    # From a: b twice, c once; fill with a (most popular, not yet listed).
    assert markov.recommend(["e", "a"], 3) == ["b", "c", "a"]
    assert markov.recommend(["b"], 2) == ["c", "a"]  # only b -> c exists
    assert markov.recommend(["d"], 2) == ["a", "b"]  # session ends after d: no transitions
    assert markov.recommend(["zz"], 2) == ["a", "b"]  # unknown item: POP


def test_markov_keeps_self_transitions() -> None:
    markov = Markov()
    markov.fit([["a", "a", "b"], ["a", "a"], ["a", "b"]])
    assert markov.recommend(["a"], 2) == ["a", "b"]  # a -> a twice, a -> b twice, a more popular


def test_itemknn_regularisation_orders_neighbours() -> None:
    # Clicks: p 12, q 9, x 4, r 1. cooc(x, p) = 3, cooc(x, r) = 1.
    train = [["x", "p"]] * 3 + [["x", "r"]] + [["p", "q"]] * 9
    # lmbd = 0: sim(x, p) = 3 / sqrt(4 * 12) = 0.433 < sim(x, r) = 1 / sqrt(4 * 1) = 0.5.
    plain = ItemKNN(lmbd=0.0)
    plain.fit(train)
    assert plain.recommend(["x"], 2) == ["r", "p"]
    # lmbd = 20: 3 / sqrt(24 * 32) = 0.108 > 1 / sqrt(24 * 21) = 0.044: rare r is discounted.
    knn = ItemKNN()
    knn.fit(train)
    # x is not its own neighbour but comes back through the POP fill (after q).
    assert knn.recommend(["q", "x"], 4) == ["p", "r", "q", "x"]


def test_itemknn_counts_clicks_like_the_reference() -> None:
    # Clicks: x 3, r 3, p 2. cooc(x, p) = 2 (two sessions), cooc(x, r) = 1 * 3 (one session).
    # lmbd = 0: sim(x, r) = 3 / sqrt(3 * 3) = 1 > sim(x, p) = 2 / sqrt(3 * 2) = 0.816.
    # (Counting sessions instead would give r 1 / sqrt(3 * 1) = 0.577 < p.)
    knn = ItemKNN(lmbd=0.0)
    knn.fit([["x", "p"], ["x", "p"], ["x", "r", "r", "r"]])
    assert knn.recommend(["x"], 2) == ["r", "p"]


def test_vsknn_prefers_sessions_matching_recent_items() -> None:
    train = [["a", "b", "t1"], ["c", "d", "t2"]]
    vsknn = VSKNN()
    vsknn.fit(train)
    # Prefix weights: a 1/2, c 1 -> the c-session is twice as similar; its items come first,
    # ties (same score, one click each) by id.
    assert vsknn.recommend(["a", "c"], 6) == ["c", "d", "t2", "a", "b", "t1"]
    assert vsknn.recommend(["c", "a"], 6) == ["a", "b", "t1", "c", "d", "t2"]


def test_vsknn_cosine_penalises_long_sessions() -> None:
    # sim(["a"], short) = 1 / sqrt(2) > sim(["a"], long) = 1 / sqrt(4).
    vsknn = VSKNN()
    vsknn.fit([["a", "t1"], ["a", "x", "y", "t2"]])
    assert vsknn.recommend(["a"], 5)[:2] == ["a", "t1"]
    assert vsknn.recommend(["a"], 5)[2:] == ["t2", "x", "y"]


def test_vsknn_sample_and_neighbour_limits() -> None:
    train = [["a", "old"], ["a", "new"], ["b", "c"]]
    only_recent = VSKNN(sample_size=1)
    only_recent.fit(train)
    assert only_recent.recommend(["a"], 2) == ["a", "new"]
    one_neighbour = VSKNN(k=1)
    one_neighbour.fit(train)
    # Equal similarity: the more recent session wins, then POP fills.
    assert one_neighbour.recommend(["a"], 3) == ["a", "new", "b"]
    assert one_neighbour.recommend(["zz"], 2) == ["a", "b"]


def test_registry_builds_every_method() -> None:
    assert set(BASELINES) == {"pop", "spop", "markov", "itemknn", "vsknn"}
    for name, make in BASELINES.items():
        model = make()
        assert model.name == name
        model.fit(TRAIN)
        recs = model.recommend(["a", "b"], 4)
        assert len(recs) == len(set(recs)) == 4
