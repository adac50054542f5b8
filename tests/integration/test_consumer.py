"""The topic loop: an unordered topic stores an offset only once all before it are done."""

from __future__ import annotations

import asyncio

from stream_reco.config import Settings
from stream_reco.consumer import TopicLoop
from stream_reco.errors import ERRORS
from stream_reco.kafka_io import Sink
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
