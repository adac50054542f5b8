"""On a Redis Cluster a request reads in pipelined rounds instead of gather.lua's one call, and
the catalogue writes the items' slots before the shop-wide one: the same reads and the same
answers as on one node, after the same events and catalogue."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterator

import orjson
import pytest

from stream_reco import pipeline
from stream_reco.config import Settings
from stream_reco.events import (
    CatalogItem,
    Event,
    Tombstone,
    decode_catalog,
    decode_event,
)
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import clear_store, uid

TS = 1_750_000_000_000
CATALOG = make_catalog(150, seed=8)


def _events(n: int) -> list[Event]:
    shop = Storefront(CATALOG, seed=9, run_id="reads", start_ms=TS)
    decoded = (decode_event(orjson.dumps(e)) for e in shop.stream(concurrency=60))
    return [e for e in itertools.islice(decoded, n) if isinstance(e, Event)]


def _catalog() -> list[CatalogItem | Tombstone]:
    records = [decode_catalog(str(r["item_id"]).encode(), orjson.dumps(r)) for r in CATALOG]
    kept = [r for r in records if isinstance(r, CatalogItem | Tombstone)]
    return [*kept, Tombstone(kept[3].item_id)]  # one removal too


EVENTS = _events(4000)
SESSIONS = list(dict.fromkeys(e.session_id for e in EVENTS))[-150:]


@pytest.fixture
def both(cluster: Settings, settings: Settings) -> Iterator[list[Settings]]:
    prefix = uid(f"{settings.key_prefix}-reads")
    mine = [
        dataclasses.replace(s, key_prefix=prefix, require_catalog=False)
        for s in (settings, cluster)
    ]
    yield mine
    for s in mine:
        clear_store(s)


async def _fill_and_read(settings: Settings) -> dict[str, object]:
    store = RedisStore.connect(settings)
    try:
        await store.apply_catalog(_catalog())
        for n in range(0, len(EVENTS), 500):
            await store.apply_events(EVENTS[n : n + 500])
        await store.sync_catalog()
        gathered = [await store.gather(s, 60, 5, 3, True, True) for s in SESSIONS]
        items = sorted({e.item_id for e in EVENTS})[:40]
        answers = [
            await pipeline.recommend(store, settings, s, 10, placement=None) for s in SESSIONS
        ]
        assert all(g.catalog_at for g in gathered)  # a log position: its id is the time
        return {
            "gathered": [dataclasses.replace(g, catalog_at="") for g in gathered],
            "neighbours": await store.read_neighbours(items, 20),
            "follow-ups": await store.read_neighbours(items, 20, "next"),
            "meta": await store.read_items(items),
            "newest": await store.read_newest(50),
            "popular": await store.read_popular(30),
            "answers": [[(p.item_id, p.score, p.reason) for p in a.picks] for a in answers],
        }
    finally:
        await store.close()


def test_reads_and_answers_on_a_cluster_are_those_of_one_node(both: list[Settings]) -> None:
    node, cluster = (asyncio.run(_fill_and_read(s)) for s in both)
    assert sum(bool(g.votes) for g in node["gathered"]) > 50  # session-kNN really ran
    assert any(g.trending for g in node["gathered"])  # and trending per category
    for name in node:
        assert cluster[name] == node[name], name
