"""Faust wiring only: topics, agents and the worker; decisions live in pipeline.py and guard.py."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import faust

from stream_reco import messages, runtime
from stream_reco.candidates import behaviour
from stream_reco.candidates.index_sync import IndexSync
from stream_reco.config import Settings
from stream_reco.guard import ERRORS, guarded
from stream_reco.messages import Message, Out
from stream_reco.runtime import LearnerLoop, Runtime
from stream_reco.storage.redis_store import RedisStore
from stream_reco.web import add_views

log = logging.getLogger(__name__)
BEHAVIOUR_EVERY_S = 60.0  # behavioural vectors change slowly; one worker (a lease) redoes them
INDEX_EVERY_S = 0.2  # how soon another worker's new catalogue item is similar-searchable here
SNAPSHOT_EVERY_S = 30.0
Handler = Callable[[RedisStore, Settings, list[Message]], Awaitable[list[Out]]]


def _broker_url(servers: str) -> list[str]:
    return [f"kafka://{s.strip()}" for s in servers.split(",") if s.strip()]


def create_app(settings: Settings) -> faust.App:
    """The Faust app: agents for events, catalogue, requests and rules; timers that reload
    rules and model and run the learner; the HTTP views."""
    datadir = settings.home.resolve() / "faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=_broker_url(settings.kafka_bootstrap_servers),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        web_port=settings.web_port,
        # Faust's own scratch space (tables, leader state) lives with the rest of our state,
        # not in whatever folder the worker was started from.
        datadir=str(datadir),
        web_host="127.0.0.1",
        web_bind="127.0.0.1",
        consumer_auto_offset_reset="earliest",
        # Request/response wants small waits; Faust's defaults favour throughput.
        broker_commit_interval=1.0,
        producer_linger=0.001,
        stream_buffer_maxsize=max(settings.batch_max * 2, 1000),
    )
    events = app.topic(settings.topic_events)
    catalog = app.topic(settings.topic_catalog)
    requests = app.topic(settings.topic_requests)
    # One partition, compacted: one consumer applies rules updates in order.
    config = app.topic(settings.topic_config, partitions=1, compacting=True)
    live = Runtime.start(settings)
    owner = uuid.uuid4().hex
    learner = LearnerLoop(settings, owner=owner)
    sinks = {
        name: app.topic(name) for name in (settings.topic_responses, settings.topic_deadletter)
    }
    within = max(settings.batch_within_ms, 1) / 1000.0  # 0 would mean "wait forever" in Faust
    store: list[RedisStore] = []

    def get_store() -> RedisStore:
        # Created lazily on the worker's own event loop.
        if not store:
            store.append(RedisStore.connect(settings))
        return store[0]

    async def send(outs: Sequence[Out]) -> None:
        for o in outs:
            try:
                await sinks[o.topic].send(key=o.key, value=o.value)
            except Exception:
                # An output we cannot hand to Kafka must not stop the stream behind it.
                ERRORS["send"] += 1
                log.exception("could not send to %s", o.topic)

    async def process(msgs: list[Message], handler: Handler) -> None:
        def work(batch: list[Message]) -> Awaitable[list[Out]]:
            return handler(get_store(), settings, batch)

        def reject(m: Message, why: str) -> Out:
            return messages.rejected(settings, m, why)

        await send(await guarded(msgs, work, reject))

    @app.agent(events)
    async def ingest(stream: faust.StreamT[Any]) -> None:
        async for batch in stream.take_events(settings.batch_max, within=within):
            await process([_message(e) for e in batch], on_events)

    @app.agent(catalog)
    async def update_catalog(stream: faust.StreamT[Any]) -> None:
        async for batch in stream.take_events(settings.batch_max, within=within):
            await process([_message(e) for e in batch], messages.on_catalog_messages)

    async def on_events(st: RedisStore, s: Settings, msgs: list[Message]) -> list[Out]:
        return await messages.on_event_messages(st, s, msgs, live)

    async def answer_all(st: RedisStore, s: Settings, msgs: list[Message]) -> list[Out]:
        asks = (messages.on_request_message(st, s, m, live) for m in msgs)
        return list(await asyncio.gather(*asks))

    @app.agent(requests)
    async def answer(stream: faust.StreamT[Any]) -> None:
        async for batch in stream.take_events(settings.batch_max, within=within):
            await process([_message(e) for e in batch], answer_all)

    @app.agent(config)
    async def update_rules(stream: faust.StreamT[Any]) -> None:
        async for batch in stream.take_events(settings.batch_max, within=within):
            await process([_message(e) for e in batch], messages.on_config_messages)

    @app.timer(interval=settings.refresh_s)
    async def refresh() -> None:
        # A failed refresh keeps the last good rules and model; the next tick tries again.
        with _survived("refresh"):
            await runtime.refresh(get_store(), settings, live)
        with _survived("learn"):  # apart: a failed reload must not stop learning, nor the reverse
            await learner.step(get_store())

    @app.timer(interval=INDEX_EVERY_S)
    async def follow_index() -> None:
        with _survived("index"):
            if live.sync is None:
                where = settings.home.resolve() / "ann" / f"{settings.app_id}-{settings.web_port}"
                sync = IndexSync(get_store().vectors, where)
                await asyncio.to_thread(sync.start)
                live.sync = sync
            await live.sync.catch_up()
            if time.monotonic() - saved[0] > SNAPSHOT_EVERY_S:
                saved[0] = time.monotonic()
                await live.sync.save()

    @app.timer(interval=BEHAVIOUR_EVERY_S)
    async def learn_vectors() -> None:
        with _survived("behaviour"):
            st, ttl_ms = get_store(), int(BEHAVIOUR_EVERY_S * 3000)
            if await st.hold_lease("behaviour", owner, ttl_ms):
                await behaviour.refresh(st)

    saved = [time.monotonic()]
    add_views(app, settings, live, get_store)
    return app


@contextmanager
def _survived(step: str) -> Iterator[None]:
    """A background step that fails is counted and logged; its timer's next tick tries again."""
    try:
        yield
    except Exception:
        ERRORS[step] += 1
        log.exception("background step %r failed", step)


def _message(event: Any) -> Message:
    m = event.message
    return Message(m.topic, m.partition, m.offset, m.key, m.value)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one Faust worker until Ctrl-C/SIGTERM; several workers share the partitions."""
    from faust.worker import Worker

    app = create_app(settings)
    Worker(app, loglevel=loglevel, redirect_stdouts=False).execute_from_commandline()
