"""Tests for the next-item metrics on tiny hand-computed cases."""

from __future__ import annotations

import math

import pytest

from stream_reco.evaluation.metrics import Metrics

POP = {"a": 4, "b": 2, "c": 1, "d": 1}


def one(target: str, recs: list[str], k: int = 3, k_max: int = 3) -> dict[str, float]:
    m = Metrics(k_max, POP)
    m.add(target, recs)
    return m.summary(k)


def test_target_at_rank_one() -> None:
    s = one("a", ["a", "b", "c"])
    assert (s["n"], s["hr"], s["mrr"], s["ndcg"]) == (1.0, 100.0, 100.0, 100.0)


def test_target_at_rank_three() -> None:
    s = one("c", ["a", "b", "c"])
    assert s["hr"] == 100.0
    assert s["mrr"] == pytest.approx(100 / 3)
    assert s["ndcg"] == pytest.approx(100 / math.log2(4))  # = 50
    below = one("c", ["a", "b", "c"], k=2)
    assert (below["hr"], below["mrr"], below["ndcg"]) == (0.0, 0.0, 0.0)


def test_target_beyond_k_max_does_not_count() -> None:
    s = one("d", ["a", "b", "c", "d"])  # rank 4 > k_max 3
    assert (s["hr"], s["mrr"], s["ndcg"]) == (0.0, 0.0, 0.0)


def test_target_missing_from_short_or_empty_list() -> None:
    assert one("b", ["a"])["hr"] == 0.0
    s = one("b", [])
    assert (s["n"], s["hr"], s["mrr"]) == (1.0, 0.0, 0.0)


def test_duplicates_count_once_and_take_no_rank() -> None:
    s = one("b", ["a", "a", "b"])
    assert s["mrr"] == pytest.approx(50.0)  # b is the second distinct item
    # With duplicates collapsed, the third distinct item still fits in k_max = 3.
    assert one("c", ["a", "a", "b", "b", "c"])["hr"] == 100.0


def test_means_over_positions() -> None:
    m = Metrics(3, POP)
    m.add("a", ["a", "b", "c"])  # rank 1
    m.add("c", ["a", "b", "c"])  # rank 3
    m.add("z", ["a", "b", "c"])  # miss
    m.add("b", ["b"])  # rank 1
    s = m.summary(3)
    assert s["n"] == 4.0
    assert s["hr"] == pytest.approx(75.0)
    assert s["mrr"] == pytest.approx(100 * (1 + 1 / 3 + 0 + 1) / 4)
    assert s["ndcg"] == pytest.approx(100 * (1 + 0.5 + 0 + 1) / 4)
    assert m.summary(1)["hr"] == pytest.approx(50.0)


def test_coverage_counts_train_items_in_any_top_k() -> None:
    m = Metrics(2, POP)
    m.add("a", ["a", "b"])
    m.add("a", ["c", "x"])  # x is not a train item: never counts
    assert m.summary(2)["coverage"] == pytest.approx(75.0)  # a, b, c of a, b, c, d
    assert m.summary(1)["coverage"] == pytest.approx(50.0)  # a, c


def test_popularity_is_mean_normalised_count() -> None:
    m = Metrics(2, POP)
    m.add("a", ["a", "b"])  # 1, 0.5
    m.add("a", ["a", "x"])  # 1, 0 (unseen in train)
    m.add("a", ["c"])  # 0.25 at every k
    assert m.summary(1)["popularity"] == pytest.approx((1 + 1 + 0.25) / 3)
    assert m.summary(2)["popularity"] == pytest.approx((0.75 + 0.5 + 0.25) / 3)


def test_latency_percentiles() -> None:
    m = Metrics(1, POP)
    m.add("a", ["a"])
    assert math.isnan(m.summary(1)["latency_p50_ms"])
    for ms in (1.0, 2.0, 3.0):
        m.add("a", ["a"], latency_ms=ms)
    s = m.summary(1)
    assert s["latency_p50_ms"] == pytest.approx(2.0)
    assert 2.9 < s["latency_p99_ms"] <= 3.0


def test_curves_match_summary_and_hr_is_monotone() -> None:
    m = Metrics(5, POP)
    for target, recs in [("c", "abcde"), ("e", "abcde"), ("a", "ba"), ("z", "abc")]:
        m.add(target, list(recs))
    c = m.curves()
    assert len(c["hr"]) == len(c["mrr"]) == 5
    assert all(x <= y for x, y in zip(c["hr"], c["hr"][1:], strict=False))
    assert all(x <= y for x, y in zip(c["mrr"], c["mrr"][1:], strict=False))
    for k in range(1, 6):
        assert c["hr"][k - 1] == pytest.approx(m.summary(k)["hr"])
        assert c["mrr"][k - 1] == pytest.approx(m.summary(k)["mrr"])


def test_empty_and_invalid() -> None:
    m = Metrics(3, {})
    s = m.summary(3)
    assert s["n"] == 0.0
    assert all(math.isnan(s[key]) for key in ("hr", "mrr", "ndcg", "coverage", "popularity"))
    with pytest.raises(ValueError):
        m.summary(4)
    with pytest.raises(ValueError):
        Metrics(0, POP)
