"""Catalogue metadata in Redis with a log of changed items, and each worker's exact cache of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis

from stream_reco.candidates import newest
from stream_reco.errors import StoreError
from stream_reco.events import CatalogItem, Tombstone
from stream_reco.storage import connect
from stream_reco.storage.codec import hash_fields, meta_fields, parse_meta
from stream_reco.storage.keys import Keys

T = TypeVar("T")
LOG_MAXLEN = 100_000  # changes kept; a reader further behind forgets its whole cache
CATCH_UP = 1000  # changes read at once; more pending: forgetting everything is cheaper

START = "0-0"  # the log position before any change
# Entries kept (an unknown item is an entry too); past it the older half goes. Bounded state
# for any catalogue size, while a shop's hot items stay cached.
LIMIT = 200_000


def position(stream_id: str) -> tuple[int, int]:
    """A stream id as a comparable pair ('' or malformed: before every change)."""
    ms, _, seq = stream_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


class CatalogCache:
    """Item metadata (None: the item has none) as of `at`, the newest catalogue change applied.

    Writers log every changed item id (`apply_catalog` below); a reader that
    has applied the log up to the position a request saw serves that request from memory, so
    metadata costs no round trip unless the catalogue changed."""

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self.at = START
        self.added = 0  # how many changes had ever been logged at `at`
        self._items: dict[str, CatalogItem | None] = {}
        self._version = 0  # bumped by every invalidation: a fill read before one is dropped

    def current(self, seen: str) -> bool:
        """Whether the cache is at least as new as the log position `seen`."""
        return position(self.at) >= position(seen)

    def lookup(self, item_ids: Iterable[str]) -> tuple[dict[str, CatalogItem], list[str]]:
        """(the known items' metadata, the ids not cached)."""
        found: dict[str, CatalogItem] = {}
        missing: list[str] = []
        for item in item_ids:
            if item not in self._items:
                missing.append(item)
            elif (meta := self._items[item]) is not None:
                found[item] = meta
        return found, missing

    def version(self) -> int:
        return self._version

    def fill(self, read: dict[str, CatalogItem], asked: Sequence[str], version: int) -> None:
        """Cache what a read returned for `asked`, unless the log moved on while it ran: the
        read may predate a change already applied, and caching it would undo that change."""
        if version != self._version:
            return
        if len(self._items) + len(asked) > self.limit:
            keep = list(self._items.items())[len(self._items) // 2 :]
            self._items = dict(keep)
        for item in asked:
            self._items[item] = read.get(item)

    def advance(self, changed: Iterable[str], to: str, added: int) -> None:
        """Apply log entries up to `to` (the `added`th change ever logged): forget the items."""
        for item in changed:
            self._items.pop(item, None)
        self._version += 1
        if position(to) > position(self.at):
            self.at, self.added = to, added

    def reset(self, to: str = START, added: int = 0) -> None:
        """Forget everything (the log was trimmed past us, or cleared)."""
        self._items.clear()
        self._version += 1
        self.at, self.added = to, added


class CatalogState:
    """Mixed into RedisStore: catalogue writes that log each changed item, and metadata reads
    served from the worker's cache whenever it is as new as the position the request saw."""

    client: aioredis.Redis
    transactions: connect.Transactions
    cluster: bool
    keys: Keys
    catalog: CatalogCache
    shelf: newest.Shelf

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    def _multi_read_hashes(self, keys: list[str]) -> Awaitable[list[list[bytes]]]:
        raise NotImplementedError

    @property
    def catalog_log(self) -> str:
        return self.keys.global_("catalog:log")

    async def apply_catalog(self, records: Sequence[CatalogItem | Tombstone]) -> None:
        """Upsert or remove catalogue items; a record replaces the item's whole metadata."""
        if not records:
            return

        async def run() -> None:
            # On one node one MULTI: a reader never sees the log entry without the change, or
            # the reverse. A cluster cannot span slots in a MULTI: the items' own keys are
            # written first, then the shop-wide part (log, popularity, newest) in one {g}
            # MULTI, so a reader that sees the log entry finds the change; a retry rewrites
            # both (an upsert or a removal is the same the second time).
            items = self.client.pipeline(transaction=False) if self.cluster else None
            shop = await self.transactions.pipeline(self.catalog_log)
            for r in records:
                own = items if items is not None else shop
                meta = self.keys.item(r.item_id, "meta")
                own.delete(meta)
                if isinstance(r, Tombstone):
                    shop.zrem(self.keys.global_("pop"), r.item_id)
                    own.delete(*(self.keys.item(r.item_id, n) for n in ("co", "next", "sessions")))
                else:
                    own.hset(meta, mapping=meta_fields(r))
                shop.xadd(self.catalog_log, {"i": r.item_id}, maxlen=LOG_MAXLEN, approximate=True)
            newest.write(shop, self.keys, records)  # the cold-start list agrees with the meta
            if items is not None:
                await items.execute()
            await shop.execute()

        await self._retry("apply_catalog", run)

    async def read_newest(self, n: int) -> list[str]:
        """The n newest in-stock catalogue items, newest first (candidates/newest.py)."""
        return await self._retry("read_newest", lambda: newest.read(self.client, self.keys, n))

    async def read_items(
        self, item_ids: Sequence[str], seen: str | None = None
    ) -> dict[str, CatalogItem]:
        """Catalogue metadata of the known items among `item_ids`. With `seen`, the catalogue
        log position a request read (gather.lua): as new as that, from memory where it can."""
        if not item_ids:
            return {}
        if seen is None:
            return await self._read_meta(item_ids)
        cache = self.catalog
        # No log ('') while we hold a position: it was deleted, and what we hold may be stale.
        if not cache.current(seen) or (not seen and cache.at != START):
            await self.sync_catalog()
        found, missing = cache.lookup(item_ids)
        if missing:
            version = cache.version()
            read = await self._read_meta(missing)
            cache.fill(read, missing, version)
            found.update(read)
        return found

    async def sync_catalog(self) -> None:
        """Apply the catalogue log's new entries to the cache (workers also call it on a timer,
        so requests rarely have to)."""
        cache, key = self.catalog, self.catalog_log
        base = cache.added  # another sync may move the cache while this one waits

        async def run() -> list[object]:
            pipe = await self.transactions.pipeline(key)  # the count and the entries agree
            pipe.xinfo_stream(key)
            pipe.xrange(key, f"({cache.at}", "+", count=CATCH_UP)
            return await pipe.execute(raise_on_error=False)  # type: ignore[no-any-return]

        info, pending = await self._retry("sync_catalog", run)
        if isinstance(info, Exception):  # no log yet (or it was deleted): nothing changed since
            if "no such key" not in str(info):
                raise StoreError(f"sync_catalog: {info}")
            if cache.at != START:
                cache.reset()
            return
        if not isinstance(info, dict) or not isinstance(pending, list):
            raise StoreError(f"sync_catalog: unexpected replies {info!r}, {pending!r}")
        last, added = info["last-generated-id"].decode(), int(info["entries-added"])
        # Every change since ours must still be in the log: trimmed past us, or more than a
        # catch-up's worth, and forgetting everything is the exact (and cheaper) answer.
        if added - base != len(pending):
            cache.reset(last, added)
        else:
            cache.advance((fields[b"i"].decode() for _, fields in pending), last, added)

    async def _read_meta(self, item_ids: Sequence[str]) -> dict[str, CatalogItem]:
        async def run() -> dict[str, CatalogItem]:
            keys = [self.keys.item(item, "meta") for item in item_ids]
            rows = await self._multi_read_hashes(keys)
            return {
                i: parse_meta(i, hash_fields(row))
                for i, row in zip(item_ids, rows, strict=True)
                if row
            }

        return await self._retry("read_items", run)
