"""The report's statistics against published values (textbook tables, R/scipy outputs)."""

from __future__ import annotations

import math

import pytest

from stream_reco.experiments import stats


def test_wilson_interval_matches_published_values() -> None:
    low, high = stats.wilson(10, 100)  # Newcombe (1998): 0.0552 to 0.1744
    assert (round(low, 4), round(high, 4)) == (0.0552, 0.1744)
    assert stats.wilson(0, 0) == (0.0, 1.0)
    assert stats.wilson(0, 50)[0] == 0.0 and stats.wilson(50, 50)[1] == 1.0


def test_two_proportion_z_test() -> None:
    z, p = stats.two_proportions(100, 1000, 120, 1000)  # pooled z = 1.4293
    assert z == pytest.approx(1.4293, abs=1e-4) and p == pytest.approx(0.1529, abs=1e-4)
    assert stats.two_proportions(0, 10, 0, 10) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("t", "df", "p"), [(2.228, 10, 0.05), (2.086, 20, 0.05), (1.0, 1, 0.5), (2.576, 1e6, 0.01)]
)
def test_student_t_tail(t: float, df: float, p: float) -> None:
    assert 2 * stats.t_sf(t, df) == pytest.approx(p, abs=2e-4)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [
        (3.841, 1, 0.05),
        (5.991, 2, 0.05),
        (10.828, 1, 0.001),
        (30.0, 3, 1.3801e-6),
        (0.5, 4, 0.9735),
    ],
)
def test_chi_square_tail(x: float, df: int, p: float) -> None:
    assert stats.chi2_sf(x, df) == pytest.approx(p, rel=2e-3)


def test_welch_from_sums_matches_the_formula() -> None:
    a, b = stats.Moments(10, 50, 300), stats.Moments(12, 80, 600)  # means 5 and 6.67
    t, df, p = stats.welch(a, b)
    assert a.variance == pytest.approx(50 / 9) and b.variance == pytest.approx(200 / 33)
    assert t == pytest.approx(1.6183, abs=1e-4) and df == pytest.approx(19.569, abs=1e-3)
    assert p == pytest.approx(0.1216, abs=1e-3)
    low, high = stats.mean_interval(stats.Moments(11, 55, 385))  # mean 5, sd 3.317, t 2.228
    assert (round(low, 3), round(high, 3)) == (2.772, 7.228)


def test_sample_sizes() -> None:
    assert stats.n_proportions(0.10, 0.12) == 3841  # the usual calculators' answer
    assert stats.n_proportions(0.1, 0.1) == math.inf
    assert stats.n_means(1.0, 4.0, 4.0) == 63  # (1.96 + 0.8416)^2 * (4 + 4) / 1^2 = 62.8


def test_sample_ratio_mismatch() -> None:
    shares = {"a": 0.5, "b": 0.5}
    assert stats.srm({"a": 5050, "b": 4950}, shares)[1] > 0.3
    chi2, p = stats.srm({"a": 5300, "b": 4700}, shares)
    assert chi2 == pytest.approx(36.0) and p < stats.SRM_P
    assert stats.srm({}, shares) == (0.0, 1.0)


def test_a_mean_interval_is_honest_about_one_observation_and_its_floor() -> None:
    one = stats.Moments(1, 12.0, 144.0)
    assert stats.mean_interval(one) == (-math.inf, math.inf)  # nothing bounds the spread
    assert stats.mean_interval(one, floor=0.0) == (0.0, math.inf)
    few = stats.Moments(3, 1.0, 1.0)  # one buyer of three: the t interval reaches below 0
    low, high = stats.mean_interval(few)
    assert low < 0 < high
    assert stats.mean_interval(few, floor=0.0) == (0.0, high)
