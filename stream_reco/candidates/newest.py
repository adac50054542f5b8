"""Cold-start candidates: the newest in-stock catalogue items, taken round-robin over categories."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import orjson
from redis.asyncio.client import Pipeline, Redis

from stream_reco.candidates import Candidate
from stream_reco.events import CatalogItem, Tombstone
from stream_reco.storage.keys import Keys

FEATURE = "new"
# What explain.py says of a pick only this source found. Honest about why: the shop has no
# shopping data on the item, so the catalogue is all there is to go by.
REASON = "new in the catalogue (no shopping data yet)"
LIMIT = 1000  # items kept in the list; the oldest go first

# Run inside apply_catalog's MULTI, so the list always agrees with the metadata and the log.
# Each item gets a first-seen stamp (a counter: catalogue records carry no time) the first
# time it appears; updates keep it, so re-publishing an item never makes it new again. The
# stamp outlives sold-out spells and trimming (an item that comes back returns to its place);
# only a removal forgets it. The list holds in-stock items only, so a read needs no filter.
# The stamps are one hash beside the list (all shop-wide, one slot on a cluster): one field
# per catalogued item, so bounded by the catalogue.
# ARGV 1: JSON {newest, seq, first (the stamps hash), limit}
# ARGV 2: JSON [[item_id, state], ...] in log order; state 1 in stock, 0 sold out, -1 removed.
WRITE = """
local cfg = cjson.decode(ARGV[1])
for _, row in ipairs(cjson.decode(ARGV[2])) do
  local item, state = row[1], row[2]
  if state < 0 then
    redis.call('HDEL', cfg.first, item)
    redis.call('ZREM', cfg.newest, item)
  else
    local stamp = redis.call('HGET', cfg.first, item)
    if not stamp then
      stamp = redis.call('INCR', cfg.seq)
      redis.call('HSET', cfg.first, item, stamp)
    end
    if state == 1 then
      redis.call('ZADD', cfg.newest, stamp, item)
    else
      redis.call('ZREM', cfg.newest, item)
    end
  end
end
redis.call('ZREMRANGEBYRANK', cfg.newest, 0, -cfg.limit - 1)
return 0
"""


class Shelf:
    """The whole list in cold-start order, each item with its metadata, as of one catalogue
    position. Read again only once the catalogue has changed: a small shop whose behaviour
    never fills a request pays no extra round trip per request for it."""

    def __init__(self) -> None:
        self.at: str | None = None
        self.rows: list[tuple[str, CatalogItem]] = []


class Reader(Protocol):
    """What `gather` needs of the store (storage/catalog.py CatalogState provides it)."""

    shelf: Shelf

    async def read_newest(self, n: int) -> list[str]: ...

    async def read_items(
        self, item_ids: Sequence[str], seen: str | None = None
    ) -> dict[str, CatalogItem]: ...


def list_key(keys: Keys) -> str:
    return keys.global_("catalog:newest")


def write(pipe: Pipeline, keys: Keys, records: Sequence[CatalogItem | Tombstone]) -> None:
    """Queue the list's update for these catalogue records on `pipe` (apply_catalog's MULTI).
    EVAL rather than a registered script: a MULTI cannot recover from NOSCRIPT, and catalogue
    batches are rare enough that sending the text costs nothing that matters."""
    if not records:
        return
    config = {
        "newest": list_key(keys),
        "seq": keys.global_("catalog:seq"),
        "first": keys.global_("catalog:first"),
        "limit": LIMIT,
    }
    rows = [[r.item_id, _state(r)] for r in records]
    # Its keys named too (all shop-wide, one slot): a cluster routes the call by them.
    keys = [config["newest"], config["seq"], config["first"]]
    pipe.eval(WRITE, len(keys), *keys, orjson.dumps(config), orjson.dumps(rows))


async def read(client: Redis, keys: Keys, n: int) -> list[str]:
    """The n newest in-stock items, newest first."""
    rows = await client.zrevrange(list_key(keys), 0, max(n, 1) - 1)
    return [r.decode() for r in rows]


def order(newest_first: Sequence[str], meta: Mapping[str, CatalogItem]) -> list[str]:
    """Round-robin over categories: each category's newest item (categories in the order of
    their newest item), then each one's second newest, and so on. Items without metadata or
    out of stock are left out; items without a category share one turn."""
    shelves: dict[str, list[str]] = {}
    for item in newest_first:
        info = meta.get(item)
        if info is not None and info.in_stock:
            shelves.setdefault(info.category, []).append(item)
    rounds = itertools.zip_longest(*shelves.values())
    return [item for turn in rounds for item in turn if item is not None]


def add(ordered: Sequence[str], into: dict[str, Candidate]) -> None:
    """Add the ordered items as the `new` feature: 1 for the first, falling evenly."""
    n = len(ordered)
    for rank, item_id in enumerate(ordered):
        cand = into.get(item_id)
        if cand is None:
            cand = into[item_id] = Candidate(item_id)
        cand.features[FEATURE] = (n - rank) / n


def short(popular: Sequence[tuple[str, float]], wanted: int) -> bool:
    """Whether behaviour alone cannot fill the request: popularity came back short, so every
    item with any popularity is already a candidate and the catalogue may fill the rest."""
    return len(popular) < wanted


async def gather(
    store: Reader,
    seen: str,
    n: int,
    into: dict[str, Candidate],
    keep: Callable[[str, CatalogItem], bool] = lambda _i, _m: True,
) -> None:
    """Add up to n of the newest catalogue items that `keep` allows (the request's exclusions,
    the policy's categories and brands: applied before the cut, so an excluded category that
    holds every new item cannot empty the answer), diverse across categories. The whole list
    is ordered once per catalogue position (`seen`, what the request read)."""
    shelf = store.shelf
    if shelf.at != seen:
        ids = await store.read_newest(LIMIT)
        meta = await store.read_items(ids, seen)
        shelf.rows = [(i, meta[i]) for i in order(ids, meta)]
        shelf.at = seen
    add([i for i, info in shelf.rows if keep(i, info)][:n], into)


def _state(r: CatalogItem | Tombstone) -> int:
    if isinstance(r, Tombstone):
        return -1
    return 1 if r.in_stock else 0
