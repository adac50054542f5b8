"""Kafka messages in, messages out: what the Faust agents call (no Faust types here)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import orjson

from stream_reco import logs, privacy, runtime
from stream_reco.candidates import vectors
from stream_reco.config import ENV, Settings
from stream_reco.errors import ERRORS, ConfigError, StoreError
from stream_reco.events import (
    MAX_DEADLETTER_BYTES,
    CatalogItem,
    Event,
    Rejected,
    Tombstone,
    dead_letter,
    decode_catalog,
    decode_event,
    decode_request,
    encode,
)
from stream_reco.experiments.config import KEY_PREFIX, added_conflict
from stream_reco.pipeline import handle_events, handle_request
from stream_reco.ranking import policy
from stream_reco.runtime import Runtime
from stream_reco.storage.apply import Position
from stream_reco.storage.protocol import Store
from stream_reco.storage.redis_store import RedisStore
from stream_reco.storage.vector_log import Change

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    sent_ms: int | None = None  # Kafka's timestamp: when the producer (or broker) stamped it


@dataclass(frozen=True, slots=True)
class Out:
    topic: str
    key: bytes | None
    value: bytes


def rejected(settings: Settings, m: Message, reason: str, kind: str | None = None) -> Out:
    """A message we will not apply, as a dead letter that keeps its original bytes; counted
    for the log's summary under `kind` (default: the reason, its values masked when written)."""
    logs.DEAD_LETTERS.add(m.topic, kind or reason)
    value = dead_letter(reason, m.topic, m.partition, m.offset, m.key, m.value, _now_ms())
    key = m.key[:MAX_DEADLETTER_BYTES] if m.key else m.key  # a huge key must not sink it either
    return Out(settings.topic_deadletter, key, value)


def by_partition(msgs: Sequence[Message]) -> list[list[Message]]:
    """A batch cut per Kafka partition, each in its order: sessions (the partition key) never
    span two, so the parts can be handled side by side, one's Redis work overlapping the
    next one's Python work."""
    parts: dict[int | None, list[Message]] = {}
    for m in msgs:
        parts.setdefault(m.partition, []).append(m)
    return list(parts.values())


Emit = Callable[[Sequence["Out"]], Awaitable[None]]


async def on_event_messages(
    store: Store,
    settings: Settings,
    msgs: Sequence[Message],
    live: Runtime | None = None,
    emit: Emit | None = None,
    stream: str | None = None,
) -> list[Out]:
    """Decode, apply and push for a batch of events; returns the outputs (with `emit`, pushes
    go there as each is ready instead of waiting for the batch's slowest). `stream`: the
    events topic by name and id (kafka_io.stream_name): the store then knows a redelivery by
    its offset, whenever it comes."""
    outs: list[Out] = []
    good: list[Event] = []
    positions: list[Position | None] = []
    now = _now_ms()
    latest = now + settings.max_future_s * 1000  # wall clock bounds input, never decay
    late: set[str] = set()  # cart additions that waited too long in Kafka to be worth a push
    for m in msgs:
        ev = decode_event(m.value, latest, settings.user_id_key)
        if isinstance(ev, Rejected):
            outs.append(rejected(settings, m, ev.reason))
            continue
        good.append(ev)
        positions.append(_position(stream, m))
        if _waited(m, now) > settings.answer_max_lag_ms:
            late.add(ev.event_id)

    def out(p: dict[str, object]) -> Out:
        return Out(settings.topic_responses, str(p["session_id"]).encode(), encode(p))

    on_push = None
    if emit is not None:
        send = emit

        async def on_push(p: dict[str, object]) -> None:
            await send([out(p)])

    pushes = await handle_events(store, settings, good, live, late, on_push, positions)
    outs += [out(p) for p in pushes]
    return outs


def _position(stream: str | None, m: Message) -> Position | None:
    if stream is None or m.partition is None or m.offset is None:
        return None
    return Position(stream, m.partition, m.offset)


async def on_catalog_messages(
    store: Store, settings: Settings, msgs: Sequence[Message]
) -> list[Out]:
    outs: list[Out] = []
    decoded: list[tuple[Message, CatalogItem | Tombstone]] = []
    for m in msgs:
        rec = decode_catalog(m.key, m.value)
        if isinstance(rec, Rejected):
            outs.append(rejected(settings, m, rec.reason))
        else:
            decoded.append((m, rec))
    # Each item's vector for every worker's ANN index: a new item is similar to others the
    # moment its record is processed, before anyone clicked it. Computed first (CPU work, off
    # the event loop), so a record whose vector cannot be made is refused whole, not half-applied.
    made = await asyncio.to_thread(_vectors, [rec for _, rec in decoded])
    records: list[CatalogItem | Tombstone] = []
    changes: list[Change] = []
    for (m, rec), change in zip(decoded, made, strict=True):
        if isinstance(change, str):
            outs.append(rejected(settings, m, change))
        else:
            records.append(rec)
            changes.append(change)
    await store.apply_catalog(records)
    if changes:
        await store.vectors.publish_many(changes)
    return outs


