"""The HNSW item index: semantics of upsert/remove, growth, snapshots that survive crashes."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest

from stream_reco.candidates import snapshot
from stream_reco.candidates.ann import ItemIndex
from stream_reco.candidates.vectors import DIM, content_vector
from stream_reco.errors import SnapshotError
from stream_reco.events import CatalogItem

CATEGORIES = ("kitchen", "garden", "sports", "toys")
BRANDS = ("acme", "zed", "north", "bolt")


def catalogue(n: int = 80) -> dict[str, np.ndarray]:
    """Item n is in category n % 4 with brand n % 4: four clear groups of similar items."""
    return {
        f"i{n}": content_vector(
            CatalogItem(f"i{n}", f"thing {n}", CATEGORIES[n % 4], BRANDS[n % 4], 10.0 + n % 4)
        )
        for n in range(n)
    }


def random_vectors(n: int, seed: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"r{i}": rng.standard_normal(DIM).astype(np.float32) for i in range(n)}


def filled(vectors: dict[str, np.ndarray], capacity: int = 1024) -> ItemIndex:
    index = ItemIndex(capacity=capacity)
    for item, v in vectors.items():
        index.upsert(item, v)
    return index


def group(item_id: str) -> int:
    return int(item_id[1:]) % 4


def test_similar_items_share_category_and_brand_and_exclude_the_item() -> None:
    index = filled(catalogue())
    found = index.similar("i5", 10)
    assert len(found) == 10 and "i5" not in dict(found)
    assert all(group(item) == group("i5") for item, _ in found)
    sims = [s for _, s in found]
    assert sims == sorted(sims, reverse=True) and all(-1.0 <= s <= 1.0 for s in sims)


def test_query_answers_with_the_nearest_item_first() -> None:
    vectors = random_vectors(200)
    index = filled(vectors)
    for item in ("r0", "r57", "r199"):
        [(best, sim)] = index.query(vectors[item], 1)
        assert best == item and sim == pytest.approx(1.0, abs=1e-5)


def test_k_larger_than_the_index_and_unknown_items() -> None:
    index = filled(random_vectors(5))
    assert sorted(i for i, _ in index.similar("r0", 50)) == ["r1", "r2", "r3", "r4"]
    assert index.similar("nope", 5) == [] and index.query(np.ones(DIM), 0) == []
    assert ItemIndex().query(np.ones(DIM), 3) == []


def test_update_keeps_the_item_once_and_moves_it() -> None:
    vectors = random_vectors(50)
    index = filled(vectors)
    index.upsert("r1", vectors["r40"])
    assert len(index) == 50
    assert {i for i, _ in index.query(vectors["r40"], 2)} == {"r1", "r40"}
    assert "r1" not in {i for i, _ in index.query(vectors["r1"], 3)}
    assert np.allclose(index.vector("r1"), vectors["r40"] / np.linalg.norm(vectors["r40"]))


def test_similar_answers_are_remembered_only_until_the_index_changes() -> None:
    vectors = random_vectors(50)
    index = filled(vectors)
    before = index.similar("r1", 3)
    assert index.similar("r1", 3) is before  # remembered: no second graph search
    assert index.similar("r1", 4) is not before  # another k is another answer
    index.upsert("r2", vectors["r1"])  # now r2 is r1's nearest neighbour
    assert index.similar("r1", 3)[0][0] == "r2"
    index.remove("r2")
    assert "r2" not in {i for i, _ in index.similar("r1", 3)}


def test_removed_items_are_never_returned_and_can_come_back() -> None:
    vectors = random_vectors(60)
    index = filled(vectors)
    gone = [f"r{n}" for n in range(0, 60, 3)]
    for item in gone:
        assert index.remove(item)
    assert not index.remove("r0") and not index.remove("never")
    assert len(index) == 40 and "r0" not in index and index.vector("r0") is None
    for v in vectors.values():
        assert not set(gone) & {i for i, _ in index.query(v, 40)}
    assert len(index.similar("r1", 100)) == 39
    index.upsert("r0", vectors["r0"])
    assert index.query(vectors["r0"], 1)[0][0] == "r0" and len(index) == 41


def test_churn_reuses_removed_slots_instead_of_growing() -> None:
    index = ItemIndex(capacity=64)
    rng = np.random.default_rng(5)
    for n in range(500):  # 40 live items at any time, 500 distinct ones over time
        index.upsert(f"x{n}", rng.standard_normal(DIM))
        if n >= 40:
            index.remove(f"x{n - 40}")
    assert len(index) == 40 and index.capacity == 64
    assert {i for i, _ in index.similar("x499", 39)} == {f"x{n}" for n in range(460, 499)}


def test_capacity_grows_before_it_is_full() -> None:
    vectors = random_vectors(300)
    index = ItemIndex(capacity=8)
    for n, (item, v) in enumerate(vectors.items(), start=1):
        index.upsert(item, v)
        assert n <= 0.9 * index.capacity  # always headroom: never an add at capacity
    assert len(index) == 300 and index.capacity == 512
    assert all(index.query(v, 1)[0][0] == item for item, v in vectors.items())


def test_bad_vectors_are_refused() -> None:
    index = ItemIndex()
    for bad in (np.zeros(DIM), np.ones(DIM + 1), np.full(DIM, np.nan)):
        with pytest.raises(ValueError):
            index.upsert("x", bad)
    assert len(index) == 0


def test_from_vectors_matches_one_by_one_upserts() -> None:
    vectors = random_vectors(100)
    batch, single = ItemIndex.from_vectors(vectors), filled(vectors)
    assert len(batch) == 100 and "r7" in batch
    assert [i for i, _ in batch.similar("r7", 5)] == [i for i, _ in single.similar("r7", 5)]
    batch.upsert("new", vectors["r7"])
    assert {i for i, _ in batch.query(vectors["r7"], 2)} == {"new", "r7"}


def test_save_and_load_give_the_same_answers_and_position(tmp_path: Path) -> None:
    vectors = random_vectors(120)
    index = filled(vectors, capacity=16)
    index.remove("r3")
    index.save(tmp_path, "1700000000000-7")
    loaded, position = ItemIndex.load(tmp_path)
    assert position == "1700000000000-7" and len(loaded) == 119 and "r3" not in loaded
    for item in ("r0", "r50", "r119"):
        assert loaded.similar(item, 8) == index.similar(item, 8)
    loaded.upsert("fresh", vectors["r50"])  # labels go on after the saved ones
    assert {i for i, _ in loaded.query(vectors["r50"], 2)} == {"fresh", "r50"}
    assert loaded.query(vectors["r0"], 1)[0][0] == "r0"


def test_snapshot_files_are_json_and_hnswlib_binary_not_pickle(tmp_path: Path) -> None:
    filled(random_vectors(10)).save(tmp_path, "5-0")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and names[1] == snapshot.STATE
    state = orjson.loads((tmp_path / snapshot.STATE).read_bytes())
    assert state["state"]["position"] == "5-0" and len(state["state"]["labels"]) == 10
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert not data.startswith(b"\x80")  # pickle protocol 2+ opens with PROTO
        assert b"numpy" not in data and b"hnswlib.Index" not in data


def test_a_second_save_replaces_the_first_and_leaves_no_stale_files(tmp_path: Path) -> None:
    index = filled(random_vectors(10))
    index.save(tmp_path, "1-0")
    (tmp_path / "graph-0123456789abcdef.bin").write_bytes(b"left by a crash")
    index.upsert("late", np.ones(DIM))
    index.save(tmp_path, "2-0")
    loaded, position = ItemIndex.load(tmp_path)
    assert position == "2-0" and "late" in loaded
    assert len(list(tmp_path.iterdir())) == 2


def test_a_crash_before_the_commit_leaves_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = filled(random_vectors(10))
    index.save(tmp_path, "1-0")
    index.upsert("late", np.ones(DIM))

    def crash(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(snapshot.os, "replace", crash)
    with pytest.raises(SnapshotError, match="disk full"):
        index.save(tmp_path, "2-0")
    monkeypatch.undo()
    loaded, position = ItemIndex.load(tmp_path)
    assert position == "1-0" and len(loaded) == 10 and "late" not in loaded
    assert len(list(tmp_path.iterdir())) == 2  # the half-written files were removed


@pytest.mark.parametrize("damage", ["truncate", "flip", "state-garbage", "state-path", "missing"])
def test_a_damaged_or_missing_snapshot_is_a_clear_error(tmp_path: Path, damage: str) -> None:
    filled(random_vectors(30)).save(tmp_path, "1-0")
    state_file = tmp_path / snapshot.STATE
    graph = tmp_path / orjson.loads(state_file.read_bytes())["graph"]
    data = graph.read_bytes()
    if damage == "truncate":
        graph.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        graph.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "state-garbage":
        state_file.write_bytes(b'{"format": 1, "graph": ')
    elif damage == "state-path":
        doc = orjson.loads(state_file.read_bytes())
        state_file.write_bytes(orjson.dumps({**doc, "graph": "../graph-0123456789abcdef.bin"}))
    else:
        state_file.unlink()
    with pytest.raises(SnapshotError):
        ItemIndex.load(tmp_path)
    with pytest.raises(SnapshotError, match="no snapshot"):
        ItemIndex.load(tmp_path / "never-saved")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"labels": {"ghost": 999}}, "not in the graph"),  # a label the graph never had
        ({"dim": 32}, "not dim=32"),  # hnswlib would read vectors of the wrong size
        ({"position": 7}, "bad state"),
        ({"next_label": 2}, "outside"),
    ],
)
def test_a_state_that_does_not_match_the_graph_is_refused(
    tmp_path: Path, change: dict[str, object], error: str
) -> None:
    filled(random_vectors(5)).save(tmp_path, "1-0")
    state_file = tmp_path / snapshot.STATE
    doc = orjson.loads(state_file.read_bytes())
    for key, value in change.items():
        merged = {**doc["state"][key], **value} if isinstance(value, dict) else value
        doc["state"][key] = merged
    state_file.write_bytes(orjson.dumps(doc))
    with pytest.raises(SnapshotError, match=error):
        ItemIndex.load(tmp_path)


def test_queries_in_threads_while_one_writer_adds_past_resizes() -> None:
    vectors = random_vectors(400, seed=11)
    items = list(vectors)
    index = filled({i: vectors[i] for i in items[:20]}, capacity=16)
    done = threading.Event()
    errors: list[BaseException] = []

    def reader() -> int:
        answered = 0
        while not done.is_set():
            try:
                found = index.query(vectors[items[answered % 20]], 5)
                assert found and all(item in vectors for item, _ in found)
                answered += 1
            except BaseException as exc:  # noqa: B036 - reported by the assert below
                errors.append(exc)
                return answered
        return answered

    with ThreadPoolExecutor(3) as pool:
        readers = [pool.submit(reader) for _ in range(3)]
        for item in items[20:]:
            index.upsert(item, vectors[item])
        done.set()
        answered = sum(r.result() for r in readers)
    assert not errors and answered > 0
    assert len(index) == 400 and index.capacity >= 400 / 0.9


def test_a_query_gives_up_on_a_long_write_instead_of_blocking() -> None:
    from stream_reco.candidates import similar
    from stream_reco.candidates.ann import IndexBusy
    from stream_reco.state import Interaction

    index = filled(catalogue(20))
    writing, release = threading.Event(), threading.Event()

    def long_write() -> None:  # what a resize of a big index looks like to a query
        with index._lock.write():
            writing.set()
            release.wait(5)

    writer = threading.Thread(target=long_write)
    writer.start()
    writing.wait(5)
    try:
        with pytest.raises(IndexBusy):
            index.similar("i0", 3, wait=0.01)
        found: dict = {}
        similar.gather(index, [(Interaction("i0", "view", 1), 1.0)], found)
        assert found == {}  # the request goes on without this source
    finally:
        release.set()
        writer.join()
    assert len(index.similar("i0", 3, wait=0.01)) == 3  # and the next one has it again
