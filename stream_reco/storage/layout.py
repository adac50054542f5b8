"""Keys an older version named differently: found at start and moved to today's names."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from stream_reco.errors import StoreFormatError
from stream_reco.storage.keys import Keys

# Shop-wide keys a store of any age holds once it has applied anything: one EXISTS round trip
# tells an old layout from a new or empty store without scanning the keyspace.
TELLTALES = ("applied", "clock", "offsets", "pop", "catalog:log", "catalog:seq", "rules", "model")
SCAN_COUNT = 1000


async def outdated(client: Redis, keys: Keys) -> bool:
    """Whether this store still holds shop-wide keys under their names before the {g} tag."""
    return bool(await client.exists(*(keys.legacy_global(name) for name in TELLTALES)))


# Every shop-wide name an older version wrote (and the families of them): only these move,
# so a key that merely shares the pattern (another deployment's prefix) is never touched.
NAMES = (*TELLTALES, "catalog:newest", "examples")
FAMILIES = ("pop:cat:", "lease:")


async def upgrade(client: Redis, keys: Keys) -> int:
    """Move an older layout to today's on a single Redis node (no older version ran on a
    cluster): each shop-wide key to its {g}-tagged name, each item's first-seen stamp into the
    one stamps hash. The telltales move last, so a worker starting meanwhile still finds the
    store outdated and helps instead of writing beside it. Safe to run again and from several
    workers at once: a key another worker moved first is skipped. A key whose new name is
    taken already is refused (StoreFormatError): two layouts were written side by side.
    Returns how many keys were moved."""
    legacy = keys.legacy_global("")
    found: list[str] = []
    async for raw in client.scan_iter(match=f"{legacy}*", count=SCAN_COUNT):
        name = raw.decode()[len(legacy) :]
        # Today's keys all carry a hash tag; so do a nested prefix's (another deployment).
        if "{" not in name and (name in NAMES or name.startswith(FAMILIES)):
            found.append(name)
    moved = await _stamps(client, keys)
    found.sort(key=lambda name: name in TELLTALES)  # the telltales last
    for name in found:
        moved += await _move(client, legacy + name, keys.global_(name))
    return moved


async def _move(client: Redis, old: str, new: str) -> int:
    try:
        if await client.renamenx(old, new):
            return 1
    except ResponseError:
        return 0  # gone: another worker moved it
    if await client.exists(old):
        raise StoreFormatError(
            f"{old} and {new} both exist: an older and a newer version wrote this store side "
            "by side; stop every worker of the older version, then keep one of the two keys"
        )
    return 0  # another worker moved it between the two calls


async def _stamps(client: Redis, keys: Keys) -> int:
    """Each item's first-seen stamp key into the stamps hash (a stamp already there wins)."""
    stamps = keys.global_("catalog:first")
    head, tail = keys.item_pattern("first")
    moved = 0
    async for raw in client.scan_iter(match=f"{head}*{tail}", count=SCAN_COUNT):
        key = raw.decode()
        stamp = await client.get(key)
        if stamp is not None:
            await client.hsetnx(stamps, key[len(head) : -len(tail)], stamp)
            moved += await client.delete(key)
    return moved
