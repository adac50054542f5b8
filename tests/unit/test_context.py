"""Session-context features: category share, price closeness, margin, the source item."""

from __future__ import annotations

import pytest

from stream_reco.candidates import Candidate
from stream_reco.events import CatalogItem
from stream_reco.ranking import blend, context, features
from stream_reco.state import Interaction, SessionView

META = {
    "s1": CatalogItem("s1", category="shoes", price=100.0),
    "s2": CatalogItem("s2", category="shoes", price=120.0),
    "b1": CatalogItem("b1", category="bags", price=400.0),
    "x": CatalogItem("x", category="shoes", price=50.0, margin=0.3),
    "y": CatalogItem("y", category="hats", price=110.0, margin=-0.2),
    "z": CatalogItem("z"),
}


def session() -> SessionView:
    recent = (
        Interaction("s2", "view", 3),
        Interaction("b1", "view", 2),
        Interaction("s1", "view", 1),
    )
    return SessionView("me", recent=recent, cart={"b1": 1})


def test_features_describe_the_fit_with_the_session() -> None:
    x = Candidate("x", {"seq": 1.0}, source_item="b1")
    y = Candidate("y", {"seq": 0.5}, source_item="s1")
    features.derive([x, y], session())
    context.add([x, y], session(), META)
    assert x.features["category_match"] == pytest.approx(2 / 3)  # 2 of 3 session items
    assert x.features["price_match"] == pytest.approx(50 / 120)  # median session price 120
    assert x.features["margin"] == pytest.approx(0.3)
    assert x.features["source_cart"] == 1.0
    assert x.features["source_recency"] == pytest.approx(0.5)  # b1 is one step back
    assert "category_match" not in y.features  # no session item is a hat
    assert y.features["price_match"] == pytest.approx(110 / 120)
    assert "margin" not in y.features and "source_cart" not in y.features
    assert y.features["source_recency"] == pytest.approx(0.25)


def test_unknown_items_and_sessions_add_nothing() -> None:
    z = Candidate("z", {"pop": 1.0})
    context.add([z], session(), META)
    assert z.features == {"pop": 1.0}
    lone = Candidate("x", {"pop": 1.0})
    context.add([lone], SessionView("new"), META)
    assert lone.features == {"pop": 1.0, "margin": pytest.approx(0.3)}


def test_the_fixed_blend_does_not_score_context() -> None:
    assert not blend.uses_context(blend.DEFAULT)
    assert blend.uses_context({**blend.DEFAULT, "category_match": 0.1})
