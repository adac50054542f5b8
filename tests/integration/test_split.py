"""On a Redis Cluster a batch is applied in per-slot steps (storage/split.py): the same state as
one node's single script, and every effect once whatever crashes between the steps."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import zlib
from collections.abc import Iterator

import orjson
import pytest

from stream_reco import digest
from stream_reco.config import Settings
from stream_reco.events import Event, decode_event
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage import apply, connect
from stream_reco.storage.apply import Position
from stream_reco.storage.redis_store import RedisStore
from stream_reco.storage.split import Split, pending
from tests.integration.conftest import clear_store, uid

TS = 1_750_000_000_000
N = 3000
BATCH = 500


def _events() -> list[Event]:
    shop = Storefront(make_catalog(100, seed=4), seed=6, run_id="split", start_ms=TS)
    decoded = (decode_event(orjson.dumps(e)) for e in shop.stream(concurrency=50))
    return [e for e in itertools.islice(decoded, N) if isinstance(e, Event)]


EVENTS = _events()
# Sessions keep their partition, as Kafka's keying does; offsets count per partition.
_PARTS = [zlib.crc32(e.session_id.encode()) % 3 for e in EVENTS]
AT = [Position("events", p, sum(q == p for q in _PARTS[:n])) for n, p in enumerate(_PARTS)]


@pytest.fixture
def stores(cluster: Settings, settings: Settings) -> Iterator[dict[str, Settings]]:
    """The same small caps (so trimming, the order-dependent part, really happens) and one
    prefix, on one node and on the cluster."""
    prefix = uid(f"{settings.key_prefix}-split")
    mine = {
        "node": dataclasses.replace(settings, key_prefix=prefix, neighbours_max=30),
        "cluster": dataclasses.replace(cluster, key_prefix=prefix, neighbours_max=30),
    }
    yield mine
    for s in mine.values():
        clear_store(s)


def _digest(settings: Settings) -> dict[str, object]:
    taken = digest.take(settings)
    taken.pop("key_prefix", None)
    return taken


async def _apply_all(settings: Settings, cuts: int = BATCH) -> list[bool]:
    store = RedisStore.connect(settings)
    try:
        flags: list[bool] = []
        for n in range(0, N, cuts):
            flags += await store.apply_events(EVENTS[n : n + cuts], positions=AT[n : n + cuts])
        return flags
    finally:
        await store.close()


def test_the_steps_hold_what_the_single_script_holds(stores: dict[str, Settings]) -> None:
    node, cluster = stores["node"], stores["cluster"]
    assert sum(asyncio.run(_apply_all(node))) == N
    assert sum(asyncio.run(_apply_all(cluster))) == N
    clean = _digest(node)
    assert _digest(cluster) == clean  # exact kinds identical, capped lists' tops too
    # Redelivered in other cuts: nothing applied twice.
    assert sum(asyncio.run(_apply_all(cluster, cuts=170))) == 0
    assert _digest(cluster) == clean
    client = connect.sync_client(cluster)
    try:
        per_node = [n.dbsize() for n in connect.primaries(client)]
    finally:
        client.close()
    assert all(per_node)  # the state really is spread


class Steps:
    """One batch's steps, run one by one as a crash or a second owner would leave them."""

    def __init__(self, settings: Settings, lo: int, hi: int) -> None:
        self.store = RedisStore.connect(settings)
        split = self.store._split
        assert isinstance(split, Split)
        self.split = split
        self.rows = [orjson.loads(r) for r in apply.rows(settings, EVENTS[lo:hi], AT[lo:hi], True)]
        self.at = AT[lo:hi]

    async def first(self) -> None:
        await self.split.load()
        self.todo = pending(self.at, await self.split.watermark(self.at))
        self.planned = await self.split.sessions(self.rows, self.todo, {})

    async def second(self) -> None:
        self.categories = await self.split.items(self.rows, self.planned)

    async def third(self) -> None:
        await self.split.commit(self.rows, self.todo, self.planned, self.categories, self.at, {})
        await self.store.close()


