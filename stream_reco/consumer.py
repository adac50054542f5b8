"""Topics consumed with librdkafka: batches in, handled in order, offsets stored after them."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from stream_reco import logs, positions
from stream_reco.config import Settings
from stream_reco.errors import ERRORS, StackError, StoreRewound
from stream_reco.kafka_io import QUIET, REFUSED, Sink
from stream_reco.messages import Message, Out
from stream_reco.security import kafka_options

log = logging.getLogger(__name__)
Handle = Callable[[list[Message]], Awaitable[list[Out]]]
# How long a rebalance may wait for the batch in flight before giving its partitions away
# (then the new owner redoes the rest: effects are idempotent).
REVOKE_WAIT_S = 30.0
# Unordered messages handled at once: enough to overlap Redis round trips, few enough that a
# surge queues here, in arrival order, rather than in the Redis pool and its timeouts.
MAX_IN_FLIGHT = 32
POLL_S = 0.1  # how long one fetch blocks when the topic is quiet: bounds how late stop() acts
# How long a group waits for a member that stopped heartbeating before giving its partitions
# to the others: after a crash, a restarted worker waits this long to be assigned. Heartbeats
# come from librdkafka's own thread (and, for Faust's group, from a task every 3 s), so a
# busy event loop does not make a live worker look dead; Kafka's default is 45 s.
SESSION_TIMEOUT_S = 10.0
LAG_EVERY_S = 1.0  # how often the fetching thread re-measures lag (read by /metrics)
# Lag measured while a batch holds the fetching back asks the brokers (the cached watermarks
# move only with fetches): bounded per partition, so the batch's end is noticed soon after.
WATERMARK_TIMEOUT_S = 0.5
# While the brokers were reported down, how often one metadata request checks they answer
# again: messages and rebalances clear the trouble too, but a quiet topic brings neither.
RECHECK_S = 1.0


class TopicLoop:
    """Reads one topic with librdkafka (confluent-kafka) rather than Faust, whose per-message
    stream machinery costs several times what applying an event or answering a request does.

    `ordered` (events): one batch is handled at a time, so a session's messages (one
    partition, by key) take effect in order; while batch N is handled, batch N+1 is fetched.
    Unordered (requests, independent of each other): each message is handled as its own task
    as soon as it arrives, so no answer waits for another's batch. A batch is whatever has
    arrived by then, up to `batch_max`: nothing waits to fill a batch, and under load batches
    grow on their own. An offset is stored only after its batch was handled and its outputs
    handed to the sink, and librdkafka commits stored offsets every second and on rebalance:
    at-least-once, and the store's offset marks make a redelivered event change nothing.
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        topic: str,
        group: str,
        handle: Handle,
        sink: Sink,
        *,
        start: str = "earliest",
        ordered: bool = True,
        lookback_ms: int | None = None,
        resume: positions.Resume | None = None,
    ) -> None:
        self.settings, self.name, self.topic = settings, name, topic
        # A partition the group has no offset for begins this far back in time (not at
        # `start`): requests sent while a new worker was still joining are answered.
        self.lookback_ms = lookback_ms
        # Where the store says each partition's events were applied up to: a partition taken
        # over starts there, not at the group's commit (which a restored store may be behind).
        self.resume = resume
        # Set when this consumer must be positioned from the store before anything more is
        # handled: "lost" (the store lost writes it had acknowledged) or "unknown" (the
        # store could not say where at assignment).
        self._reposition: str | None = None
        self.handle, self.sink = handle, sink
        self.consumed = 0
        # Partition -> messages behind its end, measured on the fetching thread (a scrape only
        # reads it: the consumer's calls wait for a poll, never worth it on the event loop).
        self.lag: dict[int, int] = {}
        self._stored: dict[int, int] = {}  # partition -> the next offset stored, this owner
        self._lag_due = 0.0
        self._recheck_due = 0.0
        self._stop = threading.Event()
        self._idle = threading.Event()  # set while no batch is in flight
        self._idle.set()
        self._not_fetching = threading.Event()  # set while no poll() runs on the fetch thread
        self._not_fetching.set()
        self._owned: frozenset[int] = frozenset()  # partitions assigned now
        self._done: dict[int, int] = {}  # partition -> last handled offset, not yet stored
        self._done_lock = threading.Lock()
        # Unordered topics (requests): every message is its own task, answered as soon as a
        # core is free; an offset is stored once every message before it is done too.
        self.ordered = ordered
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[int, set[int]] = {}  # partition -> offsets in flight
        self._seen: dict[int, int] = {}  # partition -> highest offset taken on
        # Bumped by every rebalance: a task finishing after one keeps its hands off the
        # bookkeeping of partitions that may have moved (and come back) meanwhile.
        self._generation = 0
        self._counted = 0  # the generation _pending and _seen belong to
        self.trouble = logs.Trouble(f"Kafka consumer of {topic}")
        self._consumer = Consumer(
            {
                **kafka_options(settings),
                "group.id": group,
                "auto.offset.reset": start,  # where a group without offsets begins
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,  # stored by us, after the effects
                "auto.commit.interval.ms": 1000,
                "session.timeout.ms": int(SESSION_TIMEOUT_S * 1000),
                "fetch.wait.max.ms": max(settings.batch_within_ms, 1),
                "error_cb": self._client_error,
                **QUIET,
            }
        )

    async def run(self) -> None:
        """Consume until `stop()` (or cancellation); closes the consumer on the way out,
        committing what was stored, once no fetch is running on its thread."""
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        in_flight: asyncio.Task[None] | None = None
        try:
            while not self._stop.is_set():
                batch = self._messages(await asyncio.to_thread(self._fetch))
                self.sink.poll()
                if not self.ordered:
                    await self._dispatch(batch)
                    continue
                if in_flight is not None:
                    await self._wait_measuring({in_flight})  # batch N before N+1: in order
                    await in_flight  # done: its exception, if any, raised here
                    in_flight = None
                if self._reposition is not None:  # what was fetched is read again
                    batch = []
                    await asyncio.to_thread(self._rewind)
                if batch:
                    self._idle.clear()
                    in_flight = asyncio.create_task(self._handle(batch))
            if in_flight is not None:
                await in_flight
            if self._tasks:  # a clean stop lets the requests in hand finish (capped by the app)
                await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self._stop.set()
            left = {t for t in (in_flight, *self._tasks) if t is not None and not t.done()}
            for task in left:
                task.cancel()  # cancelled, not stored: redelivered to the next owner
            await asyncio.gather(*left, return_exceptions=True)
            # Closing while the fetching thread is inside poll() can crash librdkafka.
            await asyncio.to_thread(self._not_fetching.wait, REVOKE_WAIT_S + POLL_S)
            await asyncio.to_thread(self._close)

    def stop(self) -> None:
        self._stop.set()

    async def _wait_measuring(self, tasks: set[asyncio.Task[None]]) -> None:
        """Until one of `tasks` is done, measuring lag every LAG_EVERY_S meanwhile: no fetch
        runs while a batch holds the loop (a Redis outage waited out), yet its lag grows."""
        while True:
            done, _ = await asyncio.wait(
                tasks, timeout=LAG_EVERY_S, return_when=asyncio.FIRST_COMPLETED
            )
            if done:
                return
            await asyncio.to_thread(self._measure_lag, fresh=True)

    def _close(self) -> None:
        self._store_done()
        self._consumer.close()  # commits what is stored

    def _fetch(self) -> list[Any]:
        """Store the offsets of the batches handled since the last fetch, then block until one
        message arrives (or POLL_S passes) and take what else is there. Runs on its own
        thread: the consumer's calls wait for each other, so even storing an offset from the
        event loop could stall every answer until a poll() returns."""
        self._not_fetching.clear()
        try:
            self._store_done()
            self._measure_lag()
            self._recheck()
            first = self._consumer.poll(POLL_S)
            if first is None:
                return []
            return [first, *self._consumer.consume(self.settings.batch_max - 1, 0)]
        finally:
            self._not_fetching.set()

    def _messages(self, raw: list[Any]) -> list[Message]:
        out: list[Message] = []
        owned = self._owned
        for m in raw:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise StackError(f"consuming {self.topic}: fatal Kafka error: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    ERRORS["kafka_consume"] += 1
                    self.trouble.failed(err.name(), err)
                continue
            if m.partition() not in owned:
                continue  # fetched before a rebalance gave its partition to another worker
            kind, ts = m.timestamp()
            sent = ts if kind != TIMESTAMP_NOT_AVAILABLE else None
            out.append(Message(m.topic(), m.partition(), m.offset(), m.key(), m.value(), sent))
        if out:
            self.trouble.ok()
        self.consumed += len(out)
        return out

    async def _handle(self, batch: list[Message]) -> None:
        try:
            try:
                outs = await self.handle(batch)
            except StoreRewound as exc:
                if self.resume is None:
                    raise
                ERRORS["store_rewound"] += 1
                log.warning("%s: %s; reading again from the store's offsets", self.name, exc)
                self._reposition = "lost"  # this batch is not done: nothing of it is stored
                return
            await self.sink.send(outs)
            with self._done_lock:  # handled: the fetching thread stores these offsets next
                for m in batch:
                    if m.partition is not None and m.offset is not None:
                        self._done[m.partition] = max(self._done.get(m.partition, -1), m.offset)
        finally:
            self._idle.set()

    async def _dispatch(self, batch: list[Message]) -> None:
        """Start one task per message; at most MAX_IN_FLIGHT at once (then wait for one)."""
        for m in batch:
            while len(self._tasks) >= MAX_IN_FLIGHT:
                await self._wait_measuring(self._tasks)
            if self._counted != self._generation:  # a rebalance: start the books afresh
                self._pending, self._seen, self._counted = {}, {}, self._generation
            p, o = m.partition or 0, m.offset or 0
            self._pending.setdefault(p, set()).add(o)
            self._seen[p] = max(self._seen.get(p, -1), o)
            self._idle.clear()
            task = asyncio.create_task(self._handle_one(m, p, o, self._generation))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _handle_one(self, m: Message, p: int, o: int, generation: int) -> None:
        try:
            await self.sink.send(await self.handle([m]))
        except Exception:
            # Not handled: its offset stays pending, so nothing after it is stored either and
            # the message is redelivered to the next owner.
            ERRORS["internal"] += 1
            log.exception("handling %s offset %s failed", self.topic, o)
            return
        finally:
            if not any(self._pending.values()) or generation != self._generation:
                self._idle.set()
        if generation != self._generation:
            return  # the partition may have moved since: its books start afresh
        pending = self._pending[p]
        pending.discard(o)
        safe = min(pending) - 1 if pending else self._seen[p]  # all before it are done
        with self._done_lock:
            self._done[p] = max(self._done.get(p, -1), safe)
        if not any(self._pending.values()):
            self._idle.set()

    def _store_done(self) -> None:
        """Store the offsets past every handled message (on the fetching thread)."""
        with self._done_lock:
            done, self._done = self._done, {}
        if not done:
            return
        tps = [TopicPartition(self.topic, p, o + 1) for p, o in done.items()]
        try:
            self._consumer.store_offsets(offsets=tps)
            self._stored.update((tp.partition, tp.offset) for tp in tps)
        except KafkaException as exc:
            # A partition given away meanwhile: its new owner redoes these messages.
            ERRORS["offset_store"] += 1
            log.info("offsets not stored (%s); the next owner redoes them", exc)

    def _measure_lag(self, fresh: bool = False) -> None:
        """Each owned partition's high watermark minus where this loop stands: the offset
        stored after handling, else the fetch position. The watermark is the last fetch's (no
        broker call), or with `fresh` the brokers' (when no fetch runs to update it)."""
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + LAG_EVERY_S
        owned = [TopicPartition(self.topic, p) for p in sorted(self._owned)]
        lag: dict[int, int] = {}
        try:
            at = self._consumer.position(owned) if owned else []
            for tp in at:
                if fresh:
                    _, high = self._consumer.get_watermark_offsets(tp, WATERMARK_TIMEOUT_S)
                else:
                    _, high = self._consumer.get_watermark_offsets(tp, cached=True)
                done = self._stored.get(tp.partition, tp.offset)
                if high >= 0 and done >= 0:
                    lag[tp.partition] = max(high - done, 0)
        except KafkaException as exc:  # unknown for a moment (a rebalance): the gauge waits
            log.debug("lag of %s not measured: %s", self.topic, exc)
            return
        self.lag = lag  # replaced whole: a scrape never sees it half-built

    def _recheck(self) -> None:
        """While failing, once per RECHECK_S: one metadata request (on the fetching thread);
        answered, the brokers are back and the loop is no longer failing (readiness)."""
        if not self.trouble.failing or time.monotonic() < self._recheck_due:
            return
        self._recheck_due = time.monotonic() + RECHECK_S
        try:
            self._consumer.list_topics(self.topic, timeout=RECHECK_S)
        except KafkaException as exc:
            log.debug("brokers of %s still unreachable: %s", self.topic, exc)
            return
        self.trouble.ok()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.lookback_ms is not None:
            positions.look_back(consumer, partitions, self.lookback_ms, self.name)
        if self.resume is not None:
            if not positions.from_store(consumer, partitions, self.resume, self.name):
                self._reposition = self._reposition or "unknown"
        self._generation += 1
        for tp in partitions:  # stored by an earlier ownership: the group may have moved on
            self._stored.pop(tp.partition, None)
        self._owned = frozenset(tp.partition for tp in partitions)  # replaced whole: atomic
        owned = sorted(self._owned)
        log.info("%s partitions assigned: %s of %s", self.name, owned, self.topic)
        self.trouble.ok()  # joined the group: the brokers answer again

    def _rewind(self) -> None:
        # Not while a fetch runs: the consumer's calls wait for each other anyway.
        self._not_fetching.wait()
        why, self._reposition = self._reposition, None
        with self._done_lock:
            self._done = {}
        if self.resume is not None:
            lost = why == "lost"
            positions.rewind(
                self._consumer, self.topic, self.resume, self.name, lost=lost, stop=self._stop
            )

    def _client_error(self, err: KafkaError) -> None:
        """librdkafka's client-wide errors (on the fetching thread): all brokers down, or a
        fatal error, is trouble; a single dropped connection is a state it recovers from."""
        # REFUSED: e.g. the user deleted, its password changed, the CA no longer trusted.
        if err.fatal() or err.code() in (KafkaError._ALL_BROKERS_DOWN, *REFUSED):
            ERRORS["kafka_consume"] += 1
            self.trouble.failed(err.name(), err)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Runs on the fetching thread: hold the rebalance until the batch in flight has stored
        # its offsets, so the partitions' new owner starts after it rather than redoing it.
        self._owned = frozenset()
        # Closing: what is still pending is redelivered to the next owner; nothing to wait for.
        if not self._stop.is_set() and not self._idle.wait(REVOKE_WAIT_S):
            log.warning("rebalance went ahead with a batch of %s still in flight", self.topic)
        self._store_done()
        self._generation += 1  # committed with the revocation, so the new owner starts after it
