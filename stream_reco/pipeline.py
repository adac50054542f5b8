"""The data path on one screen: events -> state -> candidates -> ranking -> response."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from stream_reco import logs, response
from stream_reco.candidates import (
    Candidate,
    cooccurrence,
    newest,
    popularity,
    revisit,
    sessions,
    similar,
)
from stream_reco.config import Settings
from stream_reco.errors import ERRORS, StoreError, survived
from stream_reco.events import CatalogItem, Event, Request
from stream_reco.ranking import blend, context, examples, feedback, rank
from stream_reco.ranking import rules as rules_
from stream_reco.response import Answer
from stream_reco.runtime import Runtime
from stream_reco.state import SessionView
from stream_reco.storage.apply import Position
from stream_reco.storage.protocol import Store

SEQ_SOURCES = 3  # the latest distinct items whose follow-ups are candidates
# Request cost, cut where measured free: 3 co-occurrence lists and 20 spare popular items gave
# the same HR/MRR as 5 and 40 on all three data sets (docs/evaluation.md, "Latency").
COOC_SOURCES = 3  # at most this many session items' co-occurrence lists are read
POPULAR_EXTRA = 20  # popular candidates beyond k: room for blocked and unavailable ones


async def ingest(
    store: Store,
    events: Sequence[Event],
    *,
    learn: bool = True,
    positions: Sequence[Position | None] | None = None,
) -> list[Event]:
    """Apply a batch of valid events; the new ones. Redeliveries are not among them: they
    change nothing (`positions`: where each was read in Kafka, if it was).

    `learn=False` updates only each session's own state, never the global models: frozen
    evaluation and untrusted traffic use it.
    """
    applied = await store.apply_events(events, learn=learn, positions=positions)
    return [e for e, new in zip(events, applied, strict=True) if new]


async def recommend(
    store: Store,
    settings: Settings,
    session_id: str,
    k: int,
    exclude: Iterable[str] = (),
    *,
    placement: str | None = None,
    live: Runtime | None = None,
    only: Sequence[str] | None = None,
    item_id: str | None = None,
) -> Answer:
    """Top-k items for a session under the placement's rules, each explained; never a blocked
    or unavailable item, nor (unless the placement allows it) the item in view: `item_id`, the
    page's item, else the session's latest. Answers within `settings.budget_ms`, degrading if
    it must. `only`: rank just these items (POST /rank) instead of gathering candidates."""
    budget = rank.Budget(settings.budget_ms / 1000, time.perf_counter())
    live = live or Runtime()
    a = rank.ask(live, k, exclude, placement, item_id, only)
    current = live.model  # one snapshot: a refresh may swap live.model while we wait
    fixed = blend.for_settings(settings)
    try:  # asyncio.timeout, not wait_for: no extra task per step on the hot path
        async with asyncio.timeout(budget.left(0.8)):
            session, found, seen = await _candidates(
                store, settings, live, session_id, k + POPULAR_EXTRA, fixed, only, a
            )
    except (TimeoutError, StoreError):
        return rank.fallback(live, a)
    ready = live.model_ready(settings, current)
    p = rank.plan(a, session, found, current, fixed, model_ready=ready, late=budget.late)
    depth: int | None = a.first_depth
    while depth is not None:
        head = p.head(depth)
        try:
            async with asyncio.timeout(budget.left()):
                meta = await store.read_items(rank.wanted(head, session, a.rules), seen)
        except (TimeoutError, StoreError):
            return rank.fallback(live, a)
        head, slots = rank.select(p, a, head, session, meta, settings)
        depth = a.deeper(len(slots), depth, len(p.ranked))  # too few available: look deeper
    return rank.answer(p, head, slots, meta)


async def _candidates(
    store: Store,
    settings: Settings,
    live: Runtime,
    session_id: str,
    n_popular: int,
    fixed: Mapping[str, float],
    only: Sequence[str] | None,
    a: rank.Ask,
) -> tuple[SessionView, dict[str, Candidate], str]:
    """The session and every source's candidates for it, per-source scores kept as features;
    with `only`, just those items (their features where a source found them). A source whose
    weight is 0 in the `fixed` blend is not even read. `a`: the request's rules and blocked
    items, which only the cold-start source needs (it fills what is left to show)."""
    cooc = min(settings.cooc_window, COOC_SOURCES)
    got = await store.gather(
        session_id,
        n_popular,
        cooc if fixed["cooc"] > 0 else 0,
        SEQ_SOURCES if fixed["seq"] > 0 else 0,
        sknn=fixed["sknn"] > 0,
        trending=fixed["trending"] > 0,
    )
    session = got.session
    expand = cooccurrence.sources(session, settings.weights, cooc)
    latest = cooccurrence.recent(session, SEQ_SOURCES)

    found: dict[str, Candidate] = {}
    cooccurrence.gather(latest, got.next, found, feature="seq")
    cooccurrence.gather(expand, got.co, found)
    sessions.gather(got.votes, found)
    similar.gather(live.index if fixed["similar"] > 0 else None, latest, found)
    revisit.gather(session, found)
    popularity.gather_trending(got.trending, found)  # what the shopper is browsing now
    popularity.gather(got.popular, found)
    # Cold start: only when behaviour cannot fill the list, and never for /rank's own items.
    if only is None and fixed.get(newest.FEATURE, 0.0) > 0 and newest.short(got.popular, n_popular):
        taken = rank.blocked(a, session)

        def keep(item_id: str, info: CatalogItem) -> bool:
            return item_id not in taken and not rules_.shelved(info, a.rules)

        await newest.gather(store, got.catalog_at, n_popular, found, keep)
    if only is not None:
        found = {i: found.get(i) or Candidate(i) for i in dict.fromkeys(only)}
    return session, found, got.catalog_at


async def answer_session(
    store: Store,
    settings: Settings,
    live: Runtime,
    session_id: str,
    k: int,
    *,
    trigger: str = "request",
    request_id: str | None = None,
    exclude: Iterable[str] = (),
    placement: str | None = None,
    only: Sequence[str] | None = None,
    event_id: str | None = None,
    on_ready: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    item_id: str | None = None,
) -> dict[str, Any]:
    """Recommend, build the response, remember what was shown (the learner's next example).
    `on_ready` gets the response before the shown list is stored: the caller need not wait
    for that write, which may queue in Redis behind ingestion. `item_id`: the page's item."""
    started = time.perf_counter()
    answer = await recommend(
        store,
        settings,
        session_id,
        k,
        exclude,
        placement=placement,
        live=live,
        only=only,
        item_id=item_id,
    )
    rid = uuid.uuid4().hex
    out = response.response(session_id, trigger, answer, started, request_id, rid)
    if event_id is not None:
        out["event_id"] = event_id
    if on_ready is not None:
        await on_ready(out)
    if answer.shown:
        doc = feedback.shown(rid, answer.shown)
        try:  # feedback is best effort: never worth delaying or failing the answer for
            async with asyncio.timeout(settings.budget_ms / 1000):
                await store.remember_shown(session_id, doc)
        except (TimeoutError, StoreError):
            ERRORS["shown_not_stored"] += 1
    return out


async def handle_request(
    store: Store,
    settings: Settings,
    req: Request,
    live: Runtime | None = None,
    on_ready: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Answer one request (its `item_id` is the page's item)."""
    return await answer_session(
        store,
        settings,
        live or Runtime(),
        req.session_id,
        req.k,
        request_id=req.request_id,
        exclude=req.exclude,
        placement=req.placement,
        on_ready=on_ready,
        item_id=req.item_id,
    )


async def handle_events(
    store: Store,
    settings: Settings,
    events: Sequence[Event],
    live: Runtime | None = None,
    no_push: Collection[str] = (),
    on_push: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    positions: Sequence[Position | None] | None = None,
) -> list[dict[str, Any]]:
    """Ingest a batch, turn each session's next event into feedback on what it was shown,
    then one fresh push per session that added to cart (not for the event ids in `no_push`:
    those the shopper has long moved on from). Returns the pushes; with
    `on_push`, each push goes there the moment it is ready instead, not after the slowest.
    `positions`: where each event was read in Kafka (a redelivery is known by it)."""
    live = live or Runtime()
    picked = live.fresh.pick(events) if live.fresh else []
    made = await stream_examples(store, settings, live, picked)  # before the events change them
    new = await ingest(store, events, positions=positions)
    if made and live.fresh:  # a redelivered event taught its lesson the first time
        applied = {e.event_id for e in new}
        live.fresh.add([x for e, x in made if e.event_id in applied])
    # From here on the events are applied: a failure costs only its own effect (counted and
    # logged), never the batch, which would be redone as duplicates or dead-lettered.
    with survived("feedback_failed", logs.AFTER_APPLY):
        await learn_from(store, settings, new)
    # One push per session, naming its latest cart addition so a client can match it.
    carts = [e for e in new if e.type == "add_to_cart"]
    carted = {e.session_id: e.event_id for e in carts if e.event_id not in no_push}
    ERRORS["late_push"] += sum(1 for e in carts if e.event_id in no_push)

    async def push(sid: str, eid: str) -> dict[str, Any] | None:
        k, trigger = settings.default_k, "add_to_cart"
        with survived("push_failed", logs.AFTER_APPLY):
            return await answer_session(
                store, settings, live, sid, k, trigger=trigger, event_id=eid, on_ready=on_push
            )
        return None

    # Sessions are independent: their reads overlap on the pool. Each push is sent the moment
    # it is ready (`on_push`); the batch still waits for all of them, so every shown list is
    # stored before the session's next event is applied, and the batch's offsets after its pushes.
    pushes = await asyncio.gather(*(push(sid, eid) for sid, eid in carted.items()))
    return [] if on_push is not None else [p for p in pushes if p is not None]


async def stream_examples(
    store: Store,
    settings: Settings,
    live: Runtime,
    events: Sequence[Event],
    *,
    timed: bool = True,
) -> list[tuple[Event, feedback.Example]]:
    """The learner's examples from the stream itself: what a request for each event's session
    would have ranked just before the event (the serving code's candidates and features, the
    head with its catalogue context), labelled by the event's item. Call before the events are
    applied. Best effort, within the time budget unless not `timed` (a replay, where nobody
    waits): a failure costs the examples, never the events (counted in
    `stream_example_failed`)."""
    fixed = blend.for_settings(settings)
    a = rank.Ask(settings.default_k, rank.LEARNING, frozenset())

    async def one(e: Event) -> feedback.Example | None:
        n, sid = a.k + POPULAR_EXTRA, e.session_id
        session, found, seen = await _candidates(store, settings, live, sid, n, fixed, None, a)
        if not session.events:
            return None  # a session's first event: nothing came before it to rank from
        p = rank.plan(
            a, session, found, live.model, fixed, model_ready=False, late=False, derive=True
        )
        head = p.head(a.first_depth)
        if seen:  # a catalogue exists: the head gets its context, as when serving
            context.add(
                (c for c, _ in head),
                session,
                await store.read_items(rank.wanted(head, session, a.rules), seen),
            )
        return examples.from_ranked(p.ranked, e.item_id, p.learned)

    if not events:
        return []
    try:
        async with asyncio.timeout(settings.budget_ms / 1000 if timed else None):
            made = await asyncio.gather(*(one(e) for e in events))
    except Exception:  # examples are worth less than the events they come before
        ERRORS["stream_example_failed"] += 1
        return []
    return [(e, x) for e, x in zip(events, made, strict=True) if x is not None]


async def learn_from(store: Store, settings: Settings, new: Sequence[Event]) -> None:
    """Each session's first new event answers what it was last shown: queue the example."""
    first: dict[str, Event] = {}
    for e in new:
        first.setdefault(e.session_id, e)
    shown = await store.take_shown(list(first))
    made = [
        feedback.example(raw, first[sid].item_id, first[sid].recommendation_id)
        for sid, raw in shown.items()
    ]
    await store.push_examples([x.to_json() for x in made if x], settings.examples_max)
