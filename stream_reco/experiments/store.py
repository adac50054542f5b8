"""Experiment counters in Redis: impressions in, events attributed exactly once, sums out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from stream_reco.config import Settings
from stream_reco.events import Event
from stream_reco.experiments import scripts
from stream_reco.experiments.config import HOLDOUT, Experiment
from stream_reco.storage import connect
from stream_reco.storage.apply import Position
from stream_reco.storage.keys import Keys

T = TypeVar("T")
MAX_SHOWN = 10  # shown lists a session record keeps: older ones rarely earn a click
MAX_ITEMS = 20  # items kept per shown list: with MAX_SHOWN, bounds a record's bytes
MAX_IDS = 50  # recent event ids kept per session record: a re-sent event is known by its id
ATTRIBUTED = frozenset({"click", "add_to_cart", "purchase"})
COUNTERS = (
    "sessions",
    "impressions",
    "clicks",
    "carts",
    "purchases",
    "revenue",
    "revenue2",
    "click_sessions",
    "cart_sessions",
    "purchase_sessions",
    # Answers clicked at least once (by their recommendation id): CTR's numerator.
    "clicked_impressions",
    # Every cart addition and purchase of an exposed session, attributed or not: the figures
    # a holdout (which shows little or nothing to attribute to) is compared on.
    "session_carts",
    "session_purchases",
    "session_revenue",
    "session_revenue2",
    "session_cart_sessions",
    "session_purchase_sessions",
)
UNKNOWN_TS = -1  # an answer's time when no event dates it: the session's next event will


@dataclass(frozen=True, slots=True)
class Shown:
    """One answer served under an experiment: what attribution matches later events against."""

    experiment: str
    variant: str
    session_id: str
    recommendation_id: str
    items: tuple[str, ...]
    # Event time: a push's trigger event's, else the session's latest event's when answered;
    # UNKNOWN_TS (a holdout's or a fallback's answer, read without the session): attribution
    # dates it by the session's next event, never by a clock the events do not share.
    ts: int


def arms(exp: Experiment) -> list[str]:
    """Every arm of an experiment by name, the holdout last."""
    return [v.name for v in exp.variants] + ([HOLDOUT] if exp.holdout is not None else [])


class ExperimentLog:
    """Per experiment, a hash of sums per variant and a record per exposed session; every key
    of one experiment shares the hash tag {x:<name>}, so each script call is single-slot."""

    def __init__(self, client: connect.AsyncClient, keys: Keys, settings: Settings) -> None:
        self.client, self.keys = client, keys
        self._impression = client.register_script(scripts.IMPRESSION)
        self._attribute = client.register_script(scripts.ATTRIBUTE)
        self._shown_cfg = orjson.dumps(
            {"ttl": settings.session_ttl_s, "max_shown": MAX_SHOWN, "max_items": MAX_ITEMS}
        )
        self.window_ms = int(settings.attribution_window_s * 1000)

    def _key(self, name: str, part: str) -> str:
        return self.keys.experiment(name, part)

    def _session(self, name: str, session_id: str) -> str:
        return self._key(name, f"s:{session_id}")

    def _tombstone(self, name: str, session_id: str) -> str:
        return self._key(name, f"s:{session_id}:forgotten")

    def _variant(self, name: str, variant: str) -> str:
        return self._key(name, f"v:{variant}")

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await connect.briefly(what, call)

    async def record(self, shown: Shown) -> None:
        """Count an answer (and its session, the first time per variant) and remember its
        items for attribution."""
        keys = [
            self._session(shown.experiment, shown.session_id),
            self._variant(shown.experiment, shown.variant),
            self._tombstone(shown.experiment, shown.session_id),
        ]
        items = orjson.dumps(list(shown.items))
        args = [self._shown_cfg, shown.variant, shown.recommendation_id, shown.ts, items]
        await self._retry("record_impression", lambda: self._impression(keys=keys, args=args))

    async def attribute(
        self,
        running: Iterable[Experiment],
        events: Sequence[Event],
        positions: Sequence[Position | None] | None = None,
    ) -> int:
        """Attribute a batch's clicks, cart additions and purchases to the variants that showed
        their items, per running experiment one script call. Pass every event of the batch
        with its position, redeliveries too: the records know what they counted, and any
        event dates its session's answers of unknown time. Returns how many events were
        attributed to an answer."""
        at = positions if positions is not None else [None] * len(events)
        picked = list(zip(events, at, strict=True))
        if not picked:
            return 0
        calls = [self._attribution(exp, picked) for exp in running]
        done = await asyncio.gather(*calls)
        return sum(done)

    async def _attribution(
        self, exp: Experiment, picked: list[tuple[Event, Position | None]]
    ) -> int:
        sessions: dict[str, int] = {}
        rows: list[list[Any]] = []
        firsts: list[list[Any]] = []  # per session its first event: dates unknown answer times
        for e, p in picked:
            marker, offset = (p.marker, p.offset) if p is not None else ("", -1)
            n = sessions.setdefault(e.session_id, len(sessions) + 1)
            if n > len(firsts):
                firsts.append([e.ts, marker, offset])
            if e.type not in ATTRIBUTED:
                continue
            value = (e.price or 0.0) * e.quantity if e.type == "purchase" else 0.0
            rows.append(
                [n, e.type, e.item_id, e.recommendation_id or "", e.ts, value, e.event_id,
                 marker, offset]
            )  # fmt: skip
        names = arms(exp)
        keys = [self._session(exp.name, sid) for sid in sessions]
        keys += [self._variant(exp.name, v) for v in names]
        cfg = {"window_ms": self.window_ms, "max_ids": MAX_IDS, "variants": names}
        args = [orjson.dumps(cfg), orjson.dumps(rows), orjson.dumps(firsts)]
        got = await self._retry("attribute", lambda: self._attribute(keys=keys, args=args))
        return int(got)

    async def counters(self, exp: Experiment) -> dict[str, dict[str, float]]:
        """Each arm's sums (0 for what was never counted)."""
        names = arms(exp)

        async def run() -> list[dict[bytes, bytes]]:
            # One round trip: every arm's key carries the experiment's hash tag, so on a
            # cluster the pipeline goes to the one node holding that slot.
            pipe = self.client.pipeline(transaction=False)
            for v in names:
                pipe.hgetall(self._variant(exp.name, v))
            return list(await pipe.execute())

        raw = await self._retry("experiment_counters", run)
        out: dict[str, dict[str, float]] = {}
        for name, row in zip(names, raw, strict=True):
            got = {k.decode(): float(v) for k, v in row.items()}
            out[name] = {c: got.get(c, 0.0) for c in COUNTERS}
        return out

    async def forget(
        self, names: Iterable[str], session_ids: Sequence[str], tombstone_s: int
    ) -> int:
        """Delete the sessions' records in every named experiment (privacy.py's forget), each
        after a tombstone living `tombstone_s` in its slot, which keeps an answer computed
        before the forget from writing the record back: the variants' sums stay, as they name
        nobody. Returns how many records were deleted."""
        pairs = [(name, sid) for name in names for sid in session_ids]
        if not pairs:
            return 0

        async def run() -> int:
            # Per key a command: on a cluster each experiment's records share a slot, but a
            # forget spans experiments, and a pipeline routes each command by its key (the
            # tombstone and its record share a slot, so a node runs them in this order).
            pipe = self.client.pipeline(transaction=False)
            for name, sid in pairs:
                pipe.set(self._tombstone(name, sid), b"1", ex=tombstone_s)
                pipe.delete(self._session(name, sid))
            return sum(int(x) for x in (await pipe.execute())[1::2])

        return await self._retry("forget_sessions", run)
