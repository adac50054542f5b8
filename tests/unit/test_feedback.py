"""Feedback examples: the next event against what the session was shown."""

from __future__ import annotations

from stream_reco.ranking import feedback
from stream_reco.ranking.feedback import CLICK_WEIGHT, Example

SHOWN = feedback.shown("rec-1", [("a", {"seq": 1.0}), ("b", {"cooc": 0.5}), ("c", {"pop": 1.0})])


def test_the_item_gone_to_is_the_positive_the_rest_negatives() -> None:
    ex = feedback.example(SHOWN, "b", None)
    assert ex is not None
    assert ex.positive == {"cooc": 0.5}
    assert ex.negatives == [{"seq": 1.0}, {"pop": 1.0}]
    assert ex.weight == 1


def test_a_click_on_the_shown_list_is_a_stronger_label() -> None:
    assert feedback.example(SHOWN, "a", "rec-1").weight == CLICK_WEIGHT  # type: ignore[union-attr]
    assert feedback.example(SHOWN, "a", "other-rec").weight == 1  # type: ignore[union-attr]


def test_an_item_not_shown_teaches_nothing() -> None:
    assert feedback.example(SHOWN, "zzz", None) is None
    assert feedback.example(b"garbage", "a", None) is None
    only_one = feedback.shown("r", [("a", {"seq": 1.0})])
    assert feedback.example(only_one, "a", None) is None  # no negative to rank against


def test_examples_round_trip_and_bad_ones_are_dropped() -> None:
    ex = Example({"seq": 1.0}, [{"pop": 1.0}], 2)
    assert Example.from_json(ex.to_json()) == ex
    assert Example.from_json(b"{") is None
    assert Example.from_json(b'{"p": {"seq": "x"}, "n": [], "w": 1}') is None
    clamped = Example.from_json(b'{"p": {}, "n": [], "w": 99}')
    assert clamped is not None and clamped.weight == CLICK_WEIGHT
