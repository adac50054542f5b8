"""Replay sessions through the engine's own code: the worker's ingestion, the query ranking."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence

from stream_reco import pipeline
from stream_reco.config import Settings
from stream_reco.evaluation.data import SessionLog
from stream_reco.evaluation.metrics import Metrics
from stream_reco.evaluation.via_kafka import ingest as via_kafka_ingest
from stream_reco.events import Event
from stream_reco.storage.redis_store import RedisStore

TRAIN_BATCH = 1000
Tick = Callable[[int], None]


def events(log: SessionLog, scope: str) -> list[Event]:
    """A logged session as engine events; `scope` keeps train and test ids apart."""
    sid = f"{scope}/{log.session_id}"
    return [
        Event(f"{sid}/{n}", kind, sid, item, ts)
        for n, (item, ts, kind) in enumerate(zip(log.items, log.ts, log.types, strict=True))
    ]


def eval_settings(settings: Settings) -> Settings:
    """A private key space, and no catalogue: logged data names items without metadata."""
    return dataclasses.replace(
        settings,
        key_prefix=f"{settings.key_prefix}-eval-{uuid.uuid4().hex[:8]}",
        require_catalog=False,
    )


async def train(store: RedisStore, logs: Sequence[SessionLog], tick: Tick) -> float:
    """Ingest train sessions in time order through the real update; returns events per second."""
    stream = sorted((e for log in logs for e in events(log, "train")), key=lambda e: e.ts)
    started = time.perf_counter()
    for n in range(0, len(stream), TRAIN_BATCH):
        batch = stream[n : n + TRAIN_BATCH]
        await pipeline.ingest(store, batch, learn=True)
        tick(len(batch))
    return len(stream) / max(time.perf_counter() - started, 1e-9)


async def test(
    store: RedisStore,
    logs: Sequence[SessionLog],
    metrics: Metrics,
    k: int,
    online: bool,
    tick: Tick,
    concurrency: int = 1,
) -> None:
    """SR-GNN protocol: at each position i >= 1 ask for the top k given events 0..i-1 and score
    the item at i. Frozen: test events only build their own session. Online: after scoring,
    the event is learned from, as in production. Sessions run `concurrency` at a time, each
    strictly in order; at 1 the latencies are the engine's alone, not its neighbours'."""
    settings = store.settings
    gate = asyncio.Semaphore(concurrency)

    async def one(log: SessionLog) -> None:
        async with gate:
            evs = events(log, "test")
            for i, ev in enumerate(evs):
                if i >= 1:
                    started = time.perf_counter()
                    picks = (await pipeline.recommend(store, settings, ev.session_id, k)).picks
                    ms = (time.perf_counter() - started) * 1000
                    metrics.add(ev.item_id, [p.item_id for p in picks], ms)
                    tick(1)
                await pipeline.ingest(store, [ev], learn=online)

    await asyncio.gather(*(one(log) for log in logs))


def wire(e: Event) -> dict[str, object]:
    """An engine event as a `reco-events` message (docs/contract.md)."""
    return {
        "event_id": e.event_id,
        "type": e.type,
        "session_id": e.session_id,
        "item_id": e.item_id,
        "ts": e.ts,
        "user_id": e.user_id,
    }


async def evaluate_engine(
    settings: Settings,
    train_logs: Sequence[SessionLog],
    test_logs: Sequence[SessionLog],
    metrics: Metrics,
    k: int,
    online: bool,
    on_train: Tick,
    on_test: Tick,
    via_kafka: bool = False,
) -> dict[str, float]:
    """Train then test on a fresh private key space that is deleted afterwards. `via_kafka`:
    train events go through the real topics and a worker instead of straight to the store."""
    store = RedisStore.connect(eval_settings(settings))
    try:
        if via_kafka:
            stream = sorted(
                (e for log in train_logs for e in events(log, "train")), key=lambda e: e.ts
            )
            msgs = [wire(e) for e in stream]
            rate = await asyncio.to_thread(via_kafka_ingest, store.settings, msgs, on_train)
        else:
            rate = await train(store, train_logs, on_train)
        await test(store, test_logs, metrics, k, online, on_test)
        return {"train_events_per_s": rate}
    finally:
        await store.clear()
        await store.close()
