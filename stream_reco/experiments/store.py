"""Experiment counters in Redis: impressions in, events attributed exactly once, sums out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_reco.config import Settings
from stream_reco.errors import StoreError
from stream_reco.events import Event
from stream_reco.experiments import scripts
from stream_reco.experiments.config import HOLDOUT, Experiment
from stream_reco.storage import connect
from stream_reco.storage.apply import Position
from stream_reco.storage.keys import Keys

T = TypeVar("T")
RETRIES = 3
MAX_SHOWN = 10  # shown lists a session record keeps: older ones rarely earn a click
MAX_ITEMS = 20  # items kept per shown list: with MAX_SHOWN, bounds a record's bytes
MAX_IDS = 50  # recent event ids kept per session record: a re-sent event is known by its id
# An event may carry a time slightly before the answer's (its clock vs the session's).
SLACK_MS = 60_000
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
)


@dataclass(frozen=True, slots=True)
class Shown:
    """One answer served under an experiment: what attribution matches later events against."""

    experiment: str
    variant: str
    session_id: str
    recommendation_id: str
    items: tuple[str, ...]
    ts: int  # event time: the session's latest event when answered, else the wall clock


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

    def _variant(self, name: str, variant: str) -> str:
        return self._key(name, f"v:{variant}")

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A few quick tries: the caller's budget (or batch) bounds the rest."""
        for attempt in range(1, RETRIES + 1):
            try:
                return await call()
            except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
                if isinstance(exc, ResponseError) and not connect.resharding(exc):
                    # A script's error is no outage, but the callers count StoreErrors only.
                    raise StoreError(f"{what}: Redis refused it: {exc}") from exc
                if attempt == RETRIES:
                    raise StoreError(f"{what}: Redis unavailable after {RETRIES} tries") from exc
                await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    async def record(self, shown: Shown) -> None:
        """Count an answer (and its session, the first time per variant) and remember its
        items for attribution."""
        keys = [
            self._session(shown.experiment, shown.session_id),
            self._variant(shown.experiment, shown.variant),
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
        with its position, redeliveries too: the records know what they counted. Returns how
        many events were attributed."""
        at = positions if positions is not None else [None] * len(events)
        picked = [(e, p) for e, p in zip(events, at, strict=True) if e.type in ATTRIBUTED]
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
        for e, p in picked:
            n = sessions.setdefault(e.session_id, len(sessions) + 1)
            value = (e.price or 0.0) * e.quantity if e.type == "purchase" else 0.0
            marker, offset = (p.marker, p.offset) if p is not None else ("", -1)
            rows.append(
                [n, e.type, e.item_id, e.recommendation_id or "", e.ts, value, e.event_id,
                 marker, offset]
            )  # fmt: skip
        names = arms(exp)
        keys = [self._session(exp.name, sid) for sid in sessions]
        keys += [self._variant(exp.name, v) for v in names]
        cfg = {"window_ms": self.window_ms, "slack_ms": SLACK_MS, "max_ids": MAX_IDS}
        args = [orjson.dumps({**cfg, "variants": names}), orjson.dumps(rows)]
        got = await self._retry("attribute", lambda: self._attribute(keys=keys, args=args))
        return int(got)

    async def counters(self, exp: Experiment) -> dict[str, dict[str, float]]:
        """Each arm's sums (0 for what was never counted)."""
        names = arms(exp)

        async def run() -> list[dict[bytes, bytes]]:
            # One call per arm: on a cluster a pipeline would need every key's slot resolved.
            return [await self.client.hgetall(self._variant(exp.name, v)) for v in names]

        raw = await self._retry("experiment_counters", run)
        out: dict[str, dict[str, float]] = {}
        for name, row in zip(names, raw, strict=True):
            got = {k.decode(): float(v) for k, v in row.items()}
            out[name] = {c: got.get(c, 0.0) for c in COUNTERS}
        return out
