"""The vector log against a real redis-server: ordered exclusive reads, trims, full rebuilds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import redis.asyncio as aioredis

from stream_reco.candidates.ann import ItemIndex
from stream_reco.config import Settings
from stream_reco.errors import LogTrimmed, StoreError
from stream_reco.storage.keys import Keys
from stream_reco.storage.vector_log import START, VectorLog
from tests.integration.conftest import uid

DIM = 8


class Log:
    """A VectorLog on its own key prefix with a private event loop, for sync tests."""

    def __init__(self, settings: Settings, maxlen: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = aioredis.Redis.from_url(settings.redis_url, protocol=2)
        self.keys = Keys(uid("vlog"))
        self.log = VectorLog(self.client, self.keys, dim=DIM, maxlen=maxlen)

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        async def clear() -> None:
            async for key in self.client.scan_iter(match=self.keys.all_pattern()):
                await self.client.unlink(key)
            await self.client.aclose()

        self.run(clear())
        self.loop.close()


@pytest.fixture
def vlog(settings: Settings) -> Iterator[Log]:
    log = Log(settings, maxlen=1000)
    yield log
    log.close()


@pytest.fixture
def short_log(settings: Settings) -> Iterator[Log]:
    log = Log(settings, maxlen=10)
    yield log
    log.close()


def vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def same(a: np.ndarray | None, b: np.ndarray) -> bool:
    return a is not None and np.array_equal(a, b)


def test_changes_come_once_per_item_with_the_current_vector(vlog: Log) -> None:
    log = vlog.log
    assert vlog.run(log.changes_since(START)) == (START, [])
    first = vlog.run(log.publish("a", vec(1)))
    vlog.run(log.publish("b", vec(2)))
    vlog.run(log.publish("a", vec(3)))  # a changed again: read once, as it is now
    last = vlog.run(log.publish("c", vec(4)))
    position, changes = vlog.run(log.changes_since(START))
    assert position == last
    assert [item for item, _ in changes] == ["a", "b", "c"]
    assert same(changes[0][1], vec(3)) and same(changes[1][1], vec(2))
    position, changes = vlog.run(log.changes_since(first))  # exclusive: a's first entry is out
    assert position == last and [item for item, _ in changes] == ["b", "a", "c"]
    assert vlog.run(log.changes_since(last)) == (last, [])


def test_removal_reads_as_none_and_leaves_the_full_scan(vlog: Log) -> None:
    log = vlog.log
    vlog.run(log.publish_many([("a", vec(1)), ("b", vec(2))]))
    at = vlog.run(log.publish("a", None))
    position, changes = vlog.run(log.changes_since(START))
    assert position == at and changes[0] == ("a", None) and same(changes[1][1], vec(2))
    position, everything = vlog.run(log.all_vectors())
    assert position == at and list(everything) == ["b"] and same(everything["b"], vec(2))


def test_count_pages_through_the_log_in_order(vlog: Log) -> None:
    log = vlog.log
    vlog.run(log.publish_many([(f"i{n}", vec(n)) for n in range(25)]))
    position, seen = START, []
    while True:
        position, changes = vlog.run(log.changes_since(position, count=10))
        if not changes:
            break
        assert len(changes) <= 10
        seen += [item for item, _ in changes]
    assert seen == [f"i{n}" for n in range(25)]


def test_a_trimmed_position_asks_for_a_rebuild_that_then_follows_on(short_log: Log) -> None:
    log = short_log.log
    early = short_log.run(log.publish("first", vec(0)))
    for n in range(300):  # MAXLEN ~ 10: Redis drops whole nodes of old entries
        short_log.run(log.publish(f"i{n % 50}", vec(n)))
    assert short_log.run(short_log.client.xlen(log.log_key)) < 300
    for stale in (early, START):
        with pytest.raises(LogTrimmed):
            short_log.run(log.changes_since(stale))
    position, everything = short_log.run(log.all_vectors())
    assert len(everything) == 51 and same(everything["i49"], vec(299))
    after = short_log.run(log.publish("late", vec(7)))
    position, [(item, vector)] = short_log.run(log.changes_since(position))
    assert position == after and item == "late" and same(vector, vec(7))


def test_a_deleted_log_is_not_mistaken_for_no_news(vlog: Log) -> None:
    log = vlog.log
    at = vlog.run(log.publish("a", vec(1)))
    vlog.run(vlog.client.delete(log.log_key, log.vectors_key))  # e.g. Redis flushed
    with pytest.raises(LogTrimmed):
        vlog.run(log.changes_since(at))
    assert vlog.run(log.changes_since(START)) == (START, [])


def test_a_reader_with_another_dimension_fails_loudly(vlog: Log) -> None:
    vlog.run(vlog.log.publish("a", vec(1)))
    other = VectorLog(vlog.client, vlog.keys, dim=DIM * 2)
    with pytest.raises(StoreError, match="same dim"):
        vlog.run(other.changes_since(START))
    with pytest.raises(ValueError):
        vlog.run(vlog.log.publish("b", np.ones(DIM + 1)))


def test_incremental_and_rebuilt_workers_converge_to_the_same_index(vlog: Log) -> None:
    log = vlog.log
    follower = ItemIndex(dim=DIM, capacity=8)
    position = START
    for round_ in range(3):  # the follower applies the log as it grows
        changes = [(f"i{n}", vec(n + 100 * round_)) for n in range(round_, 40, 2)]
        vlog.run(log.publish_many([*changes, (f"i{round_}", None)]))
        while True:
            position, batch = vlog.run(log.changes_since(position, count=7))
            if not batch:
                break
            for item, vector in batch:
                if vector is None:
                    follower.remove(item)
                else:
                    follower.upsert(item, vector)
    _, everything = vlog.run(log.all_vectors())
    rebuilt = ItemIndex.from_vectors(everything, dim=DIM)
    assert len(follower) == len(rebuilt) == len(everything) > 0
    for item in everything:
        assert np.allclose(follower.vector(item), rebuilt.vector(item), atol=1e-6)
        ours, theirs = follower.similar(item, 5), rebuilt.similar(item, 5)
        assert [i for i, _ in ours] == [i for i, _ in theirs]
        assert [s for _, s in ours] == pytest.approx([s for _, s in theirs], abs=1e-5)
