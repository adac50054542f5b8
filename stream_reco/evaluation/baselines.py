"""Classic session-based baselines (POP, S-POP, Markov-1, Item-KNN, V-SKNN) fitted on train only.

Every baseline is frozen after ``fit``: ``recommend`` never learns from what it is asked. Item ids
are mapped to ints at fit time and neighbour lists are precomputed, so one recommendation costs
microseconds to a fraction of a millisecond. Lists shorter than k are filled with the most
popular train items (POP), so every method returns k items when the catalogue has them.

Ties are broken deterministically by global popularity (train click count, descending) and then
by item id (ascending string order); items unseen in train come after all train items.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np


class Baseline(Protocol):
    """A next-item recommender fitted once on train sessions."""

    name: str

    def fit(self, sessions: Sequence[Sequence[str]]) -> None:
        """Learn from train sessions, each a list of item ids in time order, oldest first."""
        ...

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        """Top-k items for the next click after ``prefix`` (len(prefix) >= 1), best first."""
        ...


class _Catalogue:
    """Item ids <-> ints, click counts and the popularity order shared by every baseline."""

    def __init__(self, sessions: Sequence[Sequence[str]]) -> None:
        counts: Counter[str] = Counter()
        for session in sessions:
            counts.update(session)
        self.items: list[str] = sorted(counts, key=lambda i: (-counts[i], i))
        self.index: dict[str, int] = {item: n for n, item in enumerate(self.items)}
        # Ints are assigned in popularity order, so a smaller int is a better tie-breaker.
        self.counts = np.array([counts[i] for i in self.items], dtype=np.int64)
        self.n = len(self.items)
        self.flat = np.array([self.index[i] for s in sessions for i in s], dtype=np.int64)
        self.lengths = np.array([len(s) for s in sessions], dtype=np.int64)

    def unique_per_session(self) -> tuple[np.ndarray, np.ndarray]:
        """(session index, item) of each distinct item of each session, sorted by session."""
        sess = np.repeat(np.arange(len(self.lengths), dtype=np.int64), self.lengths)
        keys = np.unique(sess * self.n + self.flat)
        return keys // self.n, keys % self.n

    def fill(self, ranked: Sequence[int], k: int) -> list[str]:
        """Ids of ``ranked`` (first k), then the most popular items not already listed."""
        out = list(dict.fromkeys(ranked))[:k]
        if len(out) < k:
            taken = set(out)
            out.extend(i for i in range(min(self.n, k + len(taken))) if i not in taken)
        return [self.items[i] for i in out[:k]]


def _csr(rows: np.ndarray, cols: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Offsets and columns of (row, col) pairs already sorted by row."""
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=offsets[1:])
    return offsets, cols