def _crash_after(settings: Settings, steps: int, lo: int = 1000, hi: int = 1500) -> None:
    """Apply up to `lo`, then run only the first `steps` steps of the batch [lo, hi)."""

    async def run() -> None:
        store = RedisStore.connect(settings)
        try:
            for n in range(0, lo, BATCH):
                await store.apply_events(EVENTS[n : n + BATCH], positions=AT[n : n + BATCH])
        finally:
            await store.close()
        batch = Steps(settings, lo, hi)
        for step in (batch.first, batch.second, batch.third)[:steps]:
            await step()
        await batch.store.close()

    asyncio.run(run())


@pytest.mark.parametrize("steps", [1, 2])
def test_a_crash_between_steps_is_made_good_by_the_redelivery(
    stores: dict[str, Settings], steps: int
) -> None:
    node, cluster = stores["node"], stores["cluster"]
    asyncio.run(_apply_all(node))
    _crash_after(cluster, steps)
    # The worker that takes over reads from the last commit, in other cuts.
    # Its first events were applied by the crashed try: not new now (no second push).
    assert sum(asyncio.run(_apply_all(cluster, cuts=300))) == N - 1500
    assert _digest(cluster) == _digest(node)


def test_without_the_item_marks_the_same_crash_would_count_twice(
    stores: dict[str, Settings],
) -> None:
    """The control: the marks are what keeps the redelivery from applying item rows again."""
    node, cluster = stores["node"], stores["cluster"]
    asyncio.run(_apply_all(node))
    _crash_after(cluster, 2)
    client = connect.sync_client(cluster)
    try:
        marks = list(client.scan_iter(match=f"{cluster.key_prefix}:i:*:marks", count=1000))
        assert marks
        for key in marks:
            client.delete(key)
    finally:
        client.close()
    asyncio.run(_apply_all(cluster, cuts=300))
    assert _digest(cluster) != _digest(node)


def test_two_owners_interleaved_apply_each_effect_once(stores: dict[str, Settings]) -> None:
    """A stalls after its session step; B takes the partition over and applies the batch;
    then A wakes up and runs its last two steps."""
    node, cluster = stores["node"], stores["cluster"]
    asyncio.run(_apply_all(node))

    async def run() -> None:
        store = RedisStore.connect(cluster)
        try:
            for n in range(0, 1000, BATCH):
                await store.apply_events(EVENTS[n : n + BATCH], positions=AT[n : n + BATCH])
        finally:
            await store.close()
        a, b = Steps(cluster, 1000, 1500), Steps(cluster, 1000, 1500)
        await a.first()
        for step in (b.first, b.second, b.third):
            await step()
        await a.second()
        await a.third()

    asyncio.run(run())
    asyncio.run(_apply_all(cluster))  # the rest; the interleaved batch is committed already
    assert _digest(cluster) == _digest(node)


def test_an_event_sent_again_at_a_new_offset_is_dropped(stores: dict[str, Settings]) -> None:
    cluster = stores["cluster"]
    asyncio.run(_apply_all(cluster))
    before = _digest(cluster)
    again = [Position("events", p.partition, p.offset + N) for p in AT[-200:]]

    async def resend() -> list[bool]:
        store = RedisStore.connect(cluster)
        try:
            return await store.apply_events(EVENTS[-200:], positions=again)
        finally:
            await store.close()

    assert sum(asyncio.run(resend())) == 0
    assert _digest(cluster) == before


def test_a_session_with_more_events_in_a_batch_than_it_remembers_is_applied_once(
    stores: dict[str, Settings],
) -> None:
    """A session remembers its last 50 event ids; one batch holds 120 of its events, and the
    try stops after the session step: the redelivery must not apply any of them again."""
    node, cluster = stores["node"], stores["cluster"]
    big = [Event(f"big/{n}", "view", "big", f"item-{n % 7:04d}", TS + n) for n in range(120)]
    at = [Position("events", 9, n) for n in range(120)]

    async def run(settings: Settings, crash: bool) -> None:
        store = RedisStore.connect(settings)
        try:
            if crash:
                batch = Steps(settings, 0, 0)
                batch.rows = [orjson.loads(r) for r in apply.rows(settings, big, at, True)]
                batch.at = at
                await batch.first()
                await batch.store.close()
            await store.apply_events(big, positions=at)
        finally:
            await store.close()

    asyncio.run(run(node, False))
    asyncio.run(run(cluster, True))
    assert _digest(cluster) == _digest(node)
