"""The topic loop: an unordered topic stores an offset only once all before it are done."""

from __future__ import annotations

import asyncio
import time

from confluent_kafka.admin import AdminClient, NewTopic

from stream_reco.config import Settings
from stream_reco.consumer import TopicLoop
from stream_reco.errors import ERRORS
from stream_reco.kafka_io import Sink, producer
from stream_reco.messages import Message, Out


def test_an_offset_is_stored_only_once_every_earlier_message_is_done(settings: Settings) -> None:
    gates = {o: asyncio.Event() for o in range(3)}
    started: list[int] = []

    async def handle(batch: list[Message]) -> list[Out]:
        (m,) = batch  # unordered: one message per task
        started.append(m.offset or 0)
        await gates[m.offset or 0].wait()
        return []

    async def run() -> list[int]:
        loop = TopicLoop(
            settings,
            "t",
            settings.topic_requests,
            "g",
            handle,
            Sink(settings, ERRORS),
            ordered=False,
        )
        msgs = [Message(settings.topic_requests, 0, o, None, b"{}") for o in range(3)]
        await loop._dispatch(msgs)
        await asyncio.sleep(0.01)
        seen = [len(started)]  # all three run at once, none waits for another
        marks = []
        for o in (2, 0, 1):  # finish out of order
            gates[o].set()
            await asyncio.sleep(0.01)
            marks.append(loop._done.get(0, -1))
        assert loop._idle.is_set()
        return seen + marks

    # 3 started together; 2 done alone stores nothing, 0 done stores 0, 1 done stores 2.
    assert asyncio.run(run()) == [3, -1, 0, 2]


def _received(settings: Settings, topic: str, group: str, lookback_ms: int | None) -> list[bytes]:
    """What an unordered loop of a new group takes from `topic` within a few seconds."""
    got: list[bytes] = []

    async def handle(batch: list[Message]) -> list[Out]:
        got.extend(m.value or b"" for m in batch)
        return []

    async def run() -> None:
        loop = TopicLoop(
            settings, "t", topic, group, handle, Sink(settings, ERRORS), ordered=False,
            start="latest", lookback_ms=lookback_ms,
        )  # fmt: skip
        task = asyncio.create_task(loop.run())
        for _ in range(100):  # joining a new group takes a few seconds
            await asyncio.sleep(0.1)
            if loop._owned and len(got) >= 2:
                break
        await asyncio.sleep(0.5)  # anything else it would take
        loop.stop()
        await task

    asyncio.run(run())
    return got


def test_a_new_requests_group_starts_back_by_the_answer_deadline(settings: Settings) -> None:
    topic = f"{settings.topic_requests}-lookback"
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    admin.create_topics([NewTopic(topic, 1, 1)])["" + topic].result()
    now = int(time.time() * 1000)
    out = producer(settings)
    out.produce(topic, b"stale", timestamp=now - 60_000)  # older than the deadline
    out.produce(topic, b"fresh-1", timestamp=now - 1_000)  # sent while the worker was joining
    out.produce(topic, b"fresh-2", timestamp=now)
    out.flush(10)
    # (A deadline longer than a new group takes to join, however slow the machine.)
    got = _received(settings, topic, f"{settings.app_id}-lookback", 30_000)
    assert got == [b"fresh-1", b"fresh-2"]
    # Without a look-back a new group starts at the end and misses both fresh requests.
    assert _received(settings, topic, f"{settings.app_id}-latest", None) == []
