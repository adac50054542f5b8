"""The learner's examples: from the stream itself, and from what each shown list earned."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from stream_reco.candidates.collect import POPULAR_EXTRA, collect
from stream_reco.config import Settings
from stream_reco.deadline import within
from stream_reco.errors import ERRORS
from stream_reco.events import Event
from stream_reco.ranking import blend, context, examples, feedback, rank
from stream_reco.runtime import Runtime
from stream_reco.storage.protocol import Store


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
        session, found, seen = await collect(store, settings, live, sid, n, fixed, None, a)
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
        limit = settings.budget_ms / 1000 if timed else None
        late = "late_example_failed"
        made = await within(asyncio.gather(*(one(e) for e in events)), limit, late)
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
