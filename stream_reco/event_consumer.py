"""The events consumer: clickstream batches from Kafka, applied in order, offsets kept after."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from stream_reco.config import Settings
from stream_reco.guard import ERRORS
from stream_reco.kafka_io import QUIET, Sink
from stream_reco.messages import Message, Out

log = logging.getLogger(__name__)
Apply = Callable[[list[Message]], Awaitable[list[Out]]]
# How long a rebalance may wait for the batch in flight before giving its partitions away
# (then the new owner redoes the rest: effects are idempotent).
REVOKE_WAIT_S = 30.0
FETCH_MIN_BYTES = 256 * 1024  # more than a batch_max batch of typical events


class EventConsumer:
    """Reads `reco-events` with librdkafka (confluent-kafka) rather than Faust: the per-message
    cost of Faust's stream machinery is several times that of applying the event itself.

    One batch is in flight at a time, so a session's events (one partition, by key) are applied
    in order; while Redis works on batch N, batch N+1 is fetched and decoded. An offset is
    stored only after its batch's effects are in Redis and its outputs handed to the sink,
    and librdkafka commits stored offsets every second and on rebalance: at-least-once, and the
    store's dedup makes a redelivery change nothing.
    """

    def __init__(self, settings: Settings, apply: Apply, sink: Sink) -> None:
        self.settings, self.apply, self.sink = settings, apply, sink
        self.consumed = 0
        self._stop = threading.Event()
        self._idle = threading.Event()  # set while no batch is in flight
        self._idle.set()
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": settings.events_group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,  # stored by us, after the effects
                "auto.commit.interval.ms": 1000,
                # Let the broker gather a batch for up to `batch_within_ms` instead of
                # answering every new message with a fetch of its own: one round trip per
                # few milliseconds, not per event, costs the broker far less CPU.
                "fetch.wait.max.ms": max(settings.batch_within_ms, 1),
                # "fetch.min.bytes": FETCH_MIN_BYTES,
                **QUIET,
            }
        )

    async def run(self) -> None:
        """Consume until `stop()`; closes the consumer (committing what was stored) on exit."""
        c = self._consumer
        c.subscribe(
            [self.settings.topic_events], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        within = max(self.settings.batch_within_ms, 1) / 1000
        in_flight: asyncio.Task[None] | None = None
        try:
            while not self._stop.is_set():
                raw = await asyncio.to_thread(c.consume, self.settings.batch_max, within)
                batch = self._messages(raw)
                self.sink.poll()
                if in_flight is not None:
                    await in_flight  # batch N's effects before batch N+1's: order per session
                    in_flight = None
                if batch:
                    self._idle.clear()
                    in_flight = asyncio.create_task(self._apply(raw, batch))
            if in_flight is not None:
                await in_flight
        finally:
            self._stop.set()
            await asyncio.to_thread(self._close)

    def stop(self) -> None:
        self._stop.set()

    def _messages(self, raw: list[Any]) -> list[Message]:
        out: list[Message] = []
        for m in raw:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    ERRORS["kafka_consume"] += 1
                    log.warning("events consumer: %s", err)
                continue
            kind, ts = m.timestamp()
            sent = ts if kind != TIMESTAMP_NOT_AVAILABLE else None
            out.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), sent))
        self.consumed += len(out)
        return out

    async def _apply(self, raw: list[Any], batch: list[Message]) -> None:
        try:
            self.sink.send(await self.apply(batch))
            self._store_offsets(batch)
        finally:
            self._idle.set()

    def _store_offsets(self, batch: list[Message]) -> None:
        last: dict[int, int] = {}
        for m in batch:
            if m.partition is not None and m.offset is not None:
                last[m.partition] = max(last.get(m.partition, -1), m.offset)
        tps = [TopicPartition(self.settings.topic_events, p, o + 1) for p, o in last.items()]
        try:
            self._consumer.store_offsets(offsets=tps)
        except KafkaException as exc:
            # A partition given away meanwhile: its new owner redoes these events (idempotent).
            ERRORS["offset_store"] += 1
            log.info("offsets not stored (%s); the next owner redoes them", exc)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        owned = sorted(tp.partition for tp in partitions)
        log.info("events partitions assigned: %s of %s", owned, self.settings.topic_events)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs on the consume thread: hold the rebalance until the batch in flight has stored
        # its offsets, so the partitions' new owner starts after it rather than redoing it.
        if not self._idle.wait(REVOKE_WAIT_S):
            log.warning("rebalance went ahead with a batch still in flight")

    def _close(self) -> None:
        self._consumer.close()
