"""Forgetting in Redis: a user's or a session's keys, list memberships and records removed, per
hash slot, on a single node and on a Redis Cluster alike."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from stream_reco.storage import connect
from stream_reco.storage.keys import Keys

# Every name a session's keys carry (storage/keys.py `session`), by the kind the audit counts
# them under. A name written but missing here would survive a forget: tests/integration/
# test_privacy.py scans a store after a simulated stream and fails on any name not listed.
SESSION_KINDS = {
    "recent": "session",
    "cart": "session",
    "bought": "session",
    "info": "session",
    "items": "session",
    "shown": "shown",  # the last answer's list with features, until the next event
    "ids": "dedup",  # the last event ids: a re-sent event is known by its id
    "marks": "dedup",  # Redis Cluster: the last offset applied per partition
    "outbox": "dedup",  # Redis Cluster: plans waiting for their batch's commit
}
# The bot guard's state is the `bot` field of the session's `info` hash: removed with it.
# A user's keys (`<prefix>:u:{<uid>}:<name>`): the profile, its sessions, its dedup marks.
USER_KINDS = {"profile": "user", "sessions": "user", "marks": "dedup"}
# A forgotten user's or session's tombstone (`u:{uid}:forgotten`, `s:{sid}:forgotten`, and per
# experiment `x:{x:<name>}:s:<sid>:forgotten`): the profile, shown-list and impression scripts
# write nothing for it while it lives. Longer than a consumer-group rebalance (a batch applied
# by one worker and redelivered to another, seconds to a minute), the answer lag bound
# (STREAM_RECO_ANSWER_MAX_LAG_MS) and a batch held through a Redis outage, so no redelivered
# batch or answer computed before the forget can write the user back; short enough that the
# name it carries is gone within minutes.
TOMBSTONE = "forgotten"
TOMBSTONE_TTL_S = 600
# Keys one SCAN step walks inside a script: few round trips over a large store, while each
# step stays short (Redis serves nobody else while a script runs). The full forget (the
# command line) takes big steps; the worker's background pass small ones with a pause between
# them, so answers interleave.
SCAN_COUNT = 20_000
GENTLE_COUNT = 1_000
GENTLE_PAUSE_S = 0.005
ZREM_CHUNK = 5_000  # lists cleaned in one pipeline

# KEYS: one session's keys, SESSION_KINDS order, then its tombstone (one hash slot); ARGV[1]:
# the tombstone's TTL. Atomic: no event of the session is applied between reading the items it
# joined and deleting its keys, so every item list the session is in is known. Returns {items
# (distinct, from its kNN set and its recent events), per key 1 if it existed, the user id its
# info named or ''}.
PURGE = """
local items, seen = {}, {}
local function add(item)
  if item and not seen[item] then
    seen[item] = true
    items[#items + 1] = item
  end
end
for _, item in ipairs(redis.call('SMEMBERS', KEYS[5])) do add(item) end
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local cut = string.find(raw, '\\31', 1, true)
  add(cut and string.sub(raw, 1, cut - 1) or nil)
end
local user = redis.call('HGET', KEYS[4], 'user_id') or ''
local gone = {}
for n = 1, #KEYS - 1 do gone[n] = redis.call('DEL', KEYS[n]) end
redis.call('SET', KEYS[#KEYS], '1', 'EX', ARGV[1])
return {items, gone, user}
"""


# One SCAN step, filtered where the keys are: only the keys that hold what is looked for cross
# the network, instead of every session's info hash or every item's list. Read-only; legacy
# (no flags), so on a cluster node it may read the node's keys of any slot.
# ARGV: cursor, MATCH pattern, COUNT, TYPE, then `hash` field and value (the info hashes that
# name the user) or `zset` and members (the lists holding any of them). Returns {cursor, keys}.
FIND = """
local got = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3], 'TYPE', ARGV[4])
local out = {}
for _, k in ipairs(got[2]) do
  if ARGV[4] == 'hash' then
    if redis.call('HGET', k, ARGV[5]) == ARGV[6] then out[#out + 1] = k end
  else
    for i = 5, #ARGV do
      if redis.call('ZSCORE', k, ARGV[i]) then
        out[#out + 1] = k
        break
      end
    end
  end
end
return {got[1], out}
"""


class Eraser:
    """Removes what the store holds about sessions and users; counts keys removed per kind."""

    def __init__(
        self, client: connect.AsyncClient, keys: Keys, *, count: int = SCAN_COUNT, pause: float = 0
    ) -> None:
        """`count`: keys per SCAN step; `pause`: seconds between steps (0: none)."""
        self.client, self.keys = client, keys
        self.count, self.pause = count, pause
        self._sha = ""

    async def listed(self, user_id: str) -> list[str]:
        """The sessions the user's profile lists (the identity part keeps the most recent)."""
        got = await self.client.zrange(self.keys.user(user_id, "sessions"), 0, -1)
        return [raw.decode() for raw in got]

    async def live(self, user_id: str) -> list[str]:
        """Every live session whose info names the user: a SCAN of the whole keyspace, in
        short server-side steps (forget's cost, never the hot path's)."""
        head, tail = self.keys.session_pattern()
        suffix = tail + "info"
        found = await self._find(f"{head}*{suffix}", "hash", "user_id", user_id)
        return [key[len(head) : -len(suffix)] for key in found]

    async def _find(self, match: str, kind: str, *what: str) -> list[str]:
        """Every key (on every primary) that FIND keeps, walked in short server-side steps."""
        out: list[str] = []
        for node in await self._nodes():
            cursor = "0"
            while True:
                if self.pause:
                    await asyncio.sleep(self.pause)  # let answers through between steps
                args = (cursor, match, self.count, kind, *what)
                if node is None:
                    got = await self.client.execute_command("EVAL", FIND, 0, *args)
                else:
                    call = self.client.execute_command
                    got = await call("EVAL", FIND, 0, *args, target_nodes=node)
                cursor = got[0].decode() if isinstance(got[0], bytes) else str(got[0])
                out += [k.decode() for k in got[1]]
                if cursor == "0":
                    break
        return out

    async def _nodes(self) -> list[Any]:
        """Each primary of a cluster; [None] for the one node of a single Redis."""
        if isinstance(self.client, RedisCluster):
            await self.client.initialize()
            return list(self.client.get_primaries())
        return [None]

    async def sessions(self, session_ids: Sequence[str]) -> Counter[str]:
        """Each session's keys (one atomic script per session), then the session out of the
        kNN list of every item it joined and out of its user's list of sessions."""
        removed: Counter[str] = Counter()
        if not session_ids:
            return removed
        names = list(SESSION_KINDS)
        try:
            replies = await self._purge_all(session_ids, names)
        except NoScriptError:  # a restarted or failed-over primary: load it again, once
            self._sha = ""
            replies = await self._purge_all(session_ids, names)
        members: list[tuple[str, str]] = []
        users: list[tuple[str, str]] = []
        for sid, (items, gone, user) in zip(session_ids, replies, strict=True):
            for name, flag in zip(names, gone, strict=True):
                removed[SESSION_KINDS[name]] += int(flag)
            members += [(self.keys.item(raw.decode(), "sessions"), sid) for raw in items]
            if user:
                users.append((self.keys.user(user.decode(), "sessions"), sid))
        removed["sknn_membership"] += await self._zrem(members)
        removed["user_membership"] += await self._zrem(users)
        return removed

    async def _purge_all(self, session_ids: Sequence[str], names: list[str]) -> list[Any]:
        if not self._sha:
            # On a cluster, loaded on every primary (redis-py sends SCRIPT LOAD to each).
            self._sha = str(await self.client.script_load(PURGE))
        pipe = self.client.pipeline(transaction=False)
        for sid in session_ids:
            keys = [self.keys.session(sid, name) for name in [*names, TOMBSTONE]]
            # EVALSHA by name: a cluster pipeline routes it by its keys (one slot per call).
            pipe.execute_command("EVALSHA", self._sha, len(keys), *keys, TOMBSTONE_TTL_S)
        return list(await pipe.execute())

    async def _zrem(self, members: Iterable[tuple[str, str]]) -> int:
        """Each (sorted set, member) pair's member removed; how many were there."""
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for key, sid in members:
            pipe.zrem(key, sid)
            n += 1
        return sum(int(x) for x in await pipe.execute()) if n else 0

    async def sweep(self, session_ids: Sequence[str]) -> int:
        """The sessions out of every item's kNN list that holds one, found by a SCAN of them
        all: for the items a session's own keys no longer name (past its cap of distinct
        items, or dropped when the bot guard flagged it). Returns how many it removed."""
        if not session_ids:
            return 0
        head, tail = self.keys.item_pattern("sessions")
        found = await self._find(f"{head}*{tail}", "zset", *session_ids)
        removed = 0
        for n in range(0, len(found), ZREM_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for key in found[n : n + ZREM_CHUNK]:
                pipe.zrem(key, *session_ids)
            removed += sum(int(x) for x in await pipe.execute())
        return removed

    async def user(self, user_id: str) -> Counter[str]:
        """The user's own keys (profile, session list, marks), after its tombstone: one slot,
        one connection, so in that order; a profile update after it writes nothing."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.keys.user(user_id, TOMBSTONE), b"1", ex=TOMBSTONE_TTL_S)
        for name in USER_KINDS:
            pipe.delete(self.keys.user(user_id, name))
        removed: Counter[str] = Counter()
        for name, flag in zip(USER_KINDS, (await pipe.execute())[1:], strict=True):
            removed[USER_KINDS[name]] += int(flag)
        return removed
