"""The data path on one screen: events -> state -> candidates -> ranking -> response."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from stream_reco import effects, logs, response
from stream_reco.candidates.collect import POPULAR_EXTRA, collect
from stream_reco.config import Settings
from stream_reco.deadline import within
from stream_reco.errors import ERRORS, StoreError, survived
from stream_reco.events import Event, Request
from stream_reco.experiments import serve
from stream_reco.experiments.assign import Arm
from stream_reco.experiments.store import UNKNOWN_TS
from stream_reco.learning import learn_from, stream_examples
from stream_reco.ranking import blend, rank
from stream_reco.response import Answer
from stream_reco.runtime import Runtime
from stream_reco.storage.apply import Position
from stream_reco.storage.protocol import Store


async def ingest(
    store: Store,
    events: Sequence[Event],
    *,
    learn: bool | Sequence[bool] = True,
    positions: Sequence[Position | None] | None = None,
) -> list[Event]:
    """Apply a batch of valid events; the new ones. Redeliveries are not among them: they
    change nothing (`positions`: where each was read in Kafka, if it was).

    `learn=False` (for all, or per event) updates only each session's own state, never the
    global models: frozen evaluation and untrusted traffic use it; the store adds sessions it
    flags as bots (bots.py).
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
    arm: Arm | None = None,
    user_id: str | None = None,
) -> Answer:
    """Top-k items for a session under the placement's rules, each explained; never a blocked
    or unavailable item, nor (unless the placement allows it) the item in view: `item_id`, the
    page's item, else the session's latest. Answers within `settings.budget_ms`, degrading if
    it must. `only`: rank just these items (POST /rank) instead of gathering candidates.
    `arm`: the experiment's variant it is served under (its ranking configuration).
    `user_id`: the signed-in user asking (else the session's stored one): a short session of a
    returning user starts from their profile."""
    budget = rank.Budget(settings.budget_ms / 1000, time.perf_counter())
    live = live or Runtime()
    a = rank.ask(live, k, exclude, placement, item_id, only)
    current = live.model  # one snapshot: a refresh may swap live.model while we wait
    fixed: Mapping[str, float] = blend.for_settings(settings)
    learned = True  # the model may rank (once ready): a variant may rule it out
    if arm is not None:
        if arm.variant is None:
            return serve.holdout(live, a, arm)
        a, fixed, learned = serve.configure(arm.variant, a, fixed)
    try:
        session, found, seen = await within(
            collect(store, settings, live, session_id, k + POPULAR_EXTRA, fixed, only, a, user_id),
            budget.left(0.8),
            "late_gather_failed",
        )
    except (TimeoutError, StoreError):
        return rank.fallback(live, a)
    ready = learned and live.model_ready(settings, current)
    p = rank.plan(a, session, found, current, fixed, model_ready=ready, late=budget.late)
    depth: int | None = a.first_depth
    while depth is not None:
        head = p.head(depth)
        try:
            wanted = rank.wanted(head, session, a.rules)
            meta = await within(store.read_items(wanted, seen), budget.left(), "late_read_failed")
        except (TimeoutError, StoreError):
            return rank.fallback(live, a)
        head, slots = rank.select(p, a, head, session, meta, settings)
        depth = a.deeper(len(slots), depth, len(p.ranked))  # too few available: look deeper
    answer = rank.answer(p, head, slots, meta)
    # An experiment's attribution window runs in event time, from the session's latest event.
    return answer if arm is None else dataclasses.replace(answer, clock_ms=session.last_ts)


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
    user_id: str | None = None,
    event_ts: int | None = None,
) -> dict[str, Any]:
    """Recommend, build the response, remember what was shown (the learner's next example,
    the experiment's impression). `on_ready` gets the response before the shown list is
    stored: the caller need not wait for that write, which may queue in Redis behind
    ingestion. `item_id`: the page's item; `user_id`: the unit an experiment assigns by;
    `event_id`, `event_ts`: a push's triggering event."""
    started = time.perf_counter()
    arm = serve.arm_for(live.rules, placement, user_id, session_id)  # a hash: no Redis
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
        arm=arm,
        user_id=user_id,
    )
    rid = response.recommendation_id(session_id, request_id, event_id)
    tested = (arm.experiment.name, arm.name) if arm is not None else None
    out = response.response(session_id, trigger, answer, started, request_id, rid, tested)
    if event_id is not None:
        out["event_id"] = event_id
    if on_ready is not None:
        await on_ready(out)
    # A push is as old as its trigger; an answer read without the session (holdout, fallback)
    # has no event time of its own: attribution dates it by the session's next event.
    ts = event_ts if event_ts is not None else (answer.clock_ms or UNKNOWN_TS)
    await effects.remember(store, settings, session_id, rid, answer, arm, ts)
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
        user_id=req.user_id,
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
    applied = await store.apply_events(events, positions=positions)
    new = [e for e, fresh in zip(events, applied, strict=True) if fresh]
    # A session flagged as a bot (bots.py) teaches the learner nothing either.
    taught = [e for n, e in enumerate(events) if applied[n] and not applied.flagged(n)]
    if made and live.fresh:  # a redelivered event taught its lesson the first time
        ids = {e.event_id for e in taught}
        live.fresh.add([x for e, x in made if e.event_id in ids])
    # From here on the events are applied: a failure costs only its own effect (counted and
    # logged), never the batch, which would be redone as duplicates or dead-lettered.
    with survived("feedback_failed", logs.AFTER_APPLY):
        await learn_from(store, settings, taught)
    # One push per session, naming its latest cart addition so a client can match it.
    carts = [e for e in new if e.type == "add_to_cart"]
    carted = {e.session_id: e for e in carts if e.event_id not in no_push}
    ERRORS["late_push"] += sum(1 for e in carts if e.event_id in no_push)

    async def push(sid: str, e: Event) -> dict[str, Any] | None:
        k, trigger, eid = settings.default_k, "add_to_cart", e.event_id
        with survived("push_failed", logs.AFTER_APPLY):
            return await answer_session(
                store,
                settings,
                live,
                sid,
                k,
                trigger=trigger,
                event_id=eid,
                on_ready=on_push,
                user_id=e.user_id,  # the experiment's unit, as for a request
                event_ts=e.ts,
            )
        return None

    # Sessions are independent: their reads overlap on the pool. Each push is sent the moment
    # it is ready (`on_push`); the batch still waits for all of them, so every shown list is
    # stored before the session's next event is applied, and the batch's offsets after its pushes.
    # Profiles and attribution beside the pushes, not before them: a push never waits for them
    # (a bot's events join no profile: they teach nothing).
    running = live.rules.experiments.running
    learned = [not applied.flagged(n) for n in range(len(events))]
    after = [effects.remember_users(store, events, positions, learn=learned)]
    # A flagged session's clicks and purchases credit no variant (skipped, never counted).
    human = [n for n in range(len(events)) if not applied.flagged(n)]
    kept = [events[n] for n in human]
    at = [positions[n] for n in human] if positions is not None else None
    after += [effects.attribute(store, running, kept, at)] if running else []
    done = await asyncio.gather(*(push(sid, e) for sid, e in carted.items()), *after)
    pushes = done[: len(carted)]
    return [] if on_push is not None else [p for p in pushes if p is not None]
