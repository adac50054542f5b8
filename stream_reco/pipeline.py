"""The data path on one screen: events -> state -> candidates -> ranking -> response."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from stream_reco import response
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
from stream_reco.errors import ERRORS, StoreError
from stream_reco.events import CatalogItem, Event, Request
from stream_reco.ranking import blend, context, diversity, feedback, model
from stream_reco.ranking import rules as rules_
from stream_reco.ranking.policy import Policy
from stream_reco.response import Answer
from stream_reco.runtime import Runtime
from stream_reco.state import SessionView
from stream_reco.storage.redis_store import RedisStore

# Passed-over candidates remembered with a response: the learner's negatives.
SHOWN_NEGATIVES = 10
# No diversity or business rules beyond the hard exclusions, the item in view excluded or not.
PLAIN = (Policy(), Policy(exclude_item_in_view=False))
SEQ_SOURCES = 3  # the latest distinct items whose follow-ups are candidates
# Request cost, cut where measured free: 3 co-occurrence lists and 20 spare popular items gave
# the same HR/MRR as 5 and 40 on all three data sets (docs/evaluation.md, "Latency").
COOC_SOURCES = 3  # at most this many session items' co-occurrence lists are read
POPULAR_EXTRA = 20  # popular candidates beyond k: room for blocked and unavailable ones


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
    started = time.perf_counter()
    live = live or Runtime()
    rules = live.rules.for_placement(placement)
    if only is not None:  # /rank orders the caller's items: nothing else may join them
        rules = dataclasses.replace(rules, promoted=())
    current = live.model  # one snapshot: a refresh may swap live.model while we wait
    fixed = blend.for_settings(settings)
    budget = settings.budget_ms / 1000

    def left(share: float = 1.0) -> float:
        return max(budget * share - (time.perf_counter() - started), 1e-3)

    block = set(exclude) | set(rules.exclude)
    if rules.exclude_item_in_view and item_id is not None:
        block.add(item_id)  # before the session is read: a fallback answer honours it too

    # asyncio.timeout, not wait_for: no extra task per step on the hot path.
    def fallback() -> Answer:
        # Sources too slow or down: popularity from memory, still without blocked items.
        shelved = rules_.excluded_by_catalog(live.fallback, rules)
        return response.fallback(live, block | shelved, k, only)

    try:
        async with asyncio.timeout(left(0.8)):
            session, found, seen = await _candidates(
                store, settings, live, session_id, k + POPULAR_EXTRA, fixed, only, (rules, block)
            )
    except (TimeoutError, StoreError):
        return fallback()
    block |= rules_.blocked(session, ())
    # /rank orders a list page's items: no item is in view there unless the caller names it.
    page = item_id if only is not None else rules_.in_view(session, item_id)
    if rules.exclude_item_in_view and page is not None:
        block.add(page)
    use_model = live.model_ready(settings, current)
    degraded = None
    if use_model and time.perf_counter() - started > budget / 2:
        use_model, degraded = False, "blend"  # scoring is the cheapest part to give up
    weights = current.weights if use_model else fixed
    ordered = blend.order(list(found.values()), weights, session_first=not use_model)
    ranked = [cs for cs in ordered if cs[0].item_id not in block]
    # Metadata only for what can still make the list, the session items named in reasons and
    # what the rules look at (session categories, promoted items).
    # A plain policy needs only enough to cover unavailable items; rules that reshuffle
    # (diversity, discovery, caps) need a deeper pool to choose from.
    depth = max(4 * k, k + 60) if rules not in PLAIN else k + 20
    while True:
        head = ranked[:depth]
        wanted = {c.item_id for c, _ in head} | {c.source_item for c, _ in head if c.source_item}
        wanted |= diversity.wanted(session, rules)
        try:
            async with asyncio.timeout(left()):
                meta = await store.read_items(sorted(wanted), seen)
        except (TimeoutError, StoreError):
            return fallback()
        # Context needs metadata, so only the head gets it: a second, finer ordering stage.
        context.add((c for c, _ in head), session, meta)
        if blend.uses_context(weights):
            head = blend.order([c for c, _ in head], weights, session_first=not use_model)
        slots = diversity.select(
            [(c.item_id, sc) for c, sc in head],
            meta,
            session,
            rules,
            k,
            block,
            weights=rules.weights(settings.weights),
            require_catalog=settings.require_catalog,
        )
        # Too many unavailable items in the head (unknown, sold out): look deeper, once.
        if len(slots) >= k or depth >= len(ranked) or depth > 4 * k + 60:
            break
        depth = len(ranked)
    by_id = {c.item_id: c for c, _ in head}
    scorer = current if use_model else model.Weights(0, 0, weights)
    picks = [response.pick(by_id.get(sl.item_id), sl, meta, scorer) for sl in slots]
    taken = {p.item_id for p in picks}
    passed = [(c.item_id, c.features) for c, _ in head if c.item_id not in taken]
    shown = [(p.item_id, p.features) for p in picks] + passed[:SHOWN_NEGATIVES]
    return Answer(picks, current.version if use_model else 0, degraded, shown)


async def _candidates(
    store: RedisStore,
    settings: Settings,
    live: Runtime,
    session_id: str,
    n_popular: int,
    fixed: Mapping[str, float],
    only: Sequence[str] | None = None,
    rules: tuple[Policy, set[str]] = (PLAIN[0], set()),
) -> tuple[SessionView, dict[str, Candidate], str]:
    """The session and every source's candidates for it, per-source scores kept as features;
    with `only`, just those items (their features where a source found them). A source whose
    weight is 0 in the `fixed` blend is not even read. `rules`: the policy and the items it
    blocks so far, which only the cold-start source needs (it fills what is left to show)."""
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
        policy, block = rules
        taken = rules_.blocked(session, block)

        def keep(item_id: str, info: CatalogItem) -> bool:
            return item_id not in taken and not rules_.shelved(info, policy)

        await newest.gather(store, got.catalog_at, n_popular, found, keep)
    if only is not None:
        found = {i: found.get(i) or Candidate(i) for i in dict.fromkeys(only)}
    return session, found, got.catalog_at


async def answer_session(
    store: RedisStore,
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
    store: RedisStore,
    settings: Settings,
    req: Request,
    live: Runtime | None = None,
    on_ready: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    *,
    item_id: str | None = None,
) -> dict[str, Any]:
    """Answer one request; `item_id` (the page's item) defaults to the request's own."""
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
        item_id=item_id if item_id is not None else req.item_id,
    )


async def handle_events(
    store: RedisStore,
    settings: Settings,
    events: Sequence[Event],
    live: Runtime | None = None,
    no_push: Collection[str] = (),
    on_push: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[Event, str]]]:
    """Ingest a batch, turn each session's next event into feedback on what it was shown,
    then one fresh push per session that added to cart (not for the event ids in `no_push`:
    those the shopper has long moved on from). Returns (pushes, refused events); with
    `on_push`, each push goes there the moment it is ready instead, not after the slowest."""
    live = live or Runtime()
    new, refused = await ingest(store, events)
    await learn_from(store, settings, new)
    # One push per session, naming its latest cart addition so a client can match it.
    carts = [e for e in new if e.type == "add_to_cart"]
    carted = {e.session_id: e.event_id for e in carts if e.event_id not in no_push}
    ERRORS["late_push"] += sum(1 for e in carts if e.event_id in no_push)

    def push(sid: str, eid: str) -> Awaitable[dict[str, Any]]:
        k, trigger = settings.default_k, "add_to_cart"
        return answer_session(
            store, settings, live, sid, k, trigger=trigger, event_id=eid, on_ready=on_push
        )

    # Sessions are independent: their reads overlap on the pool. Each push is sent the moment
    # it is ready (`on_push`); the batch still waits for all of them, so every shown list is
    # stored before the session's next event is applied, and the batch's offsets after its pushes.
    pushes = await asyncio.gather(*(push(sid, eid) for sid, eid in carted.items()))
    return ([] if on_push is not None else list(pushes)), refused


async def learn_from(store: RedisStore, settings: Settings, new: Sequence[Event]) -> None:
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
