"""Catalogue metadata from a worker's cache is exactly as new as what a request saw."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator

import pytest

from stream_reco import pipeline
from stream_reco.config import Settings
from stream_reco.events import CatalogItem, Event, Tombstone
from stream_reco.storage import catalog
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid

TS = 1_700_000_000_000


@pytest.fixture
def pair(settings: Settings) -> Iterator[tuple[RedisStore, RedisStore, asyncio.AbstractEventLoop]]:
    """Two stores (two workers' caches) on one key prefix."""
    loop = asyncio.new_event_loop()
    s = dataclasses.replace(settings, key_prefix=uid("catalog"), require_catalog=True)
    a, b = RedisStore.connect(s), RedisStore.connect(s)
    yield a, b, loop
    loop.run_until_complete(a.clear())
    for st in (a, b):
        loop.run_until_complete(st.close())


def test_a_change_by_another_worker_is_seen_by_the_next_request(
    pair: tuple[RedisStore, RedisStore, asyncio.AbstractEventLoop],
) -> None:
    writer, reader, loop = pair
    s = reader.settings
    loop.run_until_complete(writer.apply_catalog([CatalogItem(x, x.lower()) for x in "ABC"]))
    history = [Event(f"h{n}", "view", f"h{n // 3}", "ABC"[n % 3], TS + n) for n in range(9)]
    loop.run_until_complete(writer.apply_events(history))
    loop.run_until_complete(writer.apply_events([Event("m", "view", "me", "Z", TS + 99)]))
    # The session looks at Z (unknown to the catalogue): A, B and C are all recommendable.

    def picks() -> set[str]:
        answer = loop.run_until_complete(pipeline.recommend(reader, s, "me", 5))
        return {p.item_id for p in answer.picks}

    assert picks() == {"A", "B", "C"}  # now cached by the reader
    calls = _count_meta_reads(reader)
    assert picks() == {"A", "B", "C"} and calls[0] == 0  # served from memory
    loop.run_until_complete(writer.apply_catalog([CatalogItem("B", "b", in_stock=False)]))
    assert picks() == {"A", "C"}  # sold out at once, no refresh in between
    loop.run_until_complete(writer.apply_catalog([Tombstone("C")]))
    assert picks() == {"A"}


def test_a_cache_left_behind_a_trimmed_log_starts_over(
    pair: tuple[RedisStore, RedisStore, asyncio.AbstractEventLoop],
) -> None:
    writer, reader, loop = pair
    _cache_an_old_title(writer, reader, loop)
    # Exact trimming after each change, so the log surely loses changes the reader never saw.
    for item, title in [("X0", "x"), ("X1", "x"), ("A", "new"), ("Y", "y")]:
        loop.run_until_complete(writer.apply_catalog([CatalogItem(item, title)]))
        trim = writer.client.xtrim(writer.catalog_log, maxlen=1, approximate=False)
        loop.run_until_complete(trim)
    loop.run_until_complete(reader.sync_catalog())
    assert loop.run_until_complete(reader.read_items(["A"], reader.catalog.at))["A"].title == "new"


def test_catch_up_more_than_a_batch_behind(
    pair: tuple[RedisStore, RedisStore, asyncio.AbstractEventLoop],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer, reader, loop = pair
    _cache_an_old_title(writer, reader, loop)
    monkeypatch.setattr(catalog, "CATCH_UP", 2)
    changes = [CatalogItem(f"X{n}", "x") for n in range(5)] + [CatalogItem("A", "new")]
    loop.run_until_complete(writer.apply_catalog(changes))
    loop.run_until_complete(reader.sync_catalog())
    assert loop.run_until_complete(reader.read_items(["A"], reader.catalog.at))["A"].title == "new"


def _cache_an_old_title(
    writer: RedisStore, reader: RedisStore, loop: asyncio.AbstractEventLoop
) -> None:
    """Item A titled "old", cached by the reader."""
    loop.run_until_complete(writer.apply_catalog([CatalogItem("A", "old")]))
    loop.run_until_complete(reader.sync_catalog())
    assert loop.run_until_complete(reader.read_items(["A"], reader.catalog.at))["A"].title == "old"


def _count_meta_reads(store: RedisStore) -> list[int]:
    calls = [0]
    read = store._read_meta

    async def counted(ids):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return await read(ids)

    store._read_meta = counted  # type: ignore[method-assign]
    return calls


def test_a_deleted_log_makes_the_cache_start_over(
    pair: tuple[RedisStore, RedisStore, asyncio.AbstractEventLoop],
) -> None:
    writer, reader, loop = pair
    _cache_an_old_title(writer, reader, loop)
    loop.run_until_complete(writer.clear())  # metadata and its log gone
    assert loop.run_until_complete(reader.read_items(["A"], "")) == {}
