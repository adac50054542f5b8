"""RecoClient against the real stack: catalogue, rules and events in, answers matched by
request_id, timeouts out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from stream_reco.client import (
    InvalidEvent,
    InvalidItem,
    InvalidRequest,
    InvalidRules,
    RecoClient,
    RecoTimeout,
)
from stream_reco.config import Settings
from stream_reco.errors import StackError, StreamRecoError
from stream_reco.events import Rejected, decode_event
from stream_reco.kafka_io import ensure_topics, producer
from stream_reco.simulator import make_catalog
from tests.integration.conftest import uid, wait_item, wait_session


def event(session: str, item: str, kind: str = "view") -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {"event_id": uid("ev"), "type": kind, "session_id": session, "item_id": item, "ts": now}


def until(done: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def catalog(settings: Settings, worker: object) -> list[str]:
    """A small in-stock catalogue under ids of its own, applied by the worker."""
    prefix = uid("cl")
    records = [
        {**r, "item_id": f"{prefix}-{r['item_id']}", "in_stock": True}
        for r in make_catalog(n_items=8, seed=9)
    ]
    out = producer(settings)
    for r in records:
        out.produce(settings.topic_catalog, key=r["item_id"], value=orjson.dumps(r))
    out.flush(10)
    for r in records:
        wait_item(settings, r["item_id"], True)
    return [r["item_id"] for r in records]


@pytest.fixture
def client(settings: Settings, worker: object) -> Iterator[RecoClient]:
    with RecoClient.from_settings(settings, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def unserved(settings: Settings) -> Settings:
    """Topics of their own that no worker consumes (the run's cleanup deletes them)."""
    lonely = settings.isolated(uid("lonely"))
    ensure_topics(lonely)
    return lonely


def test_recommend_answers_with_its_own_request_id(
    client: RecoClient, catalog: list[str], settings: Settings
) -> None:
    sid = uid("s")
    for item in catalog[:3]:
        client.track(event(sid, item))
    client.flush()
    wait_session(settings, sid, 3)
    fut = client.request(sid, 3, exclude=[catalog[0]], placement="cart_page")
    answer = fut.result(timeout=15)
    assert answer["request_id"] == fut.request_id
    assert fut.request_id.startswith(f"{client.client_id}-")
    assert answer["session_id"] == sid and answer["trigger"] == "request"
    assert 0 < len(answer["items"]) <= 3
    assert catalog[0] not in [i["item_id"] for i in answer["items"]]
    again = client.recommend(sid, 2)
    assert again["session_id"] == sid and len(again["items"]) <= 2
    assert again["request_id"].startswith(f"{client.client_id}-")
    assert again["request_id"] != fut.request_id and client.pending == 0


def test_recommend_async_does_not_block_the_event_loop(client: RecoClient) -> None:
    sid = uid("s")

    async def main() -> tuple[list[dict[str, Any]], int]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        ticker = asyncio.create_task(tick())
        answers = await asyncio.gather(*(client.recommend_async(sid, k) for k in (1, 2, 3)))
        ticker.cancel()
        return answers, ticks

    answers, ticks = asyncio.run(main())
    assert [a["session_id"] for a in answers] == [sid] * 3
    assert [len(a["items"]) <= k for a, k in zip(answers, (1, 2, 3), strict=True)] == [True] * 3
    assert len({a["request_id"] for a in answers}) == 3
    assert ticks >= 2  # the loop ran while the answers were on their way


def test_concurrent_requests_from_threads_each_get_their_own_answer(client: RecoClient) -> None:
    sessions = [uid("c") for _ in range(8)]

    def ask(n: int) -> tuple[int, Any]:
        return n, client.request(sessions[n % 8], 1 + n % 5)

    with ThreadPoolExecutor(4) as pool:
        futures = list(pool.map(ask, range(64)))
    for n, fut in futures:
        answer = fut.result(timeout=20)
        assert answer["request_id"] == fut.request_id
        assert answer["session_id"] == sessions[n % 8] and len(answer["items"]) <= 1 + n % 5
    assert len({fut.request_id for _, fut in futures}) == 64
    assert client.pending == 0


def test_only_own_answers_resolve_everything_else_goes_to_on_response(
    client: RecoClient, settings: Settings, catalog: list[str]
) -> None:
    seen: list[dict[str, Any]] = []
    keep = seen.append
    with RecoClient.from_settings(settings, timeout=10, on_response=lambda d, _: keep(d)) as me:
        theirs = client.recommend(uid("other"), 2)
        cart = uid("cart")
        client.track(event(cart, catalog[4], "add_to_cart"))
        mine = me.recommend(cart, 2)
        until(lambda: any(d.get("request_id") == theirs["request_id"] for d in seen), "theirs")
        until(lambda: any(d["session_id"] == cart for d in seen), "the push")
        push = next(d for d in seen if d["session_id"] == cart)
        assert push["trigger"] == "add_to_cart" and push["request_id"] is None
        assert mine["request_id"] not in [d["request_id"] for d in seen]

        # One partition (one key), so the marker arrives after the two before it.
        raw, marker = producer(settings), uid("marker")
        for value in (orjson.dumps(mine), b"not json", orjson.dumps(_marker(marker))):
            raw.produce(settings.topic_responses, key=cart, value=value)
        raw.flush(10)
        until(lambda: any(d["session_id"] == marker for d in seen), "the marker")
        assert (me.late, me.ignored, me.errors, me.pending) == (1, 1, 0, 0)
        assert mine["request_id"] not in [d.get("request_id") for d in seen]


def _marker(session_id: str) -> dict[str, Any]:
    """A response-shaped record for no request: other tests read this topic as responses."""
    return {"request_id": None, "session_id": session_id, "trigger": "marker", "items": []}


def _produced(settings: Settings, topic: str) -> int:
    """How many messages `topic` has ever received (sum of its partitions' end offsets)."""
    probe = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "probe"})
    try:
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [probe.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts]
        return sum(ends)
    finally:
        probe.close()