async def on_request_message(
    store: Store,
    settings: Settings,
    m: Message,
    live: Runtime | None = None,
    emit: Emit | None = None,
) -> Out | None:
    """The answer to one request (or its dead letter); with `emit`, the answer goes there as
    soon as it is built, before the shown list is stored, and None is returned."""
    waited = _waited(m, _now_ms())
    if waited > settings.answer_max_lag_ms:
        # A backlog (a restart, an overload) is not answered oldest first: its callers have
        # given up, and answering them would only delay the requests still wanted.
        ERRORS["late_request"] += 1
        why = f"request waited {waited} ms in Kafka (over {ENV['answer_max_lag_ms']}"
        late = f"{why}={settings.answer_max_lag_ms}): not answered"
        return rejected(settings, m, late, kind="request waited too long in Kafka: not answered")
    req = decode_request(m.value, settings.default_k, settings.max_k, settings.user_id_key)
    if isinstance(req, Rejected):
        return rejected(settings, m, req.reason)
    key = req.session_id.encode()
    if emit is None:
        return Out(
            settings.topic_responses, key, encode(await handle_request(store, settings, req, live))
        )
    send = emit

    async def ready(doc: dict[str, object]) -> None:
        await send([Out(settings.topic_responses, key, encode(doc))])

    await handle_request(store, settings, req, live, on_ready=ready)
    return None


async def on_config_messages(
    store: Store, settings: Settings, msgs: Sequence[Message]
) -> list[Out]:
    """Rules updates (and experiments) from `reco-config` into the shared rules document every
    worker reloads. Its single partition has one consumer, so this read-modify-write has no
    rival."""
    outs: list[Out] = []
    applied: list[tuple[str, list[str] | None]] = []  # placement, the fields it now sets
    doc = await store.read_published(runtime.RULES)
    rules = runtime.rules_from(_base_rules(settings), doc)  # what the workers will run
    for m in msgs:
        update = policy.decode_config(m.key, m.value)
        if not isinstance(update, Rejected):
            after = rules.apply(update)
            # Only a conflict this update adds or takes part in (e.g. a second experiment on
            # one placement): one the rules already had must not block every later update.
            problem = added_conflict(rules.defined(), after.defined(), _experiment(update.key))
            update = Rejected(f"invalid rules message: {problem}") if problem else update
            rules = rules if problem else after
        if isinstance(update, Rejected):
            outs.append(rejected(settings, m, update.reason))
            continue
        # Stored as the message said it (plain JSON, checked above); workers decode it again.
        overrides = None if update.overrides is None else orjson.loads(m.value or b"null")
        doc = runtime.store_update(doc, update.key, overrides)
        applied.append((update.key, None if update.overrides is None else sorted(overrides)))
    if doc is not None:
        await store.publish(runtime.RULES, doc)
    for key, fields in applied:  # field names only: values may name items
        what = "override removed" if fields is None else f"sets {', '.join(fields) or 'nothing'}"
        log.info("rules update from %s applied: %r %s", settings.topic_config, key, what)
    return outs


async def on_privacy_messages(
    store: Store, settings: Settings, msgs: Sequence[Message]
) -> list[Out]:
    """Forget requests from `reco-privacy`, each applied in order (privacy.py); the audit
    record goes to the audit stream (once per offset) and the log, an invalid request to the
    dead letters. A Redis outage raises StoreError: the batch is held, not dead-lettered."""
    if not isinstance(store, RedisStore):
        raise StoreError("forget requests need the Redis store itself, not a wrapper of it")
    outs: list[Out] = []
    for m in msgs:
        req = privacy.decode_forget(m.key, m.value, hashed=bool(settings.user_id_key))
        if isinstance(req, Rejected):
            outs.append(rejected(settings, m, req.reason))
            continue
        at = None
        if m.partition is not None and m.offset is not None:
            at = privacy.At(f"{m.topic}:{m.partition}", m.offset)
            if await privacy.done_before(store, at):
                continue  # a redone batch: forgotten and audited already
        # What the subject's keys name now (the one-second part); the scans of the whole
        # keyspace in small steps in the background, so answers are not held behind them.
        await privacy.forget(store, settings, req, scan=False, later=True, at=at)
    return outs


def _experiment(key: str) -> str | None:
    """The experiment a reco-config key names, None for a policy key."""
    return key.removeprefix(KEY_PREFIX) if key.startswith(KEY_PREFIX) else None


def _base_rules(settings: Settings) -> policy.RulesConfig:
    """The rules file the workers started with: experiments in it count when an update's are
    checked against the running ones. A file unreadable now was readable at start: checked
    against the topic's entries alone then."""
    if not settings.rules_file:
        return policy.RulesConfig()
    try:
        return policy.load_file(settings.rules_file)
    except ConfigError:
        return policy.RulesConfig()


def _vectors(records: Sequence[CatalogItem | Tombstone]) -> list[Change | str]:
    """Each record's vector change, or why it has none (e.g. an embedding too large for
    float32)."""
    out: list[Change | str] = []
    for r in records:
        if isinstance(r, Tombstone):
            out.append((r.item_id, None))
            continue
        try:
            out.append((r.item_id, vectors.item_vector(r, r.embedding or None)))
        except ValueError as exc:
            out.append(f"unusable embedding: {exc}")
    return out


def _waited(m: Message, now_ms: int) -> int:
    """How long a message waited in Kafka before we read it (0 without a Kafka timestamp)."""
    return 0 if m.sent_ms is None else now_ms - m.sent_ms


def _now_ms() -> int:
    return int(time.time() * 1000)
