"""What every agent and timer of one worker shares: the store, live state, the sink, loops."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from stream_reco import messages
from stream_reco.config import Settings
from stream_reco.consumer import TopicLoop
from stream_reco.guard import ERRORS, guarded
from stream_reco.kafka_io import Sink
from stream_reco.messages import Message, Out
from stream_reco.positions import Resume
from stream_reco.ranking.examples import Fresh, Sampler
from stream_reco.runtime import LearnerLoop, Runtime
from stream_reco.storage.protocol import Store
from stream_reco.storage.redis_store import RedisStore

Handler = Callable[[Store, Settings, list[Message]], Awaitable[list[Out]]]


class Wiring:
    """What every agent and timer of one worker shares: the store, live state, the sink."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.live = Runtime.start(settings)
        self.owner = uuid.uuid4().hex
        if settings.stream_examples_per_s > 0:
            self.live.fresh = Fresh(Sampler(per_s=settings.stream_examples_per_s))
        self.learner = LearnerLoop(settings, owner=self.owner, fresh=self.live.fresh)
        self.sink = Sink(settings, ERRORS)
        self._store: Store | None = None
        self.saved = time.monotonic()
        self.loops: list[TopicLoop] = []  # the hot paths this worker's role consumes

    def store(self) -> Store:
        # Created lazily on the worker's own event loop.
        if self._store is None:
            self._store = RedisStore.connect(self.settings)
        return self._store

    def guard(self, handler: Handler) -> Callable[[list[Message]], Awaitable[list[Out]]]:
        """`handler` under the processing-error policy (guard.py), on this worker's store."""
        s = self.settings

        def reject(m: Message, why: str) -> Out:
            return messages.rejected(s, m, why)

        def work(part: list[Message]) -> Awaitable[list[Out]]:
            return handler(self.store(), s, part)

        return lambda msgs: guarded(msgs, work, reject)

    def loop(
        self,
        name: str,
        topic: str,
        group: str,
        handler: Handler,
        *,
        ordered: bool,
        resume: Resume | None = None,
    ) -> None:
        """A librdkafka consumer of a hot topic. `ordered` (events, state): batches in order,
        each partition's part guarded on its own, side by side (one part's failure and retry
        never costs another its outputs), and a new group reads from the start of retention.
        Otherwise (requests, independent): each message on its own, and a new group starts
        `answer_max_lag_ms` back: older requests are not worth answering."""
        s, guarded_ = self.settings, self.guard(handler)

        async def handle(msgs: list[Message]) -> list[Out]:
            if not ordered:
                return await guarded_(msgs)
            # Every part runs to its end even when one fails, so no part is still applying
            # while the batch counts as done (and its partitions could move or be re-read).
            done = await asyncio.gather(
                *map(guarded_, messages.by_partition(msgs)), return_exceptions=True
            )
            outs = [o for part in done if not isinstance(part, BaseException) for o in part]
            failed = [part for part in done if isinstance(part, BaseException)]
            if failed:
                await self.sink.send(outs)  # what the other parts did still goes out
                raise failed[0]
            return outs

        start = "earliest" if ordered else "latest"
        # Requests up to the answer deadline old are still worth answering: a worker that is
        # still joining its group when a request arrives must not skip it.
        lookback = None if ordered else s.answer_max_lag_ms
        loop = TopicLoop(
            s,
            name,
            topic,
            group,
            handle,
            self.sink,
            start=start,
            ordered=ordered,
            lookback_ms=lookback,
            resume=resume,
        )
        self.loops.append(loop)

    def batch_agent(self, topic: faust.TopicT, handler: Handler, name: str) -> None:
        """An agent that takes batches from `topic` and hands them to `handler`, guarded."""
        s, guarded_ = self.settings, self.guard(handler)
        within = max(s.batch_within_ms, 1) / 1000.0  # 0 would mean "wait forever" in Faust

        async def agent(stream: faust.StreamT[Any]) -> None:
            async for batch in stream.take_events(s.batch_max, within=within):
                await self.sink.send(await guarded_([_message(e) for e in batch]))

        agent.__name__ = agent.__qualname__ = name  # Faust names agents after their function
        self.app.agent(topic)(agent)


def _message(event: Any) -> Message:
    m = event.message
    return Message(m.topic, m.partition, m.offset, m.key, m.value)
