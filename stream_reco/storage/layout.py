"""Keys an older version named differently: found at start and moved to today's names."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from stream_reco.storage.keys import Keys

# Shop-wide keys a store of any age holds once it has applied anything: one EXISTS round trip
# tells an old layout from a new or empty store without scanning the keyspace.
TELLTALES = ("applied", "clock", "offsets", "pop", "catalog:log", "catalog:seq", "rules", "model")
SCAN_COUNT = 1000


async def outdated(client: Redis, keys: Keys) -> bool:
    """Whether this store still holds shop-wide keys under their names before the {g} tag."""
    return bool(await client.exists(*(keys.legacy_global(name) for name in TELLTALES)))


async def upgrade(client: Redis, keys: Keys) -> int:
    """Move an older layout to today's on a single Redis node (no older version ran on a
    cluster): each shop-wide key to its {g}-tagged name, each item's first-seen stamp into the
    one stamps hash. Safe to run again and from several workers at once: a key another worker
    moved first is skipped. Returns how many keys were moved."""
    legacy = keys.legacy_global("")
    moved = 0
    async for raw in client.scan_iter(match=f"{legacy}*", count=SCAN_COUNT):
        key = raw.decode()
        name = key[len(legacy) :]
        if name.startswith("{"):  # tagged already ({g}, {vectors})
            continue
        try:
            moved += bool(await client.renamenx(key, keys.global_(name)))
        except ResponseError:
            continue  # gone: another worker moved it
    stamps = keys.global_("catalog:first")
    head, tail = keys.item_pattern("first")
    async for raw in client.scan_iter(match=f"{head}*{tail}", count=SCAN_COUNT):
        key = raw.decode()
        stamp = await client.get(key)
        if stamp is not None:
            await client.hsetnx(stamps, key[len(head) : -len(tail)], stamp)
            moved += await client.delete(key)
    return moved
