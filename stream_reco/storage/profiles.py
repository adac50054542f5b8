"""Returning users' profiles in Redis: how a batch's signed-in events join them (exactly once,
one script call per user, a second for users whose sessions join now) and how a profile is
read back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import orjson
from redis.exceptions import NoScriptError

from stream_reco import bots
from stream_reco.config import Settings
from stream_reco.decay import log_weight
from stream_reco.events import Event
from stream_reco.state import parse_entry
from stream_reco.storage import connect
from stream_reco.storage.apply import Position
from stream_reco.storage.codec import Scored, decayed
from stream_reco.storage.keys import Keys

T = TypeVar("T")
MAX_IDS = 100  # recent event ids a user's marks keep: a re-sent event is known by its id
NAMES = ("profile", "sessions", "marks")  # every key of a user: u:{<uid>}:<name>
TOMBSTONE = "forgotten"  # storage/forget.py's tombstone of a forgotten user (and session)
JOINED = "joined"  # the `info` field naming the user a session joined with its history


def _text(name: str) -> str:
    return resources.files("stream_reco.storage").joinpath(name).read_text()


# common.lua's capped_add is the same log-space decayed sum as popularity's.
PROFILE = "local cfg = cjson.decode(ARGV[1])\n" + _text("common.lua") + _text("profile.lua")
# KEYS[1] a session's info, ARGV[1] the user it joined: set only on an info that exists.
MARK = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'joined', ARGV[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Joined:
    """One user's part of a batch: its sessions (with the history of those that join now)
    and its events in batch order."""

    user_id: str
    sessions: list[list[Any]]  # [session id, history rows, True (joined before) or False]
    rows: list[list[Any]]  # [session index (1-based), event id, marker, offset, item, log_w, ts]


@dataclass(frozen=True, slots=True)
class Stored:
    """What a session's own keys say when it joins a profile: its interactions, the user it
    joined before (`info` field `joined`) and whether the bot guard flagged it."""

    history: list[bytes]
    joined: str
    bot: bool


def plan(
    settings: Settings, events: Sequence[Event], at: Sequence[Position | None]
) -> list[Joined]:
    """Group a batch by user: a session's user is the last user id its events in the batch
    carry; a session none of whose events in the batch carries one is left out (no read per
    anonymous session and batch: a signed-in storefront sends the user id with every event,
    docs/contract.md). No history yet: the profile script asks for it (`with_history`)."""
    half_life = settings.profile_half_life_s
    user_of: dict[str, str] = {}
    for e in events:
        if e.user_id:
            user_of[e.session_id] = e.user_id
    by_user: dict[str, Joined] = {}
    index: dict[str, int] = {}
    for e, p in zip(events, at, strict=True):
        uid = user_of.get(e.session_id)
        if not uid:
            continue
        joined = by_user.get(uid)
        if joined is None:
            joined = by_user[uid] = Joined(uid, [], [])
        if e.session_id not in index:
            joined.sessions.append([e.session_id, False])
            index[e.session_id] = len(joined.sessions)
        marker, offset = (p.marker, str(p.offset)) if p is not None else ("", "-1")
        lw = log_weight(settings.weight(e.type), e.ts, half_life)
        joined.rows.append([index[e.session_id], e.event_id, marker, offset, e.item_id, lw, e.ts])
    return list(by_user.values())


def with_history(
    settings: Settings, joined: Joined, needed: Sequence[int], stored: dict[str, Stored]
) -> Joined | None:
    """The user's part again, the sessions the script `needed` with what their keys hold: a
    session that joined this user before comes back without its history (counted already), a
    flagged one is left out with its events (a bot's history feeds nobody's profile). None when
    no session is left."""
    half_life = settings.profile_half_life_s
    dropped: set[int] = set()
    sessions = [list(s) for s in joined.sessions]
    for n in needed:
        sid = sessions[n - 1][0]
        got = stored.get(sid, Stored([], "", False))
        if got.bot:
            dropped.add(n)
        elif got.joined == joined.user_id:
            sessions[n - 1][1] = True
        else:
            past = []
            for raw in got.history:
                it = parse_entry(raw)
                lw = log_weight(settings.weight(it.type), it.ts, half_life)
                past.append([it.item_id, lw, it.ts])
            sessions[n - 1][1] = past
    renumber: dict[int, int] = {}
    kept: list[list[Any]] = []
    for n, s in enumerate(sessions, 1):
        if n not in dropped:
            kept.append(s)
            renumber[n] = len(kept)
    rows = [[renumber[r[0]], *r[1:]] for r in joined.rows if r[0] in renumber]
    return Joined(joined.user_id, kept, rows) if kept else None


class Profiles:
    """Per user a decayed, bounded item profile, the user's recent sessions and the marks that
    make every update count once; all under the user's hash tag {<uid>}."""

    def __init__(self, client: connect.AsyncClient, keys: Keys, settings: Settings) -> None:
        self.client, self.keys, self.settings = client, keys, settings
        self._script = client.register_script(PROFILE)
        self._mark_script = client.register_script(MARK)
        self._config = orjson.dumps(
            {
                "max_items": settings.profile_max_items,
                "max_sessions": settings.profile_max_sessions,
                "max_ids": MAX_IDS,
                "ttl": settings.profile_ttl_s,
            }
        )

    def keys_of(self, user_id: str) -> list[str]:
        return [self.keys.user(user_id, name) for name in NAMES]

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await connect.briefly(what, call)

    async def update(
        self, events: Sequence[Event], positions: Sequence[Position | None] | None = None
    ) -> int:
        """Join a batch's signed-in events to their users' profiles, after the batch was
        applied. Pass every event with its position, redeliveries too: the marks skip what was
        counted before. No read before the script: it names the sessions that join now, whose
        keys are read then (a second call for their users). Returns how many interactions were
        added."""
        if not events:
            return 0
        at = positions if positions is not None else [None] * len(events)
        joined = plan(self.settings, events, at)
        if not joined:
            return 0
        done = await self._retry("profile_update", lambda: self._apply(joined))
        added = sum(n for n, _, _ in done)
        # A redelivery of sessions that joined before: a crash may have come between their
        # join and its mark, so their `info` is marked again (idempotent).
        again_marks = [
            (j.sessions[n - 1][0], j.user_id)
            for j, (_, _, redone) in zip(joined, done, strict=True)
            for n in redone
        ]
        if again_marks:
            await self._retry("profile_remark", lambda: self._mark_pairs(again_marks))
        waiting = [(j, need) for j, (_, need, _) in zip(joined, done, strict=True) if need]
        if not waiting:
            return added
        sids = [j.sessions[n - 1][0] for j, need in waiting for n in need]
        stored = await self._retry("profile_sessions", lambda: self._stored(sids))
        again = [with_history(self.settings, j, need, stored) for j, need in waiting]
        second = [j for j in again if j is not None]
        if second:
            done = await self._retry("profile_join", lambda: self._apply(second))
            added += sum(n for n, _, _ in done)
            await self._retry("profile_mark", lambda: self._mark(second))
        return added

    async def _stored(self, session_ids: Sequence[str]) -> dict[str, Stored]:
        """Each joining session's interactions, the user it joined before and its bot flag."""
        pipe = self.client.pipeline(transaction=False)
        for sid in session_ids:
            pipe.lrange(self.keys.session(sid, "recent"), 0, -1)
            pipe.hmget(self.keys.session(sid, "info"), JOINED, "bot")
        got = await pipe.execute()
        out: dict[str, Stored] = {}
        for n, sid in enumerate(session_ids):
            history, (joined, bot) = got[2 * n], got[2 * n + 1]
            flagged = bool(bot) and bots.state(bot)[1] != ""
            out[sid] = Stored(history, joined.decode() if joined else "", flagged)
        return out

    async def _mark(self, joined: list[Joined]) -> None:
        """Each session that joined with its history says so in its own `info` (its user id),
        which lives as long as the history: if it leaves `sessions` past the bound and comes
        back, its history is not counted again. Only on an `info` that exists (a key written
        here would have no TTL)."""
        pairs = [
            (sid, j.user_id)
            for j in joined
            for sid, history in j.sessions
            if isinstance(history, list)
        ]
        await self._mark_pairs(pairs)

    async def _mark_pairs(self, pairs: Sequence[tuple[str, str]]) -> None:
        """Write `joined` = the user into each session's existing `info`."""
        if not pairs:
            return
        pipe = self.client.pipeline(transaction=False)
        for sid, user_id in pairs:
            info = self.keys.session(sid, "info")
            pipe.execute_command("EVALSHA", self._mark_script.sha, 1, info, user_id)
        try:
            await pipe.execute()
        except NoScriptError:
            await self.client.script_load(MARK)
            await self._mark_pairs(pairs)

    async def _apply(self, joined: list[Joined]) -> list[tuple[int, list[int], list[int]]]:
        """One script call per user, all in one pipeline (on a cluster, one per node): per user
        the interactions added and the sessions whose history the script needs."""

        async def calls() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for j in joined:
                keys = [*self.keys_of(j.user_id), self.keys.user(j.user_id, TOMBSTONE)]
                args = [self._config, orjson.dumps(j.sessions), orjson.dumps(j.rows)]
                pipe.execute_command("EVALSHA", self._script.sha, len(keys), *keys, *args)
            return list(await pipe.execute())

        try:
            done = await calls()
        except NoScriptError:
            # A new or failed-over server: load it, then run all again (the marks make the
            # calls that did run change nothing the second time).
            await self.client.script_load(PROFILE)
            done = await calls()
        return [(int(r[0]), [int(x) for x in r[1]], [int(x) for x in r[2]]) for r in done]

    async def read(self, user_id: str, n: int = 100) -> tuple[Scored, list[str]]:
        """A user's top-n profile items (decayed, relative to the first) and their sessions,
        newest first."""

        async def run() -> tuple[Scored, list[str]]:
            profile, sessions, _ = self.keys_of(user_id)
            pipe = self.client.pipeline(transaction=False)
            pipe.zrevrange(profile, 0, n - 1, withscores=True)
            pipe.zrevrange(sessions, 0, -1)
            items, sids = await pipe.execute()
            flat = [x for item, score in items for x in (item, repr(score).encode())]
            return decayed(flat), [s.decode() for s in sids]

        return await self._retry("profile_read", run)