def _top_per_row(
    rows: np.ndarray, cols: np.ndarray, score: np.ndarray, n_rows: int, keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each row, its ``keep`` best cols by score (ties: smaller col = more popular first)."""
    order = np.lexsort((cols, -score, rows))
    rows, cols = rows[order], cols[order]
    offsets, _ = _csr(rows, cols, n_rows)
    rank = np.arange(len(rows)) - offsets[rows]
    mask = rank < keep
    return _csr(rows[mask], cols[mask], n_rows)


def _row_then_pop(
    cat: _Catalogue, offsets: np.ndarray, cols: np.ndarray, item_id: str, k: int
) -> list[str]:
    """The first k items of ``item_id``'s precomputed row, filled with POP."""
    item = cat.index.get(item_id)
    if item is None:
        return cat.fill([], k)
    start = offsets[item]
    end = min(offsets[item + 1], start + k)
    return cat.fill(cols[start:end].tolist(), k)


class Pop:
    """POP: the k most clicked train items, whatever the session. Nothing is excluded."""

    name = "pop"

    def fit(self, sessions: Sequence[Sequence[str]]) -> None:
        self._cat = _Catalogue(sessions)

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        return self._cat.items[:k]


class SessionPop:
    """S-POP: items of the prefix by their count in it; ties and the rest by global popularity.

    Equivalent to GRU4Rec's SessionPop score ``count_in_prefix + pop / (max_pop + 1)``. Nothing is
    excluded: re-recommending what the session already clicked is the whole method.
    """

    name = "spop"

    def fit(self, sessions: Sequence[Sequence[str]]) -> None:
        self._cat = _Catalogue(sessions)

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        cat = self._cat
        counts = Counter(prefix)
        unseen = cat.n  # items unknown to train rank after every train item
        ranked = sorted(counts, key=lambda i: (-counts[i], cat.index.get(i, unseen), i))[:k]
        if len(ranked) < k:
            taken = set(ranked)
            ranked.extend(i for i in cat.items[: k + len(taken)] if i not in taken)
        return ranked[:k]


class Markov:
    """Markov-1: successors of the last item by train transition count, then POP.

    Transitions come from consecutive clicks, including an item followed by itself (repeated
    clicks are common and are valid targets), so nothing is excluded.
    """

    name = "markov"

    def __init__(self, keep: int = 100) -> None:
        self.keep = keep

    def fit(self, sessions: Sequence[Sequence[str]]) -> None:
        cat = self._cat = _Catalogue(sessions)
        ends = np.cumsum(cat.lengths)
        last = np.zeros(len(cat.flat), dtype=bool)
        # No transition from a session's last click into the next session.
        last[ends[cat.lengths > 0] - 1] = True
        src, dst = cat.flat[:-1][~last[:-1]], cat.flat[1:][~last[:-1]]
        keys, cnt = np.unique(src * cat.n + dst, return_counts=True)
        self._offsets, self._next = _top_per_row(
            keys // cat.n, keys % cat.n, cnt.astype(np.float64), cat.n, self.keep
        )

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        return _row_then_pop(self._cat, self._offsets, self._next, prefix[-1], k)


class ItemKNN:
    """Item-KNN (GRU4Rec baseline): nearest neighbours of the last item by session co-occurrence.

    sim(i, j) = cooc(i, j) / ((supp_i + lmbd)^alpha * (supp_j + lmbd)^(1 - alpha)). Like the
    reference implementation (not its docstring, which says sessions), supp counts clicks and
    cooc sums count_s(i) * count_s(j) over train sessions s, so repeated clicks weigh more; the
    published numbers come from that code. As in the original, an item is not its own neighbour
    (it can still come back through the POP fill); other prefix items are not excluded.
    """

    name = "itemknn"

    def __init__(self, n_sims: int = 100, lmbd: float = 20.0, alpha: float = 0.5) -> None:
        self.n_sims, self.lmbd, self.alpha = n_sims, lmbd, alpha

    def fit(self, sessions: Sequence[Sequence[str]]) -> None:
        cat = self._cat = _Catalogue(sessions)
        supp = cat.counts.astype(np.float64)
        # Every ordered pair of clicks within each session: click e pairs with all of its session.
        sizes = cat.lengths
        starts = np.cumsum(sizes) - sizes
        reps = np.repeat(sizes, sizes)
        left = np.repeat(cat.flat, reps)
        step = np.arange(len(left)) - np.repeat(np.cumsum(reps) - reps, reps)
        right = cat.flat[np.repeat(np.repeat(starts, sizes), reps) + step]
        other = left != right
        keys, cooc = np.unique(left[other] * cat.n + right[other], return_counts=True)
        li, ri = keys // cat.n, keys % cat.n
        norm = (supp[li] + self.lmbd) ** self.alpha * (supp[ri] + self.lmbd) ** (1 - self.alpha)
        self._offsets, self._nbrs = _top_per_row(li, ri, cooc / norm, cat.n, self.n_sims)

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        return _row_then_pop(self._cat, self._offsets, self._nbrs, prefix[-1], k)


class VSKNN:
    """V-SKNN (Ludewig & Jannach 2018): session kNN with a linear position decay on the prefix.

    The prefix is a vector over its distinct items, weighted by position: the click at position p
    of L weighs p / L (the last click 1; a repeated item keeps its latest weight). Candidates are
    the ``sample_size`` most recent train sessions sharing an item with the prefix (recency = the
    order of ``fit``'s sessions, which must be chronological). Similarity is the cosine between the
    weighted prefix vector and the binary vector of a train session; the ``k`` most similar
    sessions vote for each of their items with their similarity. Nothing is excluded: items of the
    prefix can be recommended, as in the original.
    """

    name = "vsknn"

    def __init__(self, k: int = 100, sample_size: int = 1000) -> None:
        self.k, self.sample_size = k, sample_size

    def fit(self, sessions: Sequence[Sequence[str]]) -> None:
        cat = self._cat = _Catalogue(sessions)
        sess, items = cat.unique_per_session()
        n_sessions = len(cat.lengths)
        self._s_offsets, self._s_items = _csr(sess, items, n_sessions)
        self._s_norm = np.sqrt(np.bincount(sess, minlength=n_sessions).astype(np.float64))
        order = np.lexsort((sess, items))  # per item, its sessions oldest first
        self._i_offsets, self._i_sessions = _csr(items[order], sess[order], cat.n)

    def recommend(self, prefix: Sequence[str], k: int) -> list[str]:
        cat = self._cat
        weights: dict[int, float] = {}
        for pos, item_id in enumerate(prefix, start=1):
            item = cat.index.get(item_id)
            if item is not None:
                weights[item] = pos / len(prefix)
        if not weights:
            return cat.fill([], k)
        # The most recent sample_size sessions of the union are among each item's most recent.
        parts, part_w = [], []
        for item, w in weights.items():
            end = self._i_offsets[item + 1]
            part = self._i_sessions[max(self._i_offsets[item], end - self.sample_size) : end]
            parts.append(part)
            part_w.append(np.full(len(part), w))
        cand, inv = np.unique(np.concatenate(parts), return_inverse=True)
        dot = np.bincount(inv, weights=np.concatenate(part_w))
        cand, dot = cand[-self.sample_size :], dot[-self.sample_size :]
        norm = np.sqrt(sum(w * w for w in weights.values()))
        sim = dot / (self._s_norm[cand] * norm)
        best = np.lexsort((-cand, -sim))[: self.k]  # ties: the more recent session first
        cand, sim = cand[best], sim[best]
        starts, ends = self._s_offsets[cand], self._s_offsets[cand + 1]
        lens = ends - starts
        pos = (
            np.arange(lens.sum())
            - np.repeat(np.cumsum(lens) - lens, lens)
            + np.repeat(starts, lens)
        )
        items, inv = np.unique(self._s_items[pos], return_inverse=True)
        score = np.bincount(inv, weights=np.repeat(sim, lens))
        top = np.lexsort((items, -score))[:k]
        return cat.fill(items[top].tolist(), k)


BASELINES: dict[str, Callable[[], Baseline]] = {
    "pop": Pop,
    "spop": SessionPop,
    "markov": Markov,
    "itemknn": ItemKNN,
    "vsknn": VSKNN,
}
