"""Everything a recommendation reads before ranking: one gather.lua call on a single node, or
on a Redis Cluster the same reads and the same choices in three pipelined rounds (four for a
returning user's short session: its profile first)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster

from stream_reco.state import SessionView, parse_session
from stream_reco.storage.codec import Scored, decayed, hash_fields
from stream_reco.storage.keys import Keys

GATHER = resources.files("stream_reco.storage").joinpath("gather.lua").read_text()
# Session-kNN looks up the past sessions of this many latest session items: bounds its cost.
SKNN_ITEMS = 3  # 5 measured the same HR/MRR on all three data sets, at more cost
SKNN_LIMIT = 50  # items session-kNN returns (100 measured the same HR/MRR on all three data sets)
NEIGHBOURS_PER_SOURCE = 30  # list entries read per candidate source item
TRENDING_LOOKS = 3  # latest session items whose category trending may come from
# A profile is read only for a session with fewer distinct items than this: a returning user's
# first answers, when the session says little yet; longer sessions read what they did before.
PROFILE_BELOW = 2


@dataclass(frozen=True, slots=True)
class Gathered:
    """What gather.lua read for one recommendation."""

    session: SessionView
    popular: Scored
    co: dict[str, Scored]  # by source item
    next: dict[str, Scored]
    votes: Scored  # session-kNN, best first
    trending: Scored  # popularity in the category of the latest session item that has one
    catalog_at: str  # the catalogue log's position: metadata read later is at least this new
    # A returning user's profile (a short session only; empty otherwise), best first, and the
    # co-occurrence lists of its first items.
    profile: Scored = field(default_factory=list)
    profile_co: dict[str, Scored] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request wants read (the client's budget and the sources it uses)."""

    n_popular: int
    cooc_window: int
    seq_sources: int
    sknn_items: int  # 0: no session-kNN
    trending: bool
    user_id: str = ""  # the request's user ('' = the session's stored one, if any)
    profile_n: int = 0  # profile items to read for a short session (0: none)
    profile_sources: int = 0  # of them, those whose co-occurrence lists are read


class Reader:
    """gather.lua's reads, one way or the other; `keys` and the sizes as the store has them."""

    def __init__(self, client: Any, keys: Keys, per_item: int, sknn_k: int) -> None:
        self.client, self.keys = client, keys
        self.per_item, self.sknn_k = per_item, sknn_k
        self.cluster = isinstance(client, RedisCluster)
        self._script = client.register_script(GATHER)
        ipre, _ = keys.item_pattern("")
        spre, ssuf = keys.session_pattern()
        upre, usuf = keys.user_pattern()
        self._config = orjson.dumps(
            {
                "session": [spre, ssuf],
                "item": [ipre, "}:"],
                "user": [upre, usuf],
                "profile_below": PROFILE_BELOW,
                "pop": keys.global_("pop"),
                "per_source": NEIGHBOURS_PER_SOURCE,
                "per_item": per_item,
                "sample": per_item,
                "sknn_k": sknn_k,
                "catpop": keys.global_("pop:cat:"),
                "catalog_log": keys.global_("catalog:log"),
            }
        )

    async def read(self, session_id: str, ask: Ask) -> Gathered:
        if self.cluster:
            return await self._rounds(session_id, ask)
        args = [ask.n_popular, ask.cooc_window, ask.seq_sources, ask.sknn_items, int(ask.trending)]
        args += [ask.user_id, ask.profile_n, ask.profile_sources]
        got = await self._script(keys=[], args=[self._config, session_id, orjson.dumps(args)])
        recent, cart, bought, info, popular, co, nxt, votes, trend, at, profile, pco = got
        return Gathered(
            parse_session(session_id, recent, hash_fields(cart), set(bought), hash_fields(info)),
            decayed(popular),
            {co[i].decode(): decayed(co[i + 1]) for i in range(0, len(co), 2)},
            {nxt[i].decode(): decayed(nxt[i + 1]) for i in range(0, len(nxt), 2)},
            best_votes(votes[::2], [int(v) for v in votes[1::2]]),
            decayed(trend),
            at.decode() if isinstance(at, bytes) else "",
            decayed(profile),
            {pco[i].decode(): decayed(pco[i + 1]) for i in range(0, len(pco), 2)},
        )

    async def _rounds(self, sid: str, ask: Ask) -> Gathered:
        """The cluster's way: the session, then the lists its items lead to, then the
        neighbour sessions' items; each round one pipeline over the nodes that hold them."""
        k = self.keys
        recent, cart, bought, info, popular, latest = await self._round(
            [
                ("LRANGE", k.session(sid, "recent"), 0, -1),
                ("HGETALL", k.session(sid, "cart")),
                ("SMEMBERS", k.session(sid, "bought")),
                ("HGETALL", k.session(sid, "info")),
                _top(k.global_("pop"), ask.n_popular),
                ("XREVRANGE", k.global_("catalog:log"), "+", "-", "COUNT", 1),
            ]
        )
        order, weight, co_from = sources(recent, cart)
        co_from, seq_from = co_from[: ask.cooc_window], order[: ask.seq_sources]
        knn_from = [i for i in order[: ask.sknn_items] if i in weight]
        looks = order[:TRENDING_LOOKS] if ask.trending else []
        profile = await self._profile(ask, len(weight), _fields(info))
        pco_from = [i.decode() for i in profile[::2][: ask.profile_sources]]
        second = await self._round(
            [_top(k.item(i, "co"), NEIGHBOURS_PER_SOURCE) for i in pco_from]
            + [_top(k.item(i, "co"), NEIGHBOURS_PER_SOURCE) for i in co_from]
            + [_top(k.item(i, "next"), NEIGHBOURS_PER_SOURCE) for i in seq_from]
            + [("HGET", k.item(i, "meta"), "category") for i in looks]
            + [_top(k.item(i, "sessions"), self.per_item) for i in knn_from]
        )
        pco_rows, second = second[: len(pco_from)], second[len(pco_from) :]
        co_rows = second[: len(co_from)]
        seq_rows = second[len(co_from) : len(co_from) + len(seq_from)]
        cats = second[len(co_from) + len(seq_from) : len(second) - len(knn_from)]
        category = next((c.decode() for c in cats if c), "")
        dot, last, norm = neighbours(sid, knn_from, weight, second[len(second) - len(knn_from) :])
        picked = sample(last, self.per_item) if norm > 0 else []
        third = await self._round(
            ([_top(k.global_(f"pop:cat:{category}"), NEIGHBOURS_PER_SOURCE)] if category else [])
            + [("SMEMBERS", k.session(other, "items")) for other in picked]
        )
        trend = third[0] if category else []
        items = third[1:] if category else third
        voted, scores = vote(dot, norm, picked, items, self.sknn_k)
        return Gathered(
            parse_session(sid, recent, _fields(cart), set(bought), _fields(info)),
            decayed(popular),
            {i: decayed(row) for i, row in zip(co_from, co_rows, strict=True)},
            {i: decayed(row) for i, row in zip(seq_from, seq_rows, strict=True)},
            best_votes(voted, scores),
            decayed(trend),
            latest[0][0].decode() if latest else "",
            decayed(profile),
            {i: decayed(row) for i, row in zip(pco_from, pco_rows, strict=True)},
        )

    async def _profile(self, ask: Ask, distinct: int, info: dict[bytes, bytes]) -> list[bytes]:
        """A returning user's profile, as gather.lua reads it: for a short session only, the
        request's user else the session's stored one; one more round, only then."""
        if ask.profile_n <= 0 or distinct >= PROFILE_BELOW:
            return []
        stored = info.get(b"user_id", b"").decode()
        uid = ask.user_id or stored
        if not uid:
            return []
        [row] = await self._round([_top(self.keys.user(uid, "profile"), ask.profile_n)])
        return list(row)

    async def _round(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        if not commands:
            return []
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute())


