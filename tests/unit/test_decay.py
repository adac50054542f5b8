"""Tests for forward decay: weights grow with event time and read back as decayed values."""

from __future__ import annotations

import math

import pytest

from stream_reco.decay import MAX_EXPONENT, LandmarkTooOld, exponent, forward_weight, value_at

LANDMARK = 1_700_000_000_000
DAY_S = 86_400.0
DAY_MS = 86_400_000


def test_weight_at_landmark_is_unchanged() -> None:
    assert forward_weight(3.0, LANDMARK, LANDMARK, DAY_S) == 3.0
    assert value_at(3.0, LANDMARK, LANDMARK, DAY_S) == 3.0


def test_one_half_life_later_doubles() -> None:
    assert forward_weight(3.0, LANDMARK + DAY_MS, LANDMARK, DAY_S) == pytest.approx(6.0)
    assert forward_weight(3.0, LANDMARK + 3 * DAY_MS, LANDMARK, DAY_S) == pytest.approx(24.0)
    assert forward_weight(1.0, LANDMARK + DAY_MS // 2, LANDMARK, DAY_S) == pytest.approx(
        math.sqrt(2)
    )


def test_half_life_is_in_seconds_and_time_in_ms() -> None:
    assert exponent(LANDMARK + 60_000, LANDMARK, 60.0) == pytest.approx(1.0)
    assert exponent(LANDMARK - 120_000, LANDMARK, 60.0) == pytest.approx(-2.0)


@pytest.mark.parametrize("days", [0.0, 0.001, 1.0, 2.5, 30.0, 365.0, -3.0])
def test_value_at_event_time_is_the_original_weight(days: float) -> None:
    t = LANDMARK + int(days * DAY_MS)
    stored = forward_weight(5.0, t, LANDMARK, DAY_S)
    assert value_at(stored, t, LANDMARK, DAY_S) == pytest.approx(5.0, rel=1e-12)


def test_value_halves_per_half_life_after_the_event() -> None:
    t = LANDMARK + 10 * DAY_MS
    stored = forward_weight(8.0, t, LANDMARK, DAY_S)
    assert value_at(stored, t + DAY_MS, LANDMARK, DAY_S) == pytest.approx(4.0)
    assert value_at(stored, t + 3 * DAY_MS, LANDMARK, DAY_S) == pytest.approx(1.0)


def test_sums_decay_like_their_parts() -> None:
    # An old heavy event and a fresh light one: the stored sum reads as their decayed sum.
    old, new = LANDMARK + DAY_MS, LANDMARK + 4 * DAY_MS
    stored = forward_weight(8.0, old, LANDMARK, DAY_S) + forward_weight(1.0, new, LANDMARK, DAY_S)
    assert value_at(stored, new, LANDMARK, DAY_S) == pytest.approx(8.0 / 8 + 1.0)


@pytest.mark.parametrize("read_days", [5.0, 6.0, 50.0, 500.0])
def test_order_is_the_same_whenever_it_is_read(read_days: float) -> None:
    # Item a: one purchase long ago; item b: one view yesterday. b wins, at any later time.
    a = forward_weight(8.0, LANDMARK, LANDMARK, DAY_S)
    b = forward_weight(1.0, LANDMARK + 4 * DAY_MS, LANDMARK, DAY_S)
    at = LANDMARK + int(read_days * DAY_MS)
    assert value_at(b, at, LANDMARK, DAY_S) > value_at(a, at, LANDMARK, DAY_S)
    assert b > a


def test_landmark_too_old_is_raised_past_max_exponent() -> None:
    at_limit = LANDMARK + int(MAX_EXPONENT * DAY_MS)
    assert math.isfinite(forward_weight(1.0, at_limit, LANDMARK, DAY_S))
    with pytest.raises(LandmarkTooOld, match="re-base"):
        forward_weight(1.0, at_limit + DAY_MS, LANDMARK, DAY_S)
    assert issubclass(LandmarkTooOld, ValueError)


def test_events_before_the_landmark_weigh_less_and_never_crash() -> None:
    before = forward_weight(2.0, LANDMARK - DAY_MS, LANDMARK, DAY_S)
    assert before == pytest.approx(1.0)
    far_before = forward_weight(2.0, LANDMARK - int(5000 * DAY_MS), LANDMARK, DAY_S)
    assert 0.0 < far_before < before
    assert math.isfinite(far_before)
