"""The Redis store: idempotent atomic event updates, catalogue writes, the reads requests need."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from importlib import resources
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import NoScriptError, ResponseError

from stream_reco import bots, metrics
from stream_reco.candidates import newest
from stream_reco.config import Settings
from stream_reco.events import Event
from stream_reco.experiments.store import ExperimentLog
from stream_reco.state import SessionView, parse_session
from stream_reco.storage import apply, connect, scripts
from stream_reco.storage.apply import Applied, Position
from stream_reco.storage.catalog import CatalogCache, CatalogState
from stream_reco.storage.codec import Scored, decayed
from stream_reco.storage.forget import TOMBSTONE
from stream_reco.storage.gather import SKNN_ITEMS, Ask, Gathered, Reader
from stream_reco.storage.keys import Keys
from stream_reco.storage.operations import Operations
from stream_reco.storage.profiles import Profiles
from stream_reco.storage.retry import RETRIES as RETRIES  # importable from here, as before
from stream_reco.storage.retry import TRANSIENT as TRANSIENT
from stream_reco.storage.retry import Retrying
from stream_reco.storage.retry import transient as transient
from stream_reco.storage.shared import SharedState
from stream_reco.storage.split import Split, by_slot
from stream_reco.storage.vector_log import VectorLog

APPLY_EVENT = scripts.event_script("apply_event.lua")
MULTI_READ = resources.files("stream_reco.storage").joinpath("multi_read.lua").read_text()
# KEYS: a session's shown list, its tombstone (storage/forget.py); ARGV: the list, its TTL.
# One slot: a forget's tombstone and this check are one atomic step.
SHOWN = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
ITEM_TTL_HALF_LIVES = 10  # 2^-10: an item unseen this long has faded from every list
MAX_TTL_S = 10 * 365 * 86400


class RedisStore(Retrying, SharedState, CatalogState, Operations):
    """Everything stream-reco keeps in Redis, behind one narrow async interface.

    The mixins' order matters: Retrying first (the one `_retry`), Operations last (its stubs
    of the other parts must not hide them); methods defined here win over all of them."""

    def __init__(self, client: connect.AsyncClient, settings: Settings) -> None:
        self.client = client
        self.cluster = isinstance(client, AsyncRedisCluster)
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self._apply = client.register_script(APPLY_EVENT)
        # Per Kafka partition, the last offset this worker applied: a store found behind it
        # lost acknowledged writes (apply.calls).
        self._reached: dict[str, int] = {}
        self._multi_read = client.register_script(MULTI_READ)
        self._shown = client.register_script(SHOWN)
        self._reader = Reader(
            client, self.keys, settings.sknn_sessions_per_item, settings.sknn_neighbours
        )
        # MULTI on one slot, also on a cluster (catalogue and vector logs).
        self.transactions = connect.Transactions(client)
        self.vectors = VectorLog(client, self.keys, transactions=self.transactions)
        self.experiments = ExperimentLog(client, self.keys, settings)
        self.profiles = Profiles(client, self.keys, settings)  # returning users
        self.catalog = CatalogCache()
        self.shelf = newest.Shelf()  # the cold-start list, as of one catalogue position
        self._script_config = orjson.dumps(
            {
                "ttl": settings.session_ttl_s,
                "max_events": settings.session_max_events,
                "max_items": settings.session_max_items,
                "window": settings.cooc_window,
                "neighbours_max": settings.neighbours_max,
                "popular_max": settings.popular_max,
                "pop": self.keys.global_("pop"),
                "clock": self.keys.global_("clock"),
                "applied": self.keys.global_("applied"),
                "session": self.keys.session_pattern(),
                "offsets": self.keys.global_("offsets"),
                "co": self.keys.item_pattern("co"),
                "next": self.keys.item_pattern("next"),
                "seq_window": settings.seq_window,
                "sknn_per_item": settings.sknn_sessions_per_item,
                "sknn_ttl": settings.sknn_ttl_s,
                "item_ttl": item_ttl_s(settings),
                "sessions": self.keys.item_pattern("sessions"),
                "meta": self.keys.item_pattern("meta"),
                "marks": self.keys.item_pattern("marks"),
                "catpop": self.keys.global_("pop:cat:"),
                **bots.Limits.of(settings).script_config(),
            }
        )
        # On a cluster the event script runs as per-slot steps (storage/split.py).
        self._split = Split(client, self.keys, self._script_config) if self.cluster else None

    @classmethod
    def connect(cls, settings: Settings) -> RedisStore:
        return cls(connect.async_client(settings), settings)

    async def close(self) -> None:
        await self.transactions.close()
        await self.client.aclose()

    async def remember_shown(self, session_id: str, shown: bytes) -> None:
        """What the session was last shown (candidates with features), until its next event;
        nothing for a session forgotten since the answer was computed (its tombstone)."""
        keys = [self.keys.session(session_id, "shown"), self.keys.session(session_id, TOMBSTONE)]
        args = [shown, self.settings.session_ttl_s]
        await self._retry("remember_shown", lambda: self._shown(keys=keys, args=args))

    async def apply_events(
        self,
        events: Sequence[Event],
        *,
        learn: bool | Sequence[bool] = True,
        positions: Sequence[Position | None] | None = None,
    ) -> Applied:
        """Apply a batch in one pipeline: per event True (new) or False (applied before), and
        per event whether its session is flagged as a bot (`Applied.flags`, bots.py). Any
        event time is applied, in any order (decay.py). `learn`: whether the events may teach
        shared state, for all or per event. `positions`: where each event was read (None: not
        from Kafka), each partition's in offset order; an event at or before its partition's
        last applied offset is a redelivery. An event whose id its session already holds is one
        too (apply_event.lua says how long each memory lasts)."""
        if not events:
            return Applied([], [])
        at = positions if positions is not None else [None] * len(events)
        rows = apply.rows(self.settings, events, at, learn)
        if self._split is not None:
            split, decoded = self._split, [orjson.loads(r) for r in rows]

            def run() -> Awaitable[Applied]:
                return split.apply(decoded, at, self._reached)
        else:
            calls = apply.calls(rows, at, self._reached)

            async def run() -> Applied:
                pipe = self.client.pipeline(transaction=False)
                for args in calls:
                    await self._apply(keys=[], args=[self._script_config, *args], client=pipe)
                return apply.reply(v for call in await pipe.execute() for v in call)

        try:
            done = await self._retry("apply_events", run)
        except ResponseError as exc:
            behind = apply.rewound(exc)
            if behind is None:
                raise
            self._reached.clear()  # the store's offsets are where to resume from now
            raise behind from exc
        self._note_reached(at)
        metrics.bots_seen(done)
        return done

    def _note_reached(self, at: Sequence[Position | None]) -> None:
        for p in at:
            if p is not None and p.offset > self._reached.get(p.marker, -1):
                self._reached[p.marker] = p.offset

    async def applied_count(self) -> int:
        """Events this store has applied so far (redeliveries not counted): ingestion progress
        as the store sees it, not as a producer or consumer reports it."""
        raw = await self._retry("applied", lambda: self.client.get(self.keys.global_("applied")))
        return int(raw or 0)

    async def read_session(self, session_id: str) -> SessionView:
        k = self.keys

        async def run() -> SessionView:
            pipe = self.client.pipeline(transaction=False)
            pipe.lrange(k.session(session_id, "recent"), 0, -1)
            pipe.hgetall(k.session(session_id, "cart"))
            pipe.smembers(k.session(session_id, "bought"))
            pipe.hgetall(k.session(session_id, "info"))
            recent, cart, bought, info = await pipe.execute()
            return parse_session(session_id, recent, cart, bought, info)

        return await self._retry("read_session", run)

    async def read_neighbours(
        self, item_ids: Sequence[str], n: int, kind: str = "co"
    ) -> dict[str, Scored]:
        """Each item's top-n neighbours, scores decayed and relative to the first: `co` (seen
        together in a session) or `next` (seen after it)."""
        if not item_ids:
            return {}

        async def run() -> dict[str, Scored]:
            keys = [self.keys.item(item, kind) for item in item_ids]
            rows = await self._read_many(keys, ["zrev", n])
            return {item: decayed(row) for item, row in zip(item_ids, rows, strict=True)}

        return await self._retry("read_neighbours", run)

    async def gather(
        self,
        session_id: str,
        n_popular: int,
        cooc_window: int,
        seq_sources: int,
        sknn: bool,
        trending: bool,
        user_id: str | None = None,
        profile: int = 0,
        profile_sources: int = 0,
    ) -> Gathered:
        """The session and every list its candidates come from (storage/gather.py); for a
        short session of a known user (`user_id`, else the session's stored one), the top
        `profile` items of the user's profile too, and the co-occurrence lists of the first
        `profile_sources` of them."""
        ask = Ask(
            n_popular,
            cooc_window,
            seq_sources,
            SKNN_ITEMS if sknn else 0,
            trending,
            user_id or "",
            profile,
            profile_sources,
        )
        return await self._retry("gather", lambda: self._reader.read(session_id, ask))

    async def read_popular(self, n: int, category: str | None = None) -> Scored:
        """The n most popular items (decayed), overall or within one category (trending)."""
        key = self.keys.global_("pop" if category is None else f"pop:cat:{category}")

        async def run() -> Scored:
            [row] = await self._read_many([key], ["zrev", n])
            return decayed(row)

        return await self._retry("read_popular", run)

    def _multi_read_hashes(self, keys: list[str]) -> Awaitable[list[list[bytes]]]:
        return self._read_many(keys, ["hash"])

    async def _read_many(self, keys: list[str], args: list[Any]) -> list[list[bytes]]:
        """multi_read.lua over `keys`, rows in their order: one call on a single node; on a
        cluster one per hash slot, side by side."""
        if not self.cluster:
            return await self._multi_read(keys=keys, args=args)  # type: ignore[no-any-return]
        groups = by_slot(range(len(keys)), keys.__getitem__)

        async def calls() -> list[Any]:
            # One pipeline: a batch per node, not a connection per slot.
            pipe = self.client.pipeline(transaction=False)
            for g in groups:
                named = [keys[n] for n in g]
                pipe.execute_command("EVALSHA", self._multi_read.sha, len(named), *named, *args)
            return list(await pipe.execute())

        try:
            got = await calls()
        except NoScriptError:  # a new or failed-over primary: load it everywhere, once more
            await self.client.script_load(MULTI_READ)
            got = await calls()
        rows: list[list[bytes]] = [[] for _ in keys]
        for members, replies in zip(groups, got, strict=True):
            for n, row in zip(members, replies, strict=True):
                rows[n] = row
        return rows


def item_ttl_s(settings: Settings) -> int:
    """How long an item's learned lists (co-occurrence, follow-ups, recent sessions) outlive
    the item's last event: ITEM_TTL_HALF_LIVES co-occurrence half-lives, when what they hold
    weighs a thousandth of what it did (and never less than the session index keeps them)."""
    wanted = max(ITEM_TTL_HALF_LIVES * settings.cooc_half_life_s, settings.sknn_ttl_s)
    return int(min(wanted, MAX_TTL_S))  # a half-life meant as "never" must not break EXPIRE