def sources(recent: list[bytes], cart: Any) -> tuple[list[str], dict[str, float], list[str]]:
    """gather.lua's order: distinct items newest first, each with its V-SKNN weight, cart-only
    items after them; and the co-occurrence sources, cart items first."""
    order: list[str] = []
    weight: dict[str, float] = {}
    n = len(recent)
    for age, raw in enumerate(recent, 1):
        item = raw.split(b"\x1f", 1)[0].decode()
        if item not in weight:
            order.append(item)
            weight[item] = (n - age + 1) / n
    in_cart = [c.decode() for c in _fields(cart)]
    seen = set(order)
    order += [c for c in dict.fromkeys(in_cart) if c not in seen]
    carted = set(in_cart)
    co_from = [i for i in order if i in carted] + [i for i in order if i not in carted]
    return order, weight, co_from


def neighbours(
    sid: str, items: list[str], weight: Mapping[str, float], rows: list[list[bytes]]
) -> tuple[dict[str, float], dict[str, float], float]:
    """Per past session sharing an item: the summed weights of the shared items and its
    newest time; and the current session's norm (as gather.lua sums them, in order)."""
    dot: dict[str, float] = {}
    last: dict[str, float] = {}
    norm = 0.0
    for item, row in zip(items, rows, strict=True):
        w = weight[item]
        norm += w * w
        for j in range(0, len(row), 2):
            other, ts = row[j].decode(), float(row[j + 1])
            if other != sid:
                dot[other] = dot.get(other, 0.0) + w
                if ts > last.get(other, -1.0):
                    last[other] = ts
    return dot, last, math.sqrt(norm)


def sample(last: Mapping[str, float], size: int) -> list[str]:
    """The `size` most recent sessions (ties by id, as gather.lua keeps them)."""
    return sorted(last, key=lambda s: (-last[s], s))[:size]


def vote(
    dot: Mapping[str, float], norm: float, picked: list[str], items: list[Any], k: int
) -> tuple[list[bytes], list[int]]:
    """The k most similar sessions (cosine) vote for their items: votes in billionths."""
    sims = [
        (dot[s] / (math.sqrt(len(got)) * norm), s, got)
        for s, got in zip(picked, items, strict=True)
        if got
    ]
    sims.sort(key=lambda x: (-x[0], x[1]))
    score: dict[bytes, float] = {}
    for sim, _, got in sims[:k]:
        for item in got:
            score[item] = score.get(item, 0.0) + sim
    return list(score), [math.floor(v * 1e9 + 0.5) for v in score.values()]


def best_votes(items: list[bytes], billionths: list[int]) -> Scored:
    """The best SKNN_LIMIT votes, best first (ties by id, so every worker agrees)."""
    votes = [(item.decode(), v / 1e9) for item, v in zip(items, billionths, strict=True)]
    votes.sort(key=lambda v: (-v[1], v[0]))
    return votes[:SKNN_LIMIT]


def _top(key: str, n: int) -> tuple[Any, ...]:
    return ("ZREVRANGE", key, 0, n - 1, "WITHSCORES")


def _fields(raw: Any) -> dict[bytes, bytes]:
    return raw if isinstance(raw, dict) else hash_fields(raw)
