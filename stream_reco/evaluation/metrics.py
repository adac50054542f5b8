"""Next-item metrics: HR, MRR, NDCG, coverage, popularity bias and latency from ranked lists."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


class Metrics:
    """Accumulate one ranked recommendation list per scored position and summarise at any k.

    Memory is O(k_max + distinct items): a histogram of target ranks, per-k popularity sums and
    the best rank each item reached, never one entry per position (latencies excepted).

    Duplicates in a list count once, at their first occurrence: a repeated item does not take a
    rank, so ``["a", "a", "b"]`` ranks ``b`` second. Only the first ``k_max`` distinct items count.

    >>> m = Metrics(k_max=3, train_popularity={"a": 4, "b": 2, "c": 1})
    >>> m.add("b", ["a", "b", "c"])
    >>> m.add("z", ["a"])
    >>> s = m.summary(3)
    >>> s["n"], s["hr"], s["mrr"]
    (2.0, 50.0, 25.0)
    """

    def __init__(self, k_max: int, train_popularity: Mapping[str, int]) -> None:
        if k_max < 1:
            raise ValueError(f"k_max must be >= 1, got {k_max}")
        self.k_max = k_max
        top = max(train_popularity.values(), default=0)
        # Normalised popularity in [0, 1]; its keys are the catalogue for coverage.
        self._pop = {i: (c / top if top > 0 else 0.0) for i, c in train_popularity.items()}
        self._n = 0
        self._rank_hist = [0] * (k_max + 1)  # index r = target found at rank r (1-based)
        self._pop_sum = [0.0] * (k_max + 1)  # index k = sum over lists of mean pop of top k
        self._pop_lists = 0  # non-empty lists (an empty list has no mean popularity)
        self._best_rank: dict[str, int] = {}  # item -> best rank it was recommended at
        self._latencies: list[float] = []

    def add(self, target: str, recs: Sequence[str], latency_ms: float | None = None) -> None:
        """Score one position: ``recs`` is ranked best first and may be shorter than k_max."""
        self._n += 1
        if latency_ms is not None:
            self._latencies.append(float(latency_ms))
        seen: set[str] = set()
        best = self._best_rank
        pop = self._pop
        pop_sum = self._pop_sum
        running = 0.0
        rank = 0
        for item in recs:
            if item in seen:
                continue
            seen.add(item)
            rank += 1
            if item == target:
                self._rank_hist[rank] += 1
            if best.get(item, rank + 1) > rank:
                best[item] = rank
            running += pop.get(item, 0.0)
            pop_sum[rank] += running / rank
            if rank == self.k_max:
                break
        if rank == 0:
            return
        self._pop_lists += 1
        # A list shorter than k contributes the mean over all its items at every larger k.
        tail = running / rank
        for k in range(rank + 1, self.k_max + 1):
            pop_sum[k] += tail

    def summary(self, k: int) -> dict[str, float]:
        """All metrics at cut-off k; NaN where nothing was measured.

        hr, mrr, ndcg and coverage are percentages (0..100); popularity is a fraction (0..1) of
        the most popular train item's count, averaged over the top-k items and then over lists.
        """
        if not 1 <= k <= self.k_max:
            raise ValueError(f"k must be in 1..{self.k_max}, got {k}")
        n = self._n
        hist = self._rank_hist
        nan = math.nan
        hits = sum(hist[1 : k + 1])
        rr = sum(hist[r] / r for r in range(1, k + 1))
        dcg = sum(hist[r] / math.log2(r + 1) for r in range(1, k + 1))
        covered = sum(1 for i, r in self._best_rank.items() if r <= k and i in self._pop)
        n_items = len(self._pop)
        lat = np.asarray(self._latencies, dtype=np.float64)
        return {
            "n": float(n),
            "hr": 100.0 * hits / n if n else nan,
            "mrr": 100.0 * rr / n if n else nan,
            "ndcg": 100.0 * dcg / n if n else nan,
            "coverage": 100.0 * covered / n_items if n_items else nan,
            "popularity": self._pop_sum[k] / self._pop_lists if self._pop_lists else nan,
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else nan,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else nan,
        }

    def curves(self) -> dict[str, list[float]]:
        """HR@k and MRR@k in percent for k = 1..k_max (index 0 is k = 1)."""
        hr: list[float] = []
        mrr: list[float] = []
        hits = 0
        rr = 0.0
        n = self._n
        for r in range(1, self.k_max + 1):
            hits += self._rank_hist[r]
            rr += self._rank_hist[r] / r
            hr.append(100.0 * hits / n if n else math.nan)
            mrr.append(100.0 * rr / n if n else math.nan)
        return {"hr": hr, "mrr": mrr}
