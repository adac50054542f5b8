"""The data path on one screen: events -> state -> candidates -> ranking -> response."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from stream_reco.candidates import Candidate, cooccurrence, popularity
from stream_reco.config import Settings
from stream_reco.events import (
    MAX_DEADLETTER_BYTES,
    CatalogItem,
    Event,
    Rejected,
    Request,
    Tombstone,
    dead_letter,
    decode_catalog,
    decode_event,
    decode_request,
    encode,
)
from stream_reco.ranking import blend, explain, rules
from stream_reco.storage.redis_store import RedisStore

NEIGHBOURS_PER_SOURCE = 50
SEQ_SOURCES = 3  # the latest distinct items whose follow-ups are candidates


@dataclass(frozen=True, slots=True)
class Pick:
    item_id: str
    score: float
    reason: str


async def ingest(
    store: RedisStore, events: Sequence[Event], *, learn: bool = True
) -> tuple[list[Event], list[tuple[Event, str]]]:
    """Apply a batch of valid events: (the new ones, the refused ones with a reason).
    Redeliveries are in neither: they change nothing.

    `learn=False` updates only each session's own state, never the global models: frozen
    evaluation and untrusted traffic use it.
    """
    new: list[Event] = []
    refused: list[tuple[Event, str]] = []
    for e, result in zip(events, await store.apply_events(events, learn=learn), strict=True):
        if isinstance(result, str):
            refused.append((e, result))
        elif result:
            new.append(e)
    return new, refused


async def recommend(
    store: RedisStore,
    settings: Settings,
    session_id: str,
    k: int,
    exclude: Iterable[str] = (),
) -> list[Pick]:
    """Top-k items for a session, each with its reason; never a blocked or unavailable item."""
    session = await store.read_session(session_id)
    block = rules.blocked(session, exclude)
    expand = cooccurrence.sources(session, settings.weights, settings.cooc_window)
    latest = cooccurrence.recent(session, SEQ_SOURCES)
    # Independent reads overlap; enough popular items to fill k even when all else is blocked.
    neighbours, following, popular = await asyncio.gather(
        store.read_neighbours([s.item_id for s, _ in expand], NEIGHBOURS_PER_SOURCE),
        store.read_neighbours([s.item_id for s, _ in latest], NEIGHBOURS_PER_SOURCE, "next"),
        store.read_popular(k + len(block) + 20),
    )

    found: dict[str, Candidate] = {}
    cooccurrence.gather(latest, following, found, feature="seq")
    cooccurrence.gather(expand, neighbours, found)
    popularity.gather(popular, found)
    ranked = [cs for cs in blend.order(list(found.values())) if cs[0].item_id not in block]

    # Metadata only for what can still make the list, plus the sources named in reasons.
    head = ranked[: max(3 * k, k + 50)]
    wanted = {c.item_id for c, _ in head} | {s.item_id for s, _ in (*expand, *latest)}
    meta = await store.read_items(sorted(wanted))
    picks: list[Pick] = []
    for cand, score in head:
        if rules.allowed(cand.item_id, meta, block, settings.require_catalog):
            picks.append(Pick(cand.item_id, round(score, 6), explain.reason(cand, meta)))
            if len(picks) == k:
                break
    return picks


def response(
    session_id: str,
    trigger: str,
    picks: list[Pick],
    started: float,
    request_id: str | None = None,
) -> dict[str, Any]:
    """The `reco-responses` value (docs/contract.md)."""
    return {
        "request_id": request_id,
        "session_id": session_id,
        "trigger": trigger,
        "recommendation_id": uuid.uuid4().hex,
        "items": [{"item_id": p.item_id, "score": p.score, "reason": p.reason} for p in picks],
        "ts": _now_ms(),
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
    }


async def handle_request(store: RedisStore, settings: Settings, req: Request) -> dict[str, Any]:
    started = time.perf_counter()
    picks = await recommend(store, settings, req.session_id, req.k, req.exclude)
    return response(req.session_id, "request", picks, started, req.request_id)


async def handle_events(
    store: RedisStore, settings: Settings, events: Sequence[Event]
) -> tuple[list[dict[str, Any]], list[tuple[Event, str]]]:
    """Ingest a batch, then one fresh push per session that added to cart in it.
    Returns (pushes, refused events with reasons)."""
    started = time.perf_counter()
    new, refused = await ingest(store, events)
    carted = list(dict.fromkeys(e.session_id for e in new if e.type == "add_to_cart"))
    # Sessions are independent: their reads overlap on the connection pool.
    picked = await asyncio.gather(
        *(recommend(store, settings, sid, settings.default_k) for sid in carted)
    )
    pushes = [
        response(sid, "add_to_cart", p, started) for sid, p in zip(carted, picked, strict=True)
    ]
    return pushes, refused


# -- Messages in, messages out: what the Faust agents call (no Faust types here) -------------


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Out:
    topic: str
    key: bytes | None
    value: bytes


def rejected(settings: Settings, m: Message, reason: str) -> Out:
    """A message we will not apply, as a dead letter that keeps its original bytes."""
    value = dead_letter(reason, m.topic, m.partition, m.offset, m.key, m.value, _now_ms())
    key = m.key[:MAX_DEADLETTER_BYTES] if m.key else m.key  # a huge key must not sink it either
    return Out(settings.topic_deadletter, key, value)


async def on_event_messages(
    store: RedisStore, settings: Settings, msgs: Sequence[Message]
) -> list[Out]:
    outs: list[Out] = []
    good: list[Event] = []
    origin: dict[str, Message] = {}  # by event_id, to dead-letter what the store refuses
    latest = _now_ms() + settings.max_future_s * 1000  # wall clock bounds input, never decay
    for m in msgs:
        ev = decode_event(m.value, latest)
        if isinstance(ev, Rejected):
            outs.append(rejected(settings, m, ev.reason))
        else:
            origin[ev.event_id] = m
            good.append(ev)
    pushes, refused = await handle_events(store, settings, good)
    outs += [rejected(settings, origin[e.event_id], why) for e, why in refused]
    outs += [Out(settings.topic_responses, p["session_id"].encode(), encode(p)) for p in pushes]
    return outs


async def on_catalog_messages(
    store: RedisStore, settings: Settings, msgs: Sequence[Message]
) -> list[Out]:
    outs: list[Out] = []
    records: list[CatalogItem | Tombstone] = []
    for m in msgs:
        rec = decode_catalog(m.key, m.value)
        if isinstance(rec, Rejected):
            outs.append(rejected(settings, m, rec.reason))
        else:
            records.append(rec)
    await store.apply_catalog(records)
    return outs


async def on_request_message(store: RedisStore, settings: Settings, m: Message) -> Out:
    req = decode_request(m.value, settings.default_k, settings.max_k)
    if isinstance(req, Rejected):
        return rejected(settings, m, req.reason)
    answer = await handle_request(store, settings, req)
    return Out(settings.topic_responses, req.session_id.encode(), encode(answer))


def _now_ms() -> int:
    return int(time.time() * 1000)