def test_invalid_event_raises_the_workers_reason_and_sends_nothing(
    client: RecoClient, settings: Settings
) -> None:
    sid = uid("s")
    before = _produced(settings, settings.topic_events)
    bad = {**event(sid, "item-1"), "event_id": ""}
    with pytest.raises(InvalidEvent) as err:
        client.track(bad)
    worker = decode_event(orjson.dumps(bad))
    assert isinstance(worker, Rejected) and err.value.reason == worker.reason
    assert "event_id must be a non-empty string" in err.value.reason
    with pytest.raises(InvalidEvent, match="ts="):
        client.track({**event(sid, "item-1"), "ts": int(time.time() * 1000) + 7200_000})
    client.flush()
    assert _produced(settings, settings.topic_events) == before
    client.track(event(sid, "item-1"))
    client.flush()
    assert _produced(settings, settings.topic_events) == before + 1  # the count does see sends


def test_invalid_request_raises_at_once(client: RecoClient) -> None:
    with pytest.raises(InvalidRequest, match=r"k=0 is outside 1\.\.100"):
        client.request("s-1", 0)
    with pytest.raises(InvalidRequest, match="exclude must be a list"):
        client.recommend("s-1", exclude="item-1")
    with pytest.raises(InvalidRequest, match="timeout"):
        client.request("s-1", timeout=0)
    assert client.pending == 0


def test_a_request_nobody_answers_times_out_and_says_why(unserved: Settings) -> None:
    with RecoClient.from_settings(unserved, timeout=0.5) as lonely:
        started = time.monotonic()
        with pytest.raises(RecoTimeout) as err:
            lonely.recommend("s-1")
        took = time.monotonic() - started
        fut = lonely.request("s-2", timeout=0.2)
        late = fut.exception(timeout=5)
    assert 0.5 <= took < 1.5
    assert f"{lonely.client_id}-1 within 0.5 s" in str(err.value)
    assert f"consuming {unserved.topic_requests}" in str(err.value)
    assert isinstance(late, RecoTimeout) and fut.request_id in str(late)


def test_close_fails_pending_futures(unserved: Settings) -> None:
    lonely = RecoClient.from_settings(unserved, timeout=60).start()
    futures = [lonely.request(f"s-{n}") for n in range(3)]
    assert lonely.pending == 3
    lonely.close()
    lonely.close()
    for fut in futures:
        failed = fut.exception(timeout=1)
        assert type(failed) is StreamRecoError and "closed before request" in str(failed)
    assert lonely.pending == 0
    with pytest.raises(StreamRecoError, match="closed"):
        lonely.request("s-4")


