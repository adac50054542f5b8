"""A store an older version wrote (shop-wide keys without the {g} tag, a first-seen stamp key
per item) is moved to today's names at start, exactly, even by two workers at once."""

from __future__ import annotations

import asyncio
import itertools

import orjson
import pytest
import redis

from stream_reco.config import Settings
from stream_reco.errors import StoreFormatError
from stream_reco.events import CatalogItem, Event, Tombstone, decode_catalog, decode_event
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage.apply import Position
from stream_reco.storage.redis_store import RedisStore

TS = 1_750_000_000_000


def _catalog() -> list[CatalogItem | Tombstone]:
    records = [
        decode_catalog(str(r["item_id"]).encode(), orjson.dumps(r)) for r in make_catalog(80)
    ]
    return [r for r in records if isinstance(r, CatalogItem | Tombstone)]


def _events(n: int) -> list[Event]:
    shop = Storefront(make_catalog(80), seed=5, run_id="layout", start_ms=TS)
    decoded = (decode_event(orjson.dumps(e)) for e in shop.stream(concurrency=30))
    return [e for e in itertools.islice(decoded, n) if isinstance(e, Event)]


async def _fill(store: RedisStore) -> None:
    await store.apply_catalog(_catalog())
    events = _events(1500)
    at = [Position("events", 0, n) for n in range(len(events))]
    for n in range(0, len(events), 500):
        await store.apply_events(events[n : n + 500], positions=at[n : n + 500])
    await store.publish("rules", b"{}")


def _dump(client: redis.Redis, prefix: str) -> dict[bytes, object]:
    """Every key's content, byte for byte; hashes as their fields (a hash rebuilt in another
    order is encoded in another order)."""
    out: dict[bytes, object] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        is_hash = client.type(key) == b"hash"
        out[key] = client.hgetall(key) if is_hash else client.dump(key)
    return out


def _as_an_older_version_wrote(client: redis.Redis, prefix: str) -> int:
    """Undo the {g} tag and fold the stamps hash back into one key per item."""
    tagged = f"{prefix}:g:{{g}}:"
    stamps = f"{tagged}catalog:first"
    for item, stamp in client.hgetall(stamps).items():
        client.set(f"{prefix}:i:{{{item.decode()}}}:first", stamp)
    client.delete(stamps)
    moved = 0
    for key in list(client.scan_iter(match=f"{tagged}*", count=1000)):
        client.rename(key, f"{prefix}:g:{key.decode()[len(tagged) :]}")
        moved += 1
    return moved


def test_an_older_layout_is_moved_to_todays_names_by_two_workers_at_once(own: Settings) -> None:
    async def fill() -> None:
        store = RedisStore.connect(own)
        try:
            await store.check_format()  # an empty store: nothing to move
            await _fill(store)
        finally:
            await store.close()

    asyncio.run(fill())
    client = redis.Redis.from_url(own.redis_url)
    try:
        today = _dump(client, own.key_prefix)
        assert sum(b":g:{g}:" in k for k in today) >= 8  # pop, clock, offsets, catalogue...
        assert _as_an_older_version_wrote(client, own.key_prefix) >= 8
        assert _dump(client, own.key_prefix) != today

        async def start_two() -> None:
            stores = [RedisStore.connect(own) for _ in range(2)]
            try:
                await asyncio.gather(*(s.check_format() for s in stores))
                assert await stores[0].applied_count() == 1500
            finally:
                for s in stores:
                    await s.close()

        asyncio.run(start_two())
        assert _dump(client, own.key_prefix) == today  # every key back, byte for byte
    finally:
        for key in client.scan_iter(match=f"{own.key_prefix}:*", count=1000):
            client.delete(key)
        client.close()


def test_only_an_older_versions_names_move_and_a_clash_is_refused(own: Settings) -> None:
    prefix = own.key_prefix
    client = redis.Redis.from_url(own.redis_url)
    foreign = [f"{prefix}:g:lease:s:{{x}}:recent", f"{prefix}:g:somebody-elses"]
    try:
        for key in foreign:  # a nested prefix's keys, a name no version wrote
            client.set(key, 1)
        client.set(f"{prefix}:g:applied", 5)  # an older layout...
        client.set(f"{prefix}:g:lease:learner", "w1")

        async def start() -> None:
            store = RedisStore.connect(own)
            try:
                await store.check_format()
            finally:
                await store.close()

        asyncio.run(start())
        assert all(client.exists(key) for key in foreign)
        assert client.get(f"{prefix}:g:{{g}}:applied") == b"5"
        assert client.get(f"{prefix}:g:{{g}}:lease:learner") == b"w1"
        client.set(f"{prefix}:g:clock", 7)  # ...written again beside the new one
        client.set(f"{prefix}:g:{{g}}:clock", 8)
        with pytest.raises(StoreFormatError, match="both exist"):
            asyncio.run(start())
    finally:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()
