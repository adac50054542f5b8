"""The item-vector HNSW index (hnswlib, cosine): upsert, remove, similar items, snapshots."""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import hnswlib
import numpy as np

from stream_reco.candidates import snapshot
from stream_reco.candidates.vectors import DIM
from stream_reco.errors import SnapshotError

# Grow before full: hnswlib refuses an add at capacity, and doubling keeps resizes rare.
GROW_AT = 0.9
SPACE = "cosine"
MEMO_MAX = 10_000  # remembered `similar` answers per index (item, k), dropped on any write

Neighbours = list[tuple[str, float]]


class ItemIndex:
    """Item ids mapped to stable hnswlib labels over a cosine HNSW graph.

    Threading: one writer (upsert, remove, save) is expected; queries (`similar`, `query`,
    `vector`) may run concurrently in executor threads, where hnswlib releases the GIL. hnswlib
    does not allow adds or resizes during a query, so a readers-writer lock lets queries run
    side by side while each write waits for them (and blocks new ones) for its few ms.

    Labels: a new item takes the next label, an update keeps its item's label; a removed item is
    marked deleted and forgets its label, and its graph slot is reused by a later new item
    (hnswlib `replace_deleted`), so churn does not grow the index without bound."""

    def __init__(
        self,
        dim: int = DIM,
        capacity: int = 1024,
        *,
        m: int = 16,
        ef_construction: int = 200,
        ef: int = 64,
        seed: int = 100,
    ) -> None:
        if dim < 1 or capacity < 1 or m < 2 or ef_construction < 1 or ef < 1:
            raise ValueError("dim, capacity, ef_construction and ef must be >= 1, m >= 2")
        index = hnswlib.Index(space=SPACE, dim=dim)
        index.init_index(
            max_elements=capacity,
            M=m,
            ef_construction=ef_construction,
            random_seed=seed,
            allow_replace_deleted=True,
        )
        self._attach(index, {}, 0, ef)

    def _attach(
        self, index: hnswlib.Index, labels: dict[str, int], next_label: int, ef: int
    ) -> None:
        index.set_ef(ef)  # a query for k > ef still searches with k (hnswlib uses max(ef, k))
        self._index = index
        self._labels = labels
        self._items = {label: item for item, label in labels.items()}
        self._next_label = next_label
        self._lock = _ReadWriteLock()
        # Answers to `similar` until the next write: a popular item is looked up by many
        # requests between catalogue changes, and the graph search is the costly part.
        self._version = 0
        self._memo: dict[tuple[str, int], tuple[int, Neighbours]] = {}

    @classmethod
    def from_vectors(
        cls, vectors: Mapping[str, np.ndarray], dim: int = DIM, *, threads: int = 1, **params: int
    ) -> ItemIndex:
        """A new index of `vectors` in one batch add (a full rebuild): much faster than one
        upsert each. `params` are the constructor's keyword arguments."""
        index = cls(dim, max(1024, int(len(vectors) / GROW_AT) + 1), **params)
        if vectors:
            rows = np.stack([index._checked(v) for v in vectors.values()])
            labels = np.arange(len(vectors), dtype=np.uint64)
            index._index.add_items(rows, labels, num_threads=threads)
            index._labels = {item: n for n, item in enumerate(vectors)}
            index._items = dict(enumerate(vectors))
            index._next_label = len(vectors)
        return index

    @property
    def dim(self) -> int:
        return int(self._index.dim)

    @property
    def capacity(self) -> int:
        return int(self._index.get_max_elements())

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._labels

    def upsert(self, item_id: str, vector: np.ndarray) -> None:
        """Add the item, or replace its vector if it is already indexed."""
        row = self._checked(vector)[np.newaxis]
        with self._lock.write():
            self._version += 1
            label = self._labels.get(item_id)
            if label is not None:
                self._index.add_items(row, [label], num_threads=1)  # in-place update
                return
            self._grow_if_needed()
            label = self._next_label
            self._index.add_items(row, [label], num_threads=1, replace_deleted=True)
            self._next_label += 1
            self._labels[item_id] = label
            self._items[label] = item_id

    def remove(self, item_id: str) -> bool:
        """Stop returning the item; False if it was not indexed."""
        with self._lock.write():
            self._version += 1
            label = self._labels.get(item_id)
            if label is None:
                return False
            self._index.mark_deleted(label)
            del self._labels[item_id], self._items[label]
            return True

    def vector(self, item_id: str, wait: float | None = None) -> np.ndarray | None:
        """The item's indexed vector (unit length), or None if it is not indexed. `wait`: at
        most this long for a write to finish, then IndexBusy (for callers on the event loop)."""
        with self._lock.read(wait):
            label = self._labels.get(item_id)
            if label is None:
                return None
            return np.asarray(self._index.get_items([label])[0], dtype=np.float32)

    def similar(self, item_id: str, k: int, wait: float | None = None) -> Neighbours:
        """The k items most similar to an indexed item, without the item; [] if not indexed.
        The list is shared with later callers until the index changes: do not modify it."""
        version = self._version  # read first: a write during the search makes the entry stale
        hit = self._memo.get((item_id, k))
        if hit is not None and hit[0] == version:
            return hit[1]
        vector = self.vector(item_id, wait)
        found = [] if vector is None else self.query(vector, k, exclude=item_id, wait=wait)
        if len(self._memo) >= MEMO_MAX:
            self._memo.clear()  # bounded; refilled by the items requests actually ask about
        self._memo[(item_id, k)] = (version, found)
        return found

    def query(
        self, vector: np.ndarray, k: int, exclude: str | None = None, wait: float | None = None
    ) -> Neighbours:
        """The k indexed items nearest to `vector` as (item_id, cosine similarity), best first."""
        row = self._checked(vector)[np.newaxis]
        with self._lock.read(wait):
            extra = 1 if exclude is not None and exclude in self._labels else 0
            want = min(k + extra, len(self._labels))
            found = self._knn(row, want) if k > 0 else []
            out = [
                (item, max(-1.0, min(1.0, 1.0 - distance)))
                for label, distance in found
                if (item := self._items.get(label)) is not None and item != exclude
            ]
        return out[: max(k, 0)]

    def save(self, directory: Path | str, position: str) -> None:
        """Snapshot the index with the change-log `position` it reflects; atomic: a crash at
        any point leaves the previous snapshot loadable. One saver per directory."""

        def dump(path: str) -> dict[str, object]:
            # Graph and labels from one moment; digests and fsyncs after, without the lock.
            with self._lock.read():  # writes wait, queries go on
                self._index.save_index(path)
                return {
                    "dim": self.dim,
                    "next_label": self._next_label,
                    "labels": dict(self._labels),
                    "position": position,
                }

        snapshot.write(Path(directory), dump)

    @classmethod
    def load(cls, directory: Path | str, *, ef: int = 64) -> tuple[ItemIndex, str]:
        """The index saved in `directory` and its position; SnapshotError if it is missing or
        damaged (rebuild from the vector log then)."""
        graph, state = snapshot.read(Path(directory))
        try:
            dim, labels = int(state["dim"]), state["labels"]
            next_label, position = int(state["next_label"]), state["position"]
            if not isinstance(labels, dict) or not isinstance(position, str):
                raise TypeError("labels must be an object and position a string")
            labels = {str(item): int(label) for item, label in labels.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise SnapshotError(f"snapshot in {directory} has a bad state: {exc}") from None
        _check_header(graph, dim)
        index = hnswlib.Index(space=SPACE, dim=dim)
        try:
            index.load_index(str(graph), allow_replace_deleted=True)
        except (RuntimeError, ValueError, MemoryError) as exc:
            raise SnapshotError(f"hnswlib cannot load {graph}: {exc}") from None
        _check_labels(index, labels, next_label, graph)
        loaded = cls.__new__(cls)
        loaded._attach(index, labels, next_label, ef)
        return loaded, position

    def _grow_if_needed(self) -> None:
        # element_count includes deleted slots, and stays put while a new item reuses one:
        # so it only nears capacity when there is no deleted slot left to reuse.
        if self._index.element_count + 1 > GROW_AT * self.capacity:
            self._index.resize_index(2 * self.capacity)

    def _knn(self, row: np.ndarray, want: int) -> list[tuple[int, float]]:
        # hnswlib raises when it finds fewer than k (a graph thinned by deletions can): ask
        # for fewer rather than failing the request.
        while want > 0:
            try:
                labels, distances = self._index.knn_query(row, k=want, num_threads=1)
            except RuntimeError:
                want //= 2
                continue
            return list(zip(labels[0].tolist(), distances[0].tolist(), strict=True))
        return []

    def _checked(self, vector: np.ndarray) -> np.ndarray:
        row = np.asarray(vector, dtype=np.float32)
        if row.shape != (self.dim,):
            raise ValueError(f"expected a vector of shape ({self.dim},), got {row.shape}")
        if not np.all(np.isfinite(row)) or not np.any(row):
            raise ValueError("a vector must be finite and not all zeros (no direction)")
        return row


def _check_header(graph: Path, dim: int) -> None:
    """hnswlib takes the vector size from the caller, not the file: a dim that does not match
    the graph would make it read out of bounds. The header's per-element label offset minus
    data offset is the vector size in bytes."""
    with open(graph, "rb") as f:
        header = f.read(48)
    if len(header) < 48:
        raise SnapshotError(f"{graph} is too short for an hnswlib index")
    *_, label_offset, data_offset = struct.unpack("<6Q", header)
    if dim < 1 or label_offset - data_offset != 4 * dim:
        raise SnapshotError(
            f"{graph} holds vectors of {label_offset - data_offset} bytes, not dim={dim}"
        )


def _check_labels(
    index: hnswlib.Index, labels: dict[str, int], next_label: int, graph: Path
) -> None:
    """The label map and the graph must describe the same items, or answers would be wrong."""
    stored = set(index.get_ids_list())
    values = set(labels.values())
    problems = []
    if len(values) != len(labels):
        problems.append("two items share a label")
    if not values <= stored:
        problems.append(f"{len(values - stored)} labels are not in the graph")
    if any(label >= next_label or label < 0 for label in values):
        problems.append("a label is outside 0..next_label")
    if problems:
        raise SnapshotError(f"snapshot {graph} is inconsistent: {'; '.join(problems)}")


class IndexBusy(RuntimeError):
    """A query gave up waiting for a write: the caller goes on without this index's answer."""


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers so it cannot
    starve behind a steady stream of queries. Not reentrant."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def read(self, wait: float | None = None) -> Iterator[None]:
        """Shared access; IndexBusy if a write still holds (or waits for) the index after
        `wait` seconds (None: wait as long as it takes)."""
        with self._cond:
            if not self._cond.wait_for(lambda: not (self._writing or self._writers_waiting), wait):
                raise IndexBusy("the index is being written (a resize or a batch of changes)")
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writing or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
