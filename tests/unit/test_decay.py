"""Tests for decay in log space: sums read back as decayed values, whatever the event times."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from stream_reco.decay import add, log_weight, relative, value_at

NOW = 1_700_000_000_000
DAY_S = 86_400.0
DAY_MS = 86_400_000


def stored(*events: tuple[float, int]) -> float:
    """The log-sum of (weight, ts) events, added in the given order."""
    s: float | None = None
    for w, ts in events:
        lw = log_weight(w, ts, DAY_S)
        assert lw is not None
        s = add(s, lw)
    assert s is not None
    return s


def test_value_at_event_time_is_the_weight() -> None:
    assert value_at(stored((3.0, NOW)), NOW, DAY_S) == pytest.approx(3.0, rel=1e-12)


def test_value_halves_per_half_life_after_the_event() -> None:
    s = stored((8.0, NOW))
    assert value_at(s, NOW + DAY_MS, DAY_S) == pytest.approx(4.0, rel=1e-12)
    assert value_at(s, NOW + 3 * DAY_MS, DAY_S) == pytest.approx(1.0, rel=1e-12)
    assert value_at(stored((1.0, NOW)), NOW + DAY_MS // 2, DAY_S) == pytest.approx(2**-0.5)


def test_a_sum_decays_each_part_from_its_own_time() -> None:
    s = stored((8.0, NOW - 3 * DAY_MS), (1.0, NOW))
    assert value_at(s, NOW, DAY_S) == pytest.approx(8.0 / 8 + 1.0, rel=1e-12)


def test_a_recent_small_weight_can_outrank_an_old_large_one() -> None:
    old, new = stored((8.0, NOW)), stored((1.0, NOW + 4 * DAY_MS))
    assert new > old  # what the sorted sets rank by
    assert value_at(new, NOW + 5 * DAY_MS, DAY_S) > value_at(old, NOW + 5 * DAY_MS, DAY_S)


@pytest.mark.parametrize("seed", range(5))
def test_the_order_of_events_does_not_change_the_sum(seed: int) -> None:
    rng = random.Random(seed)
    events = [(rng.uniform(0.1, 5.0), NOW + rng.randrange(-400, 400) * DAY_MS) for _ in range(50)]
    first = stored(*events)
    rng.shuffle(events)
    assert stored(*events) == pytest.approx(first, abs=1e-9)


def test_event_times_decades_apart_neither_overflow_nor_freeze() -> None:
    # The old forward decay fixed a landmark at the first event and overflowed 960 half-lives
    # later; in log space any two times combine.
    epoch, far = 0, NOW + 80 * 365 * DAY_MS
    for order in itertools.permutations([(1.0, epoch), (2.0, NOW), (4.0, far)]):
        s = stored(*order)
        assert math.isfinite(s)
        assert value_at(s, far, DAY_S) == pytest.approx(4.0, rel=1e-9)
    assert value_at(stored((1.0, epoch)), far, DAY_S) == 0.0  # underflows to 0, never raises
    assert math.isfinite(value_at(stored((1.0, far)), epoch, DAY_S))  # capped, never raises


def test_nothing_is_added_for_a_weight_that_is_not_positive() -> None:
    assert log_weight(0.0, NOW, DAY_S) is None
    assert log_weight(-1.0, NOW, DAY_S) is None
    assert log_weight(float("nan"), NOW, DAY_S) is None


def test_half_life_is_in_seconds_and_time_in_ms() -> None:
    s = log_weight(1.0, NOW, 3600.0)
    assert s is not None and value_at(s, NOW + 3_600_000, 3600.0) == pytest.approx(0.5)


def test_relative_values_of_a_best_first_list() -> None:
    top, second = stored((4.0, NOW)), stored((1.0, NOW))
    assert relative([top, second]) == pytest.approx([1.0, 0.25])
    assert relative([]) == []
    assert relative([top, top - 5000.0]) == [1.0, 0.0]  # far below: 0, not an error
