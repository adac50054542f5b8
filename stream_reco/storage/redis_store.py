"""The Redis store: idempotent atomic event updates, catalogue writes, the reads requests need."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from importlib import resources
from typing import Any, TypeVar

import orjson
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_reco import bots, logs, metrics
from stream_reco.candidates import newest
from stream_reco.config import Settings
from stream_reco.decay import value_at
from stream_reco.errors import (
    StoreCredentialsError,
    StoreError,
    StoreFormatError,
)
from stream_reco.events import Event
from stream_reco.experiments.store import ExperimentLog
from stream_reco.state import SessionView, parse_session
from stream_reco.storage import apply, connect, layout, scripts
from stream_reco.storage.apply import Applied, Position
from stream_reco.storage.catalog import CatalogCache, CatalogState
from stream_reco.storage.codec import Scored, decayed, meta_json, pairs
from stream_reco.storage.forget import TOMBSTONE
from stream_reco.storage.gather import SKNN_ITEMS, Ask, Gathered, Reader
from stream_reco.storage.keys import Keys
from stream_reco.storage.profiles import Profiles
from stream_reco.storage.shared import SharedState
from stream_reco.storage.split import Split, by_slot
from stream_reco.storage.vector_log import VectorLog

T = TypeVar("T")
log = logging.getLogger(__name__)
APPLY_EVENT = scripts.event_script("apply_event.lua")
MULTI_READ = resources.files("stream_reco.storage").joinpath("multi_read.lua").read_text()
# KEYS: a session's shown list, its tombstone (storage/forget.py); ARGV: the list, its TTL.
# One slot: a forget's tombstone and this check are one atomic step.
SHOWN = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
RETRIES = 5
ITEM_TTL_HALF_LIVES = 10  # 2^-10: an item unseen this long has faded from every list
MAX_TTL_S = 10 * 365 * 86400
# Server states that pass (memory freed, failover done, disk back, dataset loaded, script ended):
# waited out like an outage instead of failing valid events.
TRANSIENT = ("OOM", "READONLY", "MISCONF", "LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")
# redis-py turns some of them into classes and cuts the word off; inside a pipeline the word
# follows "... caused error: " (the async client quotes it in a tuple).
_TRANSIENT_CLASSES = (
    OutOfMemoryError,
    ReadOnlyError,
    MasterDownError,
    TryAgainError,
)
_TRANSIENT_TEXT = re.compile(
    rf"""(?:^|error: \(?["']?)(?:{"|".join(TRANSIENT + connect.RESHARDING)})\b"""
)


class RedisStore(SharedState, CatalogState):
    """Everything stream-reco keeps in Redis, behind one narrow async interface."""

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

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Bounded retry with backoff: a Redis restart is waited out, not turned into data loss."""
        delay = 0.05
        for attempt in range(1, RETRIES + 1):
            try:
                result = await call()
            except (AuthenticationError, AuthenticationWrongNumberOfArgsError) as exc:
                # Not an outage: waiting does not make a wrong password right.
                raise StoreCredentialsError(
                    f"{what}: Redis refused the credentials ({exc}): check the user and password "
                    "in REDIS_URL (redis://user:password@host:port/db)"
                ) from exc
            except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
                if isinstance(exc, ResponseError) and not transient(exc):
                    raise
                # Every worker's calls fail together in an outage: one line per interval.
                logs.REDIS.failed(what, exc)
                if self.cluster and isinstance(exc, ResponseError):
                    await self.transactions.refresh()
                if attempt == RETRIES:
                    metrics.redis_gave_up(what)
                    msg = f"{what}: Redis unavailable after {RETRIES} tries: {exc}"
                    raise StoreError(msg) from exc
                metrics.redis_retried(what)
                await asyncio.sleep(delay)
                delay = min(delay * 4, 2.0)
            else:
                logs.REDIS.ok()
                return result
        raise AssertionError("unreachable")

    async def retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call` under the store's bounded retry (for callers beyond this class, e.g. the
        forget): a Redis outage raises StoreError after the retries, which holds a batch."""
        return await self._retry(what, call)

    async def remember_shown(self, session_id: str, shown: bytes) -> None:
        """What the session was last shown (candidates with features), until its next event;
        nothing for a session forgotten since the answer was computed (its tombstone)."""
        keys = [self.keys.session(session_id, "shown"), self.keys.session(session_id, TOMBSTONE)]
        args = [shown, self.settings.session_ttl_s]
        await self._retry("remember_shown", lambda: self._shown(keys=keys, args=args))

    async def check_format(self, upgrade: bool = True) -> None:
        """Refuse a store whose decayed scores an older version wrote: linear sums from a
        landmark (its key says so), which log-space scores would silently mis-rank. Move the
        keys of an older layout to today's names (storage/layout.py) before anything reads
        them; without `upgrade` (a read-only tool), refuse such a store instead."""
        legacy = self.keys.legacy_global("landmark")
        if await self._retry("check_format", lambda: self.client.exists(legacy)):
            raise StoreFormatError(
                f"{legacy} exists: this store's decayed scores were written by a version "
                "before log-space decay and cannot be read as they are; start from a fresh "
                "store (a new STREAM_RECO_KEY_PREFIX, or delete the prefix's keys)"
            )
        if await self._retry("check_format", lambda: layout.outdated(self.client, self.keys)):
            if not upgrade:
                raise StoreFormatError(
                    f"the store under {self.keys.prefix!r} has an older version's key names; "
                    "start a worker of this version on it first, which moves them"
                )
            moved = await self._retry("upgrade", lambda: layout.upgrade(self.client, self.keys))
            log.warning("store layout upgraded: %d keys moved to their {g}-tagged names", moved)

    async def eviction_policy(self) -> str | None:
        """The server's `maxmemory-policy` (on a cluster, the first primary's that evicts, else
        their common one), None when it does not say (a managed Redis without CONFIG, a user
        not allowed it). Evicted offset marks would let a redelivered event apply twice, an
        evicted session or list would vanish unnoticed."""

        async def ask() -> list[str | None]:
            if isinstance(self.client, AsyncRedisCluster):
                await self.client.initialize()  # it learns the nodes on its first command
                nodes = self.client.get_primaries()
                got = [
                    await self.client.config_get("maxmemory-policy", target_nodes=node)
                    for node in nodes
                ]
            else:
                got = [await self.client.config_get("maxmemory-policy")]
            return [g.get("maxmemory-policy") for g in got]

        try:
            policies = await self._retry("eviction_policy", ask)
        except ResponseError:
            return None
        if any(p is None for p in policies):
            return None
        evicting = [str(p) for p in policies if str(p) != "noeviction"]
        return evicting[0] if evicting else str(policies[0])

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

    async def holds_anything(self) -> bool:
        """Whether anything was ever stored under this key prefix: one EXISTS per key that a
        worker's first event, catalogue record, rules message or model creates, and which
        never expires (one round trip, where a SCAN must walk the whole keyspace to find no
        key). `inspect` tells a wrong prefix from an unknown id with it."""
        g = self.keys.global_
        # "rules" and "model": runtime.RULES and runtime.MODEL, the published documents.
        marks = [g("applied"), g("clock"), self.catalog_log, g("rules"), g("model")]

        async def run() -> bool:
            pipe = self.client.pipeline(transaction=False)
            for key in marks:
                pipe.exists(key)
            return any(await pipe.execute())

        return await self._retry("holds_anything", run)

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

    async def inspect_item(self, item_id: str, n: int = 20) -> dict[str, object]:
        """An item's metadata, decayed popularity and top neighbours, as plain JSON data."""
        s = self.settings
        meta = (await self.read_items([item_id])).get(item_id)
        [row] = await self._read_many([self.keys.item(item_id, "co")], ["zrev", n])
        neighbours = pairs(row)  # stored log-sums: read as values at the event clock below
        pop = await self.client.zscore(self.keys.global_("pop"), item_id)
        clock = await self.client.get(self.keys.global_("clock"))
        now = int(clock) if clock else None

        def decayed(stored: float, half_life: float) -> float:
            return 0.0 if now is None else round(value_at(stored, now, half_life), 6)

        return {
            "item_id": item_id,
            "known": meta is not None,
            "meta": meta_json(meta) if meta else None,
            "event_clock_ts": now,
            "popularity": decayed(pop, s.pop_half_life_s) if pop is not None else 0.0,
            "neighbours": [
                {"item_id": i, "score": decayed(v, s.cooc_half_life_s)} for i, v in neighbours
            ],
        }

    async def clear(self) -> int:
        """Delete every key under this store's prefix (tests, evaluation); returns the count."""
        deleted = 0
        async for batch in _chunks(
            self.client.scan_iter(match=self.keys.all_pattern(), count=1000)
        ):
            deleted += await self.client.unlink(*batch)
        self.catalog.reset()
        return deleted


def transient(exc: ResponseError) -> bool:
    """An error reply that passes (memory freed, failover done, script ended): waited out."""
    # A cluster's slots moving or failing over too (connect.resharding): the slot map is
    # read again before the retry.
    return (
        isinstance(exc, _TRANSIENT_CLASSES)
        or bool(_TRANSIENT_TEXT.search(str(exc)))
        or connect.resharding(exc)
    )


def item_ttl_s(settings: Settings) -> int:
    """How long an item's learned lists (co-occurrence, follow-ups, recent sessions) outlive
    the item's last event: ITEM_TTL_HALF_LIVES co-occurrence half-lives, when what they hold
    weighs a thousandth of what it did (and never less than the session index keeps them)."""
    wanted = max(ITEM_TTL_HALF_LIVES * settings.cooc_half_life_s, settings.sknn_ttl_s)
    return int(min(wanted, MAX_TTL_S))  # a half-life meant as "never" must not break EXPIRE


async def _chunks(it, size: int = 500):  # type: ignore[no-untyped-def]
    batch: list[bytes] = []
    async for key in it:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
