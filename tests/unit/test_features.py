"""Derived features: what the learned ranker can weigh that the fixed blend cannot express."""

from __future__ import annotations

import pytest

from stream_reco.candidates import Candidate
from stream_reco.ranking import blend, features
from stream_reco.state import Interaction, SessionView


def _session(events: int) -> SessionView:
    recent = (Interaction("b", "view", 2), Interaction("a", "view", 1))
    return SessionView("s", recent=recent, cart={"a": 1}, events=events)


def _cands() -> list[Candidate]:
    return [
        Candidate("x", {"seq": 0.4, "pop": 1.0}, source_item="a"),
        Candidate("y", {"seq": 1.0, "cooc": 0.25}, source_item="b"),
        Candidate("z", {"pop": 0.5}),
    ]


def test_each_source_ranks_its_own_candidates() -> None:
    x, y, z = cands = _cands()
    features.derive(cands, _session(2))
    assert (y.features["seq_rr"], x.features["seq_rr"]) == (1.0, 0.5)
    assert (x.features["pop_rr"], z.features["pop_rr"]) == (1.0, 0.5)
    assert y.features["cooc_rr"] == 1.0 and "cooc_rr" not in x.features
    assert y.features["cooc_sqrt"] == pytest.approx(0.5)


def test_session_sources_count_and_popular_items_do_not() -> None:
    x, y, z = cands = _cands()
    features.derive(cands, _session(2))
    assert y.features["n_sources"] == pytest.approx(2 / len(features.VOTERS))
    assert x.features["session_any"] == 1.0 and "session_any" not in z.features
    assert "n_sources" not in z.features


def test_behaviour_counts_more_in_a_longer_session() -> None:
    short, long_ = _cands(), _cands()
    features.derive(short, _session(1))
    features.derive(long_, _session(features.LONG_SESSION * 3))
    assert 0 < short[1].features["seq_long"] < long_[1].features["seq_long"]
    assert long_[1].features["seq_long"] == pytest.approx(1.0)  # capped at a full-length session
    none = _cands()
    features.derive(none, _session(0))
    assert not any(k.endswith("_long") for c in none for k in c.features)


def test_the_source_item_is_placed_in_the_session() -> None:
    x, y, z = cands = _cands()
    features.derive(cands, _session(2))
    assert x.features["source_cart"] == 1.0 and "source_cart" not in y.features
    assert y.features["source_recency"] == 1.0  # b is the latest item
    assert x.features["source_recency"] == pytest.approx(features.SOURCE_RECENCY)
    assert "source_recency" not in z.features


def test_the_fixed_blend_gives_derived_features_no_weight() -> None:
    plain, derived = _cands(), _cands()
    features.derive(derived, _session(5))
    before = [c.item_id for c, _ in blend.order(plain)]
    assert [c.item_id for c, _ in blend.order(derived)] == before
    assert all(blend.DEFAULT.get(name, 0.0) == 0.0 for name in features.NAMES)


def test_every_feature_a_candidate_can_carry_is_documented() -> None:
    from pathlib import Path

    from stream_reco.candidates import cooccurrence

    contract = (Path(__file__).parents[2] / "docs" / "contract.md").read_text(encoding="utf-8")
    named = [*blend.DEFAULT, *features.NAMES, "revisit_recency"]
    named += [n for names in cooccurrence.POSITION_FEATURES.values() for n in names]
    ranges = {"seq1", "cooc1"}  # written as `seq0`..`seq2`
    missing = [n for n in named if f"`{n}`" not in contract and n not in ranges]
    long_ones = [n for n in features.NAMES if n.endswith("_long")]
    missing = [n for n in missing if n not in long_ones[1:-1]]  # `seq_long`, ..., the last
    assert not missing, f"features without a word in docs/contract.md: {missing}"
