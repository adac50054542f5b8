"""The health module against the real Redis and Kafka: ready when both answer, not ready with
the reason when either is unreachable, Kafka probes cached, and both views over real HTTP."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import faust
import pytest
from confluent_kafka import KafkaError

from stream_reco import health, logs
from stream_reco.config import Settings
from stream_reco.consumer import TopicLoop
from stream_reco.errors import ERRORS
from stream_reco.kafka_io import Sink, ensure_topics
from stream_reco.messages import Message, Out
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import forget_isolated

pytestmark = pytest.mark.integration


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mine(base_settings: Settings) -> Iterator[Settings]:
    """Own topics and key prefix; the checks create nothing, so nothing is left to clean."""
    yield base_settings.isolated(f"health{uuid.uuid4().hex[:6]}")


def _check(settings: Settings, consumers: list[Any] | None = None) -> tuple[bool, dict[str, Any]]:
    async def run() -> tuple[bool, dict[str, Any]]:
        store = RedisStore.connect(settings)
        try:
            return await health.check(store, settings, consumers)
        finally:
            await store.close()

    return asyncio.run(run())


def test_ready_when_redis_and_kafka_answer(mine: Settings) -> None:
    ok, doc = _check(mine)
    assert ok, doc
    assert doc["status"] == "ready"
    assert doc["redis"]["ok"] and doc["kafka"]["ok"]
    assert doc["kafka"]["brokers"] >= 1
    # The isolated topics do not exist: said, but HTTP answers need none, so still ready.
    assert doc["kafka"]["topics_missing"] == [mine.topic_events, mine.topic_requests]
    # Another deployment on the same brokers, probed at once, gets its own answer.
    other = mine.isolated("other")
    other_doc = _check(other)[1]["kafka"]
    assert other_doc["topics_missing"] == [other.topic_events, other.topic_requests]


def test_ready_on_a_redis_cluster(cluster: Settings) -> None:
    ok, doc = _check(cluster)
    assert ok, doc
    assert doc["redis"]["ok"]


def test_redis_on_a_closed_port_is_not_ready_and_says_why(mine: Settings) -> None:
    port = free_port()
    closed = dataclasses.replace(mine, redis_url=f"redis://127.0.0.1:{port}/0")
    started = time.monotonic()
    ok, doc = _check(closed)
    assert not ok
    assert doc["status"] == "not ready"
    assert not doc["redis"]["ok"]
    assert "Redis unreachable" in doc["redis"]["error"]
    assert str(port) in doc["redis"]["error"]
    assert doc["kafka"]["ok"]  # the other dependency is judged on its own
    assert time.monotonic() - started < health.REDIS_TIMEOUT_S + health.KAFKA_TIMEOUT_S + 2


def test_redis_password_never_reaches_the_document(mine: Settings) -> None:
    closed = dataclasses.replace(mine, redis_url=f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0")
    ok, doc = _check(closed)
    assert not ok
    assert "s3cret-pw" not in repr(doc)


def test_kafka_on_a_closed_port_is_not_ready_and_says_why(mine: Settings) -> None:
    closed = dataclasses.replace(mine, kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    ok, doc = _check(closed)
    took = time.monotonic() - started
    assert not ok
    assert doc["redis"]["ok"]
    assert not doc["kafka"]["ok"]
    assert "Kafka unreachable" in doc["kafka"]["error"]
    assert took < health.KAFKA_TIMEOUT_S + 2  # bounded: a probe never hangs on a dead broker


def test_kafka_answers_are_cached_between_probes(mine: Settings) -> None:
    probe = health.KafkaProbe(cache_s=0.5)

    async def three() -> list[dict[str, Any]]:
        first, second = await asyncio.gather(probe.reach(mine), probe.reach(mine))
        await asyncio.sleep(0.6)
        return [first, second, await probe.reach(mine)]

    got = asyncio.run(three())
    assert all(doc["ok"] for doc in got)
    # Two probes at once make one metadata request; the next after the cache ages makes one.
    assert sorted(doc["cached"] for doc in got[:2]) == [False, True]
    assert got[2]["cached"] is False


@dataclass
class _Loop:
    """The attributes readiness reads of a consumer.TopicLoop, with a real logs.Trouble."""

    name: str
    topic: str
    lag: dict[int, int] = field(default_factory=dict)
    trouble: logs.Trouble = field(default_factory=lambda: logs.Trouble("test consumer"))


def test_a_failing_consumer_is_not_ready_and_an_idle_one_is(mine: Settings) -> None:
    idle = _Loop("requests", mine.topic_requests)  # no partitions: a replica beyond them
    busy = _Loop("events", mine.topic_events, lag={0: 3, 2: 0})
    ok, doc = _check(mine, [idle, busy])
    assert ok, doc
    assert [c["lag"] for c in doc["consumers"]] == [0, 3]
    busy.trouble.failed("poll", "_ALL_BROKERS_DOWN")
    ok, doc = _check(mine, [idle, busy])
    assert not ok
    assert [c["ok"] for c in doc["consumers"]] == [True, False]


def test_a_consumer_is_ready_again_after_a_kafka_blip_on_a_quiet_topic(
    base_settings: Settings, mine: Settings
) -> None:
    """librdkafka reports all brokers down, then they answer again while nothing is produced
    (requests come over HTTP only): no message and no rebalance arrives to clear the failure,
    yet readiness comes back within a few seconds."""
    ensure_topics(mine)

    async def handle(batch: list[Message]) -> list[Out]:
        return []

    async def run() -> tuple[bool, bool, float]:
        sink = Sink(mine, ERRORS)
        loop = TopicLoop(mine, "events", mine.topic_events, f"{mine.app_id}-events", handle, sink)
        task = asyncio.create_task(loop.run())
        store = RedisStore.connect(mine)
        try:
            for _ in range(300):  # joined (an assignment clears any trouble on its own)
                if loop._owned:
                    break
                await asyncio.sleep(0.1)
            assert loop._owned, "the loop was never assigned its partitions"
            # As librdkafka's error callback reports a blip on the fetching thread.
            loop._client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
            failing = loop.trouble.failing  # readiness reads this (health._consumers)
            started = time.monotonic()
            ready = False
            while not ready and time.monotonic() - started < 10:
                await asyncio.sleep(0.2)
                ready = (await health.check(store, mine, [loop]))[0]
            return failing, ready, time.monotonic() - started
        finally:
            loop.stop()
            await task
            await store.close()
            sink.flush(5)

    try:
        failing, ready, took = asyncio.run(run())
    finally:
        forget_isolated(base_settings, mine)
    assert failing  # the blip is seen at once
    assert ready, "still not ready 10 s after the brokers answered again"
    assert took < 5, took


def test_views_over_http(mine: Settings) -> None:
    """The views a worker serves, on a real Faust web server, with Redis up then unreachable."""
    port = free_port()
    broken = dataclasses.replace(mine, redis_url=f"redis://127.0.0.1:{free_port()}/0")

    async def run() -> list[tuple[str, int, dict[str, Any]]]:
        got = []
        for settings in (mine, broken):
            app = faust.App(
                f"{mine.app_id}-{len(got)}",
                web_port=port,
                web_bind="127.0.0.1",
                web_host="127.0.0.1",
                web_router_enabled=False,
                web_tables_enabled=False,
            )
            store = RedisStore.connect(settings)
            health.add_health_views(app, settings, lambda s=store: s)  # type: ignore[misc]
            await app.web.start()
            try:
                async with aiohttp.ClientSession() as http:
                    for path in health.PATHS:
                        async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                            got.append((path, r.status, await r.json()))
            finally:
                await app.web.stop()
                await store.close()
        return got

    got = asyncio.run(run())
    assert [(path, status) for path, status, _ in got] == [
        (health.LIVE_PATH, 200),
        (health.READY_PATH, 200),
        (health.LIVE_PATH, 200),  # liveness ignores Redis: an outage restarts nobody
        (health.READY_PATH, 503),
    ]
    assert "Redis unreachable" in got[3][2]["redis"]["error"]
