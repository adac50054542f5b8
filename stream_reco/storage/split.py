"""A batch of events on a Redis Cluster: the sessions' step, then the items', then the one
shop-wide step, each a script on one hash slot and each exactly once on its own."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisError, ResponseError

from stream_reco.errors import ERRORS
from stream_reco.storage import scripts
from stream_reco.storage.apply import Applied, Position
from stream_reco.storage.keys import Keys

LOADS = 3  # tries of a batch when a node has lost the step scripts (failover, new node)
STEPS = ("session_step.lua", "item_step.lua", "global_step.lua")
SESSION_KEYS = ("recent", "cart", "bought", "info", "ids", "items", "outbox", "marks")
ITEM_KEYS = ("co", "next", "sessions", "meta", "marks")
Rows = list[list[Any]]  # apply.rows decoded: one list per event
# Per event of the session step: status (1 applied now, 2 by an earlier try, 0 seen before),
# its bot flag as session_step.lua answers it ('' none; '=' before it: its session's sticky
# flag, for an event seen before), the rows it teaches items.
Plan = tuple[int, str, Rows]
NOTHING: Plan = (0, "", [])


class Split:
    """The three steps of apply_events on a cluster (storage/apply_event.lua's work, cut
    where it crosses slots). A crash between two steps, a retry or a redelivery with other
    batch cuts applies every effect once: the session step keeps each plan in an outbox until
    the shop-wide step commits it, the item step keeps a mark per item and position."""

    def __init__(self, client: RedisCluster, keys: Keys, config: bytes) -> None:
        self.client, self.keys, self.config = client, keys, config
        self.sha: dict[str, str] = {}

    async def load(self) -> None:
        """Load the step scripts on every primary (a failover or a new node has none)."""
        for name in STEPS:
            self.sha[name] = await self.client.script_load(scripts.event_script(name))

    async def apply(
        self, rows: Rows, at: Sequence[Position | None], known: Mapping[str, int]
    ) -> Applied:
        """Apply a batch (rows as apply.rows makes them, their positions, how far this worker
        knows it applied each position); per event whether it was applied now, and its
        session's bot flag (bots.lua, run by the session step)."""
        for _ in range(LOADS - 1):
            try:
                return await self._apply(rows, at, known)
            except NoScriptError:
                await self.load()  # a failover or reshard: the steps are safe to run again
        return await self._apply(rows, at, known)

    async def _apply(
        self, rows: Rows, at: Sequence[Position | None], known: Mapping[str, int]
    ) -> Applied:
        if not self.sha:
            await self.load()
        done = await self.watermark(at)
        _refuse_if_rewound(at, done, known)
        todo = pending(at, done)
        # Every event, the committed ones too: their sessions' sticky bot flags (a redelivered
        # event of a flagged session stays flagged, as on one node).
        planned = await self.sessions(rows, list(range(len(rows))), done)
        categories = await self.items(rows, planned)
        await self.commit(rows, todo, planned, categories, at, known)
        plans = [planned.get(n, NOTHING) for n in range(len(rows))]
        # A plan an unfinished try made (status 2) is committed now, by this call: its flag
        # counts here, the only time (that try never got this far).
        applied = Applied(
            (p[0] == 1 for p in plans), [p[1] for p in plans], (p[0] > 0 for p in plans)
        )
        try:
            await self.tidy(rows, planned)
        except RedisError:
            # Committed already: a retry would find the batch done and push nothing for it.
            ERRORS["outbox_tidy_failed"] += 1
        return applied

    async def watermark(self, at: Sequence[Position | None]) -> dict[str, int]:
        """Per position of the batch, the last offset the shop-wide step committed (outbox
        entries of other positions are tidied after their commit, or expire)."""
        markers = sorted({p.marker for p in at if p is not None})
        if not markers:
            return {}
        got = await self.client.hmget(self.keys.global_("offsets"), markers)
        return {m: int(v) for m, v in zip(markers, got, strict=True) if v is not None}

    async def sessions(self, rows: Rows, todo: list[int], done: dict[str, int]) -> dict[int, Plan]:
        """Step 1: per event its status, bot flag and the rows it teaches items; events at
        or before `done` (committed) are only asked their sessions' flags."""
        groups = by_slot(todo, lambda n: self.keys.session(rows[n][1], "recent"))
        watermark = orjson.dumps({m: str(o) for m, o in done.items()})
        pipe = self.client.pipeline()
        calls: list[list[int]] = []
        # One call per slot, however many events: two calls for one session could apply its
        # events out of order when the first fails part way.
        for chunk in groups:
            sids = dict.fromkeys(rows[n][1] for n in chunk)
            keys = [self.keys.session(s, k) for s in sids for k in SESSION_KEYS]
            body = orjson.dumps([rows[n] for n in chunk])
            self._call(pipe, "session_step.lua", keys, body, watermark)
            calls.append(chunk)
        out: dict[int, Plan] = {}
        for chunk, reply in zip(calls, await pipe.execute(), strict=True):
            for n, (status, flag, *planned) in zip(chunk, reply, strict=True):
                taught = [[_text(v) for v in row] for row in planned]
                out[n] = (int(status), _text(flag), taught)
        return out

    async def items(self, rows: Rows, planned: dict[int, Plan]) -> dict[int, str]:
        """Step 2: the planned rows on their items' slots; the category of each event's item."""
        flat: Rows = []
        for n in sorted(planned):
            position, offset = rows[n][11], rows[n][12]
            flat += [[position, offset, n, *row] for row in planned[n][2]]
        if not flat:
            return {}
        pipe = self.client.pipeline()
        for members in by_slot(range(len(flat)), lambda r: self.keys.item(flat[r][3], "co")):
            targets = dict.fromkeys(flat[r][3] for r in members)
            keys = [self.keys.item(t, k) for t in targets for k in ITEM_KEYS]
            self._call(pipe, "item_step.lua", keys, orjson.dumps([flat[r] for r in members]))
        categories: dict[int, str] = {}
        for reply in await pipe.execute():
            for index, category in zip(reply[::2], reply[1::2], strict=True):
                categories[int(index)] = _text(category)
        return categories

    async def commit(
        self,
        rows: Rows,
        todo: list[int],
        planned: dict[int, Plan],
        categories: dict[int, str],
        at: Sequence[Position | None],
        known: Mapping[str, int],
    ) -> None:
        """Step 3: popularity, clock, count and offsets in the {g} slot: the batch's commit."""
        if not todo:
            return
        shop: Rows = []
        for n in todo:
            counted = planned[n][0] > 0
            # A flagged session's event (bots.lua) counts as applied, not as popular; '=': a
            # kept plan made before its session's flag (the flag is the session's, not its).
            learned = rows[n][7] == 1 and planned[n][1][:1] in ("", "=")
            pop = rows[n][9] if counted and learned else None
            category = categories.get(n, "")
            shop.append(
                [rows[n][11], rows[n][12], rows[n][3], pop, category, rows[n][4], int(counted)]
            )
        named = sorted({row[4] for row in shop if row[4] and row[3] is not None})
        g = self.keys.global_
        keys = [
            g("pop"),
            g("clock"),
            g("applied"),
            g("offsets"),
            *(g(f"pop:cat:{c}") for c in named),
        ]
        mine = {p.marker for n in todo if (p := at[n]) is not None}
        check = {m: str(known[m]) for m in mine if m in known}
        pipe = self.client.pipeline()
        self._call(pipe, "global_step.lua", keys, orjson.dumps(shop), orjson.dumps(check))
        await pipe.execute()

    async def tidy(self, rows: Rows, planned: dict[int, Plan]) -> None:
        """After the commit: the batch's plans leave their sessions' outboxes (else each
        session would keep its last batch's plans until its next event or its lifetime).
        Only tidying: a batch whose tidy fails is pruned by the session step later (and
        counted in ERRORS, outbox_tidy_failed)."""
        kept: dict[str, list[str]] = defaultdict(list)
        for n, (status, _, _) in planned.items():
            if status > 0:
                kept[rows[n][1]].append(rows[n][0])
        if not kept:
            return
        pipe = self.client.pipeline()
        for sid, ids in kept.items():
            pipe.hdel(self.keys.session(sid, "outbox"), *ids)
        await pipe.execute()

    def _call(self, pipe: Any, step: str, keys: list[str], *args: bytes) -> None:
        # EVALSHA by name: redis-py's cluster pipeline refuses its evalsha() method but routes
        # the command by its keys, which must all share one slot.
        pipe.execute_command("EVALSHA", self.sha[step], len(keys), *keys, self.config, *args)


def pending(at: Sequence[Position | None], done: Mapping[str, int]) -> list[int]:
    """The events of a batch the shop-wide step has not committed yet."""
    return [n for n, p in enumerate(at) if p is None or p.offset > done.get(p.marker, -1)]


def by_slot(members: Sequence[int] | range, key_of: Callable[[int], str]) -> list[list[int]]:
    """Members by the hash slot of their key, each group in the original order."""
    slots: dict[int, list[int]] = defaultdict(list)
    for m in members:
        slots[key_slot(key_of(m).encode())].append(m)
    return list(slots.values())


def _refuse_if_rewound(
    at: Sequence[Position | None], done: Mapping[str, int], known: Mapping[str, int]
) -> None:
    """Before any step writes: a store behind what this worker applied lost acknowledged
    writes, and must be caught up from Kafka first (the same refusal as apply_event.lua's)."""
    for marker in sorted({p.marker for p in at if p is not None}):
        if marker in known and done.get(marker, -1) < known[marker]:
            have = done.get(marker, -1)
            raise ResponseError(f"REWOUND {marker}: at {have}, had reached {known[marker]}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
