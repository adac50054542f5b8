"""What follows an answer or an applied batch, best effort: shown lists, impressions, users'
profiles and the experiments' attribution. None of it may fail or hold up what came first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence

from stream_reco import logs
from stream_reco.config import Settings
from stream_reco.deadline import within
from stream_reco.errors import ERRORS, StoreError, survived
from stream_reco.events import Event
from stream_reco.experiments.assign import Arm
from stream_reco.experiments.config import Experiment
from stream_reco.experiments.store import Shown
from stream_reco.ranking import feedback
from stream_reco.response import Answer
from stream_reco.storage.apply import Position
from stream_reco.storage.protocol import Store


async def remember(
    store: Store,
    settings: Settings,
    session_id: str,
    rid: str,
    answer: Answer,
    arm: Arm | None,
    ts: int,
) -> None:
    """After the answer is out: its shown list for the learner and, under an experiment, its
    impression (`ts`: its event time); side by side, best effort (never worth failing an
    answer for)."""
    writes: list[tuple[str, Awaitable[None]]] = []
    if answer.shown:
        doc = feedback.shown(rid, answer.shown)
        writes.append(("shown_not_stored", store.remember_shown(session_id, doc)))
    if arm is not None:
        items = tuple(p.item_id for p in answer.picks)
        shown = Shown(arm.experiment.name, arm.name, session_id, rid, items, ts)
        writes.append(("impression_not_stored", store.experiments.record(shown)))

    async def one(kind: str, write: Awaitable[None]) -> None:
        try:
            await within(write, settings.budget_ms / 1000, f"late_{kind}")
        except (TimeoutError, StoreError):
            ERRORS[kind] += 1

    if len(writes) == 1:  # no experiment: the one write, without gathering
        await one(*writes[0])
    elif writes:
        await asyncio.gather(*(one(kind, w) for kind, w in writes))


async def attribute(
    store: Store,
    running: Sequence[Experiment],
    events: Sequence[Event],
    positions: Sequence[Position | None] | None,
) -> None:
    """Credit the running experiments' variants with the batch's clicks, cart additions and
    purchases. Every event goes, redeliveries too: the session records skip what they counted
    before, so a batch applied but not yet attributed when a worker died is attributed once."""
    with survived("attribution_failed", logs.AFTER_APPLY):
        await store.experiments.attribute(running, events, positions)


async def remember_users(
    store: Store,
    events: Sequence[Event],
    positions: Sequence[Position | None] | None,
    *,
    learn: bool | Sequence[bool] = True,
) -> None:
    """Join the batch's signed-in sessions to their users' profiles (storage/profiles.py).
    Every event goes, redeliveries too: the profiles skip what they counted before, so a
    batch applied but not yet joined when a worker died is joined once (and a user forgotten
    since is skipped: the forget's tombstone). Events of a flagged session should come with
    `learn` False; a flagged session's history joins nobody anyway. A profile is learned
    state: an event with `learn` False (frozen evaluation, untrusted traffic; one flag for the
    batch or one per event) joins none."""
    if isinstance(learn, bool):
        if not learn:
            return
    else:
        kept = [n for n, flag in enumerate(learn) if flag]
        events = [events[n] for n in kept]
        positions = [positions[n] for n in kept] if positions is not None else None
    with survived("profile_failed", logs.AFTER_APPLY):
        await store.profiles.update(events, positions)
