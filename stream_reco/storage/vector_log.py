"""Item vectors in Redis with a capped change log, so every worker converges to one ANN index."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_reco.candidates.vectors import DIM, from_bytes, to_bytes
from stream_reco.errors import LogTrimmed, StoreError
from stream_reco.storage import connect
from stream_reco.storage.keys import Keys

log = logging.getLogger(__name__)
T = TypeVar("T")
START = "0-0"  # the position before any change
STREAM_ID = re.compile(r"\d+-\d+")
RETRIES = 3
# KEYS: vectors, base, log (one hash tag); ARGV: maxlen, then item, vector, the base it was
# blended from. Checked and written in one step: an item removed, or given a new catalogue
# vector, since its base was read keeps what the catalogue says.
BLEND_SCRIPT = """
local written = 0
for i = 2, #ARGV, 3 do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 2] then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'item', ARGV[i], 'op', 'upsert')
    written = written + 1
  end
end
return written
"""
Change = tuple[str, np.ndarray | None]  # an item and its current vector; None: removed


class VectorLog:
    """The current vector of every item (a hash) and an append-only log of which items changed
    (a stream capped at about `maxlen` entries). A worker applies `changes_since` its index's
    position; when that position has been trimmed away it rebuilds from `all_vectors`.

    Log entries name the item only: readers fetch its *current* vector, so applying a change
    twice or out of date is harmless, and the log stays small. `client` must answer in bytes
    (no decode_responses), like RedisStore's."""

    def __init__(
        self,
        client: aioredis.Redis,
        keys: Keys,
        dim: int = DIM,
        maxlen: int = 100_000,
        transactions: connect.Transactions | None = None,
    ) -> None:
        if dim < 1 or maxlen < 1:
            raise ValueError("dim and maxlen must be >= 1")
        self.client = client
        self.transactions = transactions or connect.Transactions(client)
        self.dim = dim
        self.maxlen = maxlen
        self.vectors_key = keys.vectors("items")
        self.log_key = keys.vectors("log")
        # The catalogue's own vectors, which blending never changes: behaviour is always mixed
        # into these, so repeated rounds do not drift.
        self.base_key = keys.vectors("base")
        self._blend = client.register_script(BLEND_SCRIPT)

    async def publish(self, item_id: str, vector: np.ndarray | None) -> str:
        """Store (None: delete) the item's vector and log the change; the log position after it."""
        return await self.publish_many([(item_id, vector)])

    async def publish_many(self, changes: Sequence[Change]) -> str:
        """`publish` for a batch, in one transaction; the log position after the last change.
        These are the catalogue's vectors: they are kept as the items' base vectors too. An
        item whose catalogue vector is unchanged (a stock or price update) is left as it is,
        so its behavioural blend survives."""
        if not changes:
            raise ValueError("nothing to publish")
        rows = [(item, None if v is None else to_bytes(self._checked(v))) for item, v in changes]

        async def run() -> str:
            # Read, then write: safe because one consumer applies an item's catalogue records,
            # in order (its key picks the partition); blending never writes a base.
            olds = await self.client.hmget(self.base_key, [item for item, _ in rows])
            todo = [r for r, old in zip(rows, olds, strict=True) if r[1] is None or r[1] != old]
            # MULTI: a reader never sees a log entry whose vector is not written yet.
            pipe = await self.transactions.pipeline(self.log_key)
            for item_id, raw in todo:
                if raw is None:
                    pipe.hdel(self.vectors_key, item_id)
                    pipe.hdel(self.base_key, item_id)
                else:
                    pipe.hset(self.vectors_key, item_id, raw)
                    pipe.hset(self.base_key, item_id, raw)
                entry = {"item": item_id, "op": "remove" if raw is None else "upsert"}
                pipe.xadd(self.log_key, entry, maxlen=self.maxlen, approximate=True)
            pipe.xrevrange(self.log_key, count=1)
            latest = (await pipe.execute())[-1]
            return _text(latest[0][0]) if latest else START

        return await _retry("vector log publish", run, self.transactions)

    async def publish_blended(self, changes: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> int:
        """Replace items' indexed vectors (not their base) and log each change. Each change
        names the base vector it was made from: an item whose base is gone or changed since
        (removed, or updated by the catalogue meanwhile) is skipped. Returns how many were
        written."""
        if not changes:
            return 0
        args: list[str | bytes | int] = [self.maxlen]
        for item_id, vector, base in changes:
            args += [item_id, to_bytes(self._checked(vector)), to_bytes(base)]
        keys = [self.vectors_key, self.base_key, self.log_key]

        async def run() -> int:
            return int(await self._blend(keys=keys, args=args))

        return await _retry("vector log blend", run, self.transactions)

    async def base_vectors(self, items: Sequence[str]) -> dict[str, np.ndarray]:
        """The catalogue vectors of those of `items` that have one."""
        if not items:
            return {}

        async def run() -> dict[str, np.ndarray]:
            raws = await self.client.hmget(self.base_key, list(items))
            return {i: self._decoded(i, r) for i, r in zip(items, raws, strict=True) if r}

        return await _retry("vector log base", run, self.transactions)

    async def changes_since(self, position: str, count: int = 1000) -> tuple[str, list[Change]]:
        """Up to `count` log entries after `position` (exclusive), as the new position and each
        changed item once with its current vector. LogTrimmed if entries after `position` are
        gone (trimmed, or the log was deleted): rebuild from `all_vectors` then."""
        if not STREAM_ID.fullmatch(position) or count < 1:
            raise ValueError(f"position must be a stream id like 0-0 and count >= 1: {position!r}")

        async def run() -> tuple[str, list[Change]]:
            # Info and entries from one moment.
            pipe = await self.transactions.pipeline(self.log_key)
            pipe.xinfo_stream(self.log_key)
            pipe.xrange(self.log_key, min=f"({position}", count=count)
            info, entries = await pipe.execute(raise_on_error=False)
            for result in (info, entries):
                if isinstance(result, Exception) and not _missing(result):
                    raise result
            _check_position(position, None if _missing(info) else info, self.log_key)
            if not entries:
                return position, []
            items = list(dict.fromkeys(_text(fields[b"item"]) for _, fields in entries))
            return _text(entries[-1][0]), await self._current(items)

        return await _retry("vector log read", run, self.transactions)

    async def all_vectors(self, batch: int = 1000) -> tuple[str, dict[str, np.ndarray]]:
        """Every stored vector and the log position to follow from: taken before the scan, so a
        change made during it is read again later rather than missed."""

        async def position() -> str:
            try:
                info = await self.client.xinfo_stream(self.log_key)
            except ResponseError as exc:
                if _missing(exc):
                    return START
                raise
            return _text(info["last-generated-id"])

        async def scan(at: str) -> tuple[str, dict[str, np.ndarray]]:
            out: dict[str, np.ndarray] = {}
            async for item, raw in self.client.hscan_iter(self.vectors_key, count=batch):
                out[_text(item)] = self._decoded(_text(item), raw)
            return at, out

        at = await _retry("vector log position", position, self.transactions)
        return await _retry("vector log scan", lambda: scan(at), self.transactions)

    async def _current(self, items: list[str]) -> list[Change]:
        raws = await self.client.hmget(self.vectors_key, items)
        return [
            (item, None if raw is None else self._decoded(item, raw))
            for item, raw in zip(items, raws, strict=True)
        ]

    def _checked(self, vector: np.ndarray) -> np.ndarray:
        row = np.asarray(vector, dtype=np.float32)
        if row.shape != (self.dim,) or not np.all(np.isfinite(row)) or not np.any(row):
            raise ValueError(f"a vector must be {self.dim} finite numbers, not all zero")
        return row

    def _decoded(self, item_id: str, raw: bytes) -> np.ndarray:
        try:
            return from_bytes(raw, self.dim)
        except ValueError as exc:
            # Workers configured with different dimensions would build different indexes.
            raise StoreError(
                f"stored vector of {item_id!r}: {exc} (same dim everywhere?)"
            ) from None


def _check_position(position: str, info: dict[str, Any] | None, key: str) -> None:
    """Raise LogTrimmed unless every entry after `position` is still in the log. A trim drops
    the oldest entries first, so none after `position` was lost while it is still in the log
    (first entry <= position); once it has gone too, that is assumed (rarely wrongly: a
    rebuild too many, never a change missed)."""
    at = _parse(position)
    if info is None:  # no log at all: fine only for a reader that has applied nothing yet
        if at != (0, 0):
            raise LogTrimmed(f"{key} does not exist but position is {position}")
        return
    last = _parse(_text(info["last-generated-id"]))
    if at > last:
        raise LogTrimmed(f"{key} was recreated: position {position} is ahead of it")
    if at == last:
        return  # caught up: nothing after it to lose
    deleted = info.get("max-deleted-entry-id")  # XDEL (Redis >= 7); trims do not set it
    if deleted is not None and _parse(_text(deleted)) > at:
        raise LogTrimmed(f"{key} had entries after position {position} deleted")
    first = info.get("first-entry")
    if first is not None and _parse(_text(first[0])) <= at:
        return
    added = info.get("entries-added")  # Redis >= 7: equal to the length if nothing was dropped
    if at == (0, 0) and added is not None and int(added) == int(info["length"]):
        return
    raise LogTrimmed(f"{key} was trimmed past position {position}")


def _missing(value: object) -> bool:
    return isinstance(value, ResponseError) and "no such key" in str(value).lower()


def _parse(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _retry(
    what: str, call: Callable[[], Awaitable[T]], transactions: connect.Transactions
) -> T:
    """A few tries with backoff for connection trouble and a cluster's slots moving (the slot
    map read again first); other errors surface at once."""
    delay = 0.05
    for attempt in range(1, RETRIES + 1):
        try:
            return await call()
        except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
            if isinstance(exc, ResponseError) and not connect.resharding(exc):
                raise
            if attempt == RETRIES:
                raise StoreError(f"{what}: Redis unavailable after {RETRIES} tries: {exc}") from exc
            log.warning("%s failed (%s), retry %d in %.2fs", what, exc, attempt, delay)
            if isinstance(exc, ResponseError):
                await transactions.refresh()
            await asyncio.sleep(delay)
            delay *= 4
    raise AssertionError("unreachable")