def test_start_says_how_to_create_a_missing_responses_topic(settings: Settings) -> None:
    nowhere = RecoClient.from_settings(settings.isolated(uid("none")))
    try:
        with pytest.raises(StackError, match="run `stream-reco topics` or start a worker"):
            nowhere.start(timeout=5)
    finally:
        nowhere.close()


def test_without_a_poll_thread_the_caller_drives_poll(settings: Settings, worker: object) -> None:
    with RecoClient.from_settings(settings, background=False, timeout=10) as c:
        names = [t.name for t in threading.enumerate()]
        assert f"reco-client-{c.client_id}" not in names
        sid = uid("s")
        fut = c.request(sid, 2)
        deadline = time.monotonic() + 15
        while not fut.done() and time.monotonic() < deadline:
            c.poll(0.05)
        assert fut.result(timeout=0)["request_id"] == fut.request_id
        assert c.recommend(sid, 1)["session_id"] == sid  # drives poll() itself
        assert asyncio.run(c.recommend_async(sid, 1))["session_id"] == sid


def test_publish_catalog_and_remove_item_reach_the_worker(
    client: RecoClient, settings: Settings
) -> None:
    prefix = uid("pc")
    items = [
        {"item_id": f"{prefix}-{n}", "title": f"Item {n}", "category": "c", "in_stock": n != 1}
        for n in range(3)
    ]
    assert client.publish_catalog(iter(items)) == 3
    client.flush()
    for n, item in enumerate(items):
        wait_item(settings, item["item_id"], n != 1)
    client.remove_item(items[0]["item_id"])
    client.publish_catalog([{**items[1], "in_stock": True}])  # replaces the whole record
    client.flush()
    wait_item(settings, items[0]["item_id"], None)
    wait_item(settings, items[1]["item_id"], True)


def test_set_rules_changes_the_answers_of_its_placement_until_dropped(
    client: RecoClient, settings: Settings, catalog: list[str]
) -> None:
    sid, placement = uid("s"), uid("place")
    for item in catalog[:3]:
        client.track(event(sid, item))
    client.flush()
    wait_session(settings, sid, 3)

    def items(where: str | None) -> list[str]:
        return [i["item_id"] for i in client.recommend(sid, 3, placement=where)["items"]]

    until(lambda: bool(items(placement)), "a non-empty answer")
    top = items(placement)[0]
    client.set_rules(placement, {"exclude": [top]})
    until(lambda: top not in items(placement), f"the rule excluding {top}")
    assert top in items(None)  # the default placement keeps its rules
    client.set_rules(placement, None)
    until(lambda: top in items(placement), "the rule to be dropped")


def test_a_request_may_name_the_item_in_view(client: RecoClient, catalog: list[str]) -> None:
    sid = uid("s")
    client.track(event(sid, catalog[1]))
    fut = client.request(sid, 3, placement="product_page", item_id=catalog[1])
    answer = fut.result(timeout=15)  # a valid request: the worker answers it
    assert answer["request_id"] == fut.request_id and answer["session_id"] == sid
    with pytest.raises(InvalidRequest, match="item_id must be a non-empty string"):
        client.request(sid, item_id="")


def test_invalid_catalogue_records_and_rules_send_nothing(
    client: RecoClient, settings: Settings
) -> None:
    before = [_produced(settings, t) for t in (settings.topic_catalog, settings.topic_config)]
    good = {"item_id": uid("ok"), "title": "fine"}
    with pytest.raises(InvalidItem, match=r"items\[1\]: .*in_stock must be true or false"):
        client.publish_catalog([good, {"item_id": uid("bad"), "in_stock": "yes"}])
    with pytest.raises(InvalidItem, match="item_id must be a non-empty string"):
        client.publish_catalog([{"title": "no id"}])
    with pytest.raises(InvalidRules, match=r"unknown fields \['diversity'\]"):
        client.set_rules("default", {"diversity": 1})
    client.flush()
    after = [_produced(settings, t) for t in (settings.topic_catalog, settings.topic_config)]
    assert after == before
