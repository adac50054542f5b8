"""Operating the store: its format check and upgrade, eviction policy, one item's view, clearing."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import ResponseError

from stream_reco.config import Settings
from stream_reco.decay import value_at
from stream_reco.errors import StoreFormatError
from stream_reco.events import CatalogItem
from stream_reco.storage import connect, layout
from stream_reco.storage.catalog import CatalogCache
from stream_reco.storage.codec import meta_json, pairs
from stream_reco.storage.keys import Keys

T = TypeVar("T")
# The store's one logger, wherever its code lives: log filters and readers know it by this name.
log = logging.getLogger("stream_reco.storage.redis_store")


class Operations:
    """Mixed into RedisStore (last, so its stubs never hide the real methods): what a worker
    checks at start and what tools (inspect, tests, evaluation) ask of the store."""

    client: connect.AsyncClient
    settings: Settings
    keys: Keys
    catalog: CatalogCache

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def _read_many(self, keys: list[str], args: list[Any]) -> list[list[bytes]]:
        raise NotImplementedError

    async def read_items(
        self, item_ids: Sequence[str], seen: str | None = None
    ) -> dict[str, CatalogItem]:
        raise NotImplementedError

    @property
    def catalog_log(self) -> str:
        raise NotImplementedError

    async def check_format(self, upgrade: bool = True) -> None:
        """Refuse a store whose decayed scores an older version wrote: linear sums from a
        landmark (its key says so), which log-space scores would silently mis-rank. Move the
        keys of an older layout to today's names (storage/layout.py) before anything reads
        them; without `upgrade` (a read-only tool), refuse such a store instead."""
        legacy = self.keys.legacy_global("landmark")
        if await self._retry("check_format", lambda: self.client.exists(legacy)):
            raise StoreFormatError(
                f"{legacy} exists: this store's decayed scores were written by a version "
                "before log-space decay and cannot be read as they are; start from a fresh "
                "store (a new STREAM_RECO_KEY_PREFIX, or delete the prefix's keys)"
            )
        if await self._retry("check_format", lambda: layout.outdated(self.client, self.keys)):
            if not upgrade:
                raise StoreFormatError(
                    f"the store under {self.keys.prefix!r} has an older version's key names; "
                    "start a worker of this version on it first, which moves them"
                )
            moved = await self._retry("upgrade", lambda: layout.upgrade(self.client, self.keys))
            log.warning("store layout upgraded: %d keys moved to their {g}-tagged names", moved)

    async def eviction_policy(self) -> str | None:
        """The server's `maxmemory-policy` (on a cluster, the first primary's that evicts, else
        their common one), None when it does not say (a managed Redis without CONFIG, a user
        not allowed it). Evicted offset marks would let a redelivered event apply twice, an
        evicted session or list would vanish unnoticed."""

        async def ask() -> list[str | None]:
            if isinstance(self.client, AsyncRedisCluster):
                await self.client.initialize()  # it learns the nodes on its first command
                nodes = self.client.get_primaries()
                got = [
                    await self.client.config_get("maxmemory-policy", target_nodes=node)
                    for node in nodes
                ]
            else:
                got = [await self.client.config_get("maxmemory-policy")]
            return [g.get("maxmemory-policy") for g in got]

        try:
            policies = await self._retry("eviction_policy", ask)
        except ResponseError:
            return None
        if any(p is None for p in policies):
            return None
        evicting = [str(p) for p in policies if str(p) != "noeviction"]
        return evicting[0] if evicting else str(policies[0])

    async def holds_anything(self) -> bool:
        """Whether anything was ever stored under this key prefix: one EXISTS per key that a
        worker's first event, catalogue record, rules message or model creates, and which
        never expires (one round trip, where a SCAN must walk the whole keyspace to find no
        key). `inspect` tells a wrong prefix from an unknown id with it."""
        g = self.keys.global_
        # "rules" and "model": runtime.RULES and runtime.MODEL, the published documents.
        marks = [g("applied"), g("clock"), self.catalog_log, g("rules"), g("model")]

        async def run() -> bool:
            pipe = self.client.pipeline(transaction=False)
            for key in marks:
                pipe.exists(key)
            return any(await pipe.execute())

        return await self._retry("holds_anything", run)

    async def inspect_item(self, item_id: str, n: int = 20) -> dict[str, object]:
        """An item's metadata, decayed popularity and top neighbours, as plain JSON data."""
        s = self.settings
        meta = (await self.read_items([item_id])).get(item_id)
        [row] = await self._read_many([self.keys.item(item_id, "co")], ["zrev", n])
        neighbours = pairs(row)  # stored log-sums: read as values at the event clock below
        pop = await self.client.zscore(self.keys.global_("pop"), item_id)
        clock = await self.client.get(self.keys.global_("clock"))
        now = int(clock) if clock else None

        def decayed(stored: float, half_life: float) -> float:
            return 0.0 if now is None else round(value_at(stored, now, half_life), 6)

        return {
            "item_id": item_id,
            "known": meta is not None,
            "meta": meta_json(meta) if meta else None,
            "event_clock_ts": now,
            "popularity": decayed(pop, s.pop_half_life_s) if pop is not None else 0.0,
            "neighbours": [
                {"item_id": i, "score": decayed(v, s.cooc_half_life_s)} for i, v in neighbours
            ],
        }

    async def clear(self) -> int:
        """Delete every key under this store's prefix (tests, evaluation); returns the count."""
        deleted = 0
        async for batch in _chunks(
            self.client.scan_iter(match=self.keys.all_pattern(), count=1000)
        ):
            deleted += await self.client.unlink(*batch)
        self.catalog.reset()
        return deleted


async def _chunks(it: AsyncIterator[bytes], size: int = 500) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for key in it:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
