"""Cold start on the real stack: a shop with a catalogue and no events gets answers from it."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stream_reco import pipeline
from stream_reco.candidates import newest
from stream_reco.config import Settings
from stream_reco.events import CatalogItem, Event, Tombstone
from stream_reco.kafka_io import ensure_topics
from stream_reco.ranking import policy
from stream_reco.runtime import Runtime
from stream_reco.storage.redis_store import RedisStore
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import Kafka, uid, wait_item, wait_session

TS = 1_750_000_000_000
Loop = asyncio.AbstractEventLoop


@pytest.fixture
def store(settings: Settings) -> Iterator[tuple[RedisStore, Loop]]:
    loop = asyncio.new_event_loop()
    s = dataclasses.replace(settings, key_prefix=uid("cold"), require_catalog=True)
    st = RedisStore.connect(s)
    yield st, loop
    loop.run_until_complete(st.clear())
    loop.run_until_complete(st.close())
    loop.close()


def items(*specs: str, in_stock: bool = True) -> list[CatalogItem]:
    """Items from `id:category` specs."""
    return [
        CatalogItem(i, f"title {i}", category=c, in_stock=in_stock)
        for i, _, c in (s.partition(":") for s in specs)
    ]


def test_the_list_keeps_first_seen_order_through_updates_stock_and_removal(
    store: tuple[RedisStore, Loop],
) -> None:
    st, loop = store

    def run(records: list[CatalogItem | Tombstone]) -> list[str]:
        loop.run_until_complete(st.apply_catalog(records))
        return loop.run_until_complete(st.read_newest(10))

    assert run([*items("A", "B", "C")]) == ["C", "B", "A"]
    assert run([*items("D")]) == ["D", "C", "B", "A"]
    # An update (a new title, a new category) is not a new item.
    assert run([CatalogItem("A", "renamed", category="other")]) == ["D", "C", "B", "A"]
    assert run(items("A", in_stock=False)) == ["D", "C", "B"]
    assert run(items("A")) == ["D", "C", "B", "A"]  # restocked: back in its old place
    assert run([Tombstone("B")]) == ["D", "C", "A"]
    assert run(items("B")) == ["B", "D", "C", "A"]  # removed, then published anew: it is new


def test_the_list_is_bounded_and_a_trimmed_item_stays_old(
    store: tuple[RedisStore, Loop],
) -> None:
    st, loop = store
    n = newest.LIMIT + 5
    loop.run_until_complete(st.apply_catalog(items(*(f"i{x:05d}" for x in range(n)))))
    listed = loop.run_until_complete(st.read_newest(n))
    assert len(listed) == newest.LIMIT
    assert listed[0] == f"i{n - 1:05d}" and listed[-1] == "i00005"
    # Re-published, the oldest item keeps its first-seen place: still past the bound.
    loop.run_until_complete(st.apply_catalog(items("i00000")))
    again = loop.run_until_complete(st.read_newest(n))
    assert again == listed
    size = loop.run_until_complete(st.client.zcard(newest.list_key(st.keys)))
    assert size == newest.LIMIT


def test_a_catalogue_alone_answers_newest_first_across_categories(
    store: tuple[RedisStore, Loop],
) -> None:
    st, loop = store
    s = st.settings
    catalogue = items("m1:mugs", "m2:mugs", "m3:mugs", "t1:tea", "t2:tea", "p1:pans")
    loop.run_until_complete(st.apply_catalog([*catalogue, *items("sold:mugs", in_stock=False)]))
    answer = loop.run_until_complete(pipeline.recommend(st, s, uid("s"), 4))
    assert [p.item_id for p in answer.picks] == ["p1", "t2", "m3", "t1"]
    assert {p.reason for p in answer.picks} == {newest.REASON}
    assert all(p.features.get(newest.FEATURE, 0) > 0 for p in answer.picks)
    # Scores never rise down the list (the answer's order is the ranker's).
    scores = [p.score for p in answer.picks]
    assert scores == sorted(scores, reverse=True)


def test_behaviour_comes_first_and_the_catalogue_fills_the_rest(
    store: tuple[RedisStore, Loop],
) -> None:
    st, loop = store
    s = st.settings
    catalogue = items("old1:mugs", "old2:tea", "n1:mugs", "n2:tea", "n3:pans")
    loop.run_until_complete(st.apply_catalog(catalogue))
    # Older sessions shopped the two oldest items together.
    history = [
        Event(f"h{n}-{i}", "view", f"h{n}", item, TS + 10 * n + i)
        for n in range(3)
        for i, item in enumerate(("old1", "old2"))
    ]
    loop.run_until_complete(st.apply_events(history))

    fresh = loop.run_until_complete(pipeline.recommend(st, s, uid("s"), 5))
    assert {p.item_id for p in fresh.picks[:2]} == {"old1", "old2"}
    assert [p.reason for p in fresh.picks[:2]] == ["popular", "popular"]
    assert [p.item_id for p in fresh.picks[2:]] == ["n3", "n2", "n1"]
    assert {p.reason for p in fresh.picks[2:]} == {newest.REASON}

    me = uid("s")
    loop.run_until_complete(st.apply_events([Event("m", "view", me, "old1", TS + 99)]))
    # The viewed item excluded by name, whatever the placement's default for it.
    mine = loop.run_until_complete(pipeline.recommend(st, s, me, 3, ["old1"]))
    assert mine.picks[0].item_id == "old2"
    assert mine.picks[0].reason.startswith("often chosen")
    assert [p.reason for p in mine.picks[1:]] == [newest.REASON] * 2


def test_enough_behaviour_costs_no_catalogue_read(store: tuple[RedisStore, Loop]) -> None:
    st, loop = store
    s = st.settings
    k = 3
    wanted = k + pipeline.POPULAR_EXTRA
    shop = items(*(f"p{x:03d}:c{x % 4}" for x in range(wanted)))
    loop.run_until_complete(st.apply_catalog([*shop, *items("brand-new:c9")]))
    history = [Event(f"e{n}", "view", f"h{n}", it.item_id, TS + n) for n, it in enumerate(shop)]
    loop.run_until_complete(st.apply_events(history))
    reads = _count_newest_reads(st)
    answer = loop.run_until_complete(pipeline.recommend(st, s, uid("s"), k))
    assert reads[0] == 0
    assert len(answer.picks) == k and {p.reason for p in answer.picks} == {"popular"}


def test_a_small_shop_reads_the_list_once_per_catalogue_change(
    store: tuple[RedisStore, Loop],
) -> None:
    # Fewer items than a request wants: popularity is always short, so the list is needed on
    # every request, and must not cost a round trip on each.
    st, loop = store
    s = st.settings
    shop = items(*(f"p{x}:c{x % 3}" for x in range(8)))
    loop.run_until_complete(st.apply_catalog(shop))
    history = [Event(f"e{n}", "view", f"h{n}", it.item_id, TS + n) for n, it in enumerate(shop)]
    loop.run_until_complete(st.apply_events(history))
    reads = _count_newest_reads(st)
    for _ in range(5):
        loop.run_until_complete(pipeline.recommend(st, s, uid("s"), 5))
    assert reads[0] == 1
    loop.run_until_complete(st.apply_catalog(items("p9:c0")))
    answer = loop.run_until_complete(pipeline.recommend(st, s, uid("s"), 10))
    assert reads[0] == 2 and "p9" in {p.item_id for p in answer.picks}
    # POST /rank orders the caller's items: the list has nothing to add there.
    loop.run_until_complete(st.apply_catalog(items("p10:c1")))
    loop.run_until_complete(pipeline.recommend(st, s, uid("s"), 2, only=["p1", "p2"]))
    assert reads[0] == 2


def test_an_excluded_category_holding_every_new_item_does_not_empty_the_answer(
    store: tuple[RedisStore, Loop],
) -> None:
    # A catalogue exported category by category: the newest hundred items are all shoes.
    st, loop = store
    s = st.settings
    older = items(*(f"mug{x}:mugs" for x in range(30)))
    shoes = items(*(f"shoe{x}:shoes" for x in range(100)))
    loop.run_until_complete(st.apply_catalog([*older, *shoes]))
    live = Runtime(rules=policy.from_dict({"default": {"exclude_categories": ["shoes"]}}))
    answer = loop.run_until_complete(pipeline.recommend(st, s, uid("s"), 5, live=live))
    assert [p.item_id for p in answer.picks] == [f"mug{x}" for x in (29, 28, 27, 26, 25)]
    # Without the exclusion, both categories take turns even so.
    plain = loop.run_until_complete(pipeline.recommend(st, s, uid("s"), 4))
    assert [p.item_id for p in plain.picks] == ["shoe99", "mug29", "shoe98", "mug28"]


def _count_newest_reads(st: RedisStore) -> list[int]:
    calls = [0]
    read = st.read_newest

    async def counted(n: int) -> list[str]:
        calls[0] += 1
        return await read(n)

    st.read_newest = counted  # type: ignore[method-assign]
    return calls


# -- end to end: Kafka in, a worker of its own, Kafka out ----------------------------------


def record(item_id: str, category: str, in_stock: bool = True) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "title": item_id.title(),
        "category": category,
        "in_stock": in_stock,
    }


def ask(kafka: Kafka, session_id: str, k: int) -> list[dict[str, Any]]:
    rid = uid("q")
    req = {"request_id": rid, "session_id": session_id, "k": k}
    kafka.send(kafka.settings.topic_requests, session_id, req)
    _, doc, _ = kafka.wait_for(lambda t, d: d.get("request_id") == rid, timeout=30)
    return list(doc["items"])


def test_a_shop_with_only_a_catalogue_end_to_end(settings: Settings) -> None:
    # Topics and keys of its own: the run's shared worker has behaviour from other tests.
    own = dataclasses.replace(settings.isolated(uid("cold")), web_port=settings.web_port + 30)
    ensure_topics(own)
    log = own.home.resolve() / "logs" / f"{own.app_id}.log"
    proc = start_worker(own, log)
    kafka = Kafka(own)
    try:
        wait_worker_ready(proc, log)
        shelves = ("mugs", "tea", "pans", "knives")
        catalogue = [record(f"{c}-{n}", c) for n in range(3) for c in shelves]
        for r in catalogue:
            kafka.send(own.topic_catalog, r["item_id"], r)
        for r in catalogue:
            wait_item(own, r["item_id"], True)
        category = {r["item_id"]: r["category"] for r in catalogue}

        first = ask(kafka, uid("s"), 4)
        assert len(first) == 4
        assert {category[i["item_id"]] for i in first} == set(shelves)
        assert {i["reason"] for i in first} == {newest.REASON}

        sold, gone = first[0]["item_id"], first[1]["item_id"]
        kafka.send(own.topic_catalog, sold, record(sold, category[sold], in_stock=False))
        kafka.send(own.topic_catalog, gone, None)
        wait_item(own, sold, False)
        wait_item(own, gone, None)
        second = [i["item_id"] for i in ask(kafka, uid("s"), 4)]
        assert len(second) == 4 and not {sold, gone} & set(second)

        shopper = uid("s")
        bought_together = ("tea-0", "mugs-0")
        now = int(time.time() * 1000)
        for n, item_id in enumerate(bought_together):
            event = {
                "event_id": uid("e"),
                "type": "view",
                "session_id": shopper,
                "item_id": item_id,
                "ts": now + n,
            }
            kafka.send(own.topic_events, shopper, event)
        wait_session(own, shopper, len(bought_together))
        third = ask(kafka, uid("s"), 4)
        assert {i["item_id"] for i in third[:2]} == set(bought_together)
        assert [i["reason"] for i in third[:2]] == ["popular", "popular"]
        assert {i["reason"] for i in third[2:]} == {newest.REASON}
    finally:
        kafka.close()
        stop_worker(proc)
