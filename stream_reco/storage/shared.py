"""Redis state shared by all workers beyond sessions and models: shown lists, the learner's
examples and lease, published documents (model weights, rules)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis

from stream_reco.config import Settings
from stream_reco.errors import ERRORS
from stream_reco.storage.keys import Keys

T = TypeVar("T")
# One queued example at most: a shown list with its features is a few kB; anything far larger
# is not a list the worker made. With STREAM_RECO_EXAMPLES_MAX it bounds the queue in bytes.
EXAMPLE_MAX_BYTES = 32 * 1024


class SharedState:
    """Mixed into RedisStore: the same client, key builder and bounded retry."""

    client: aioredis.Redis
    settings: Settings
    keys: Keys

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        raise NotImplementedError

    async def remember_shown(self, session_id: str, shown: bytes) -> None:
        """What the session was last shown (candidates with features), until its next event."""
        key = self.keys.session(session_id, "shown")
        await self._retry(
            "remember_shown", lambda: self.client.set(key, shown, ex=self.settings.session_ttl_s)
        )

    async def take_shown(self, session_ids: Sequence[str]) -> dict[str, bytes]:
        """Each session's last shown list, removed as it is read: one event answers it once."""
        if not session_ids:
            return {}

        async def run() -> dict[str, bytes]:
            pipe = self.client.pipeline(transaction=False)
            for sid in session_ids:
                pipe.getdel(self.keys.session(sid, "shown"))
            got = await pipe.execute()
            return {sid: raw for sid, raw in zip(session_ids, got, strict=True) if raw}

        return await self._retry("take_shown", run)

    async def push_examples(self, examples: Sequence[bytes], cap: int) -> None:
        """Queue training examples for the one learner; the oldest go first past `cap`, and one
        over EXAMPLE_MAX_BYTES is dropped (counted): the queue holds at most cap x that."""
        fit = [x for x in examples if len(x) <= EXAMPLE_MAX_BYTES]
        if len(fit) < len(examples):
            ERRORS["example_too_big"] += len(examples) - len(fit)
        examples = fit
        if not examples:
            return
        key = self.keys.global_("examples")

        async def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(key, *examples)
            pipe.ltrim(key, 0, cap - 1)
            await pipe.execute()

        await self._retry("push_examples", run)

    async def pop_examples(self, n: int) -> list[bytes]:
        key = self.keys.global_("examples")
        got = await self._retry("pop_examples", lambda: self.client.rpop(key, n))
        return list(got or [])

    async def hold_lease(self, name: str, owner: str, ttl_ms: int) -> bool:
        """Take or renew a named lease (e.g. the single learner); False if someone else has it."""
        key = self.keys.global_(f"lease:{name}")

        async def run() -> bool:
            if await self.client.set(key, owner, nx=True, px=ttl_ms):
                return True
            if await self.client.get(key) == owner.encode():
                await self.client.pexpire(key, ttl_ms)
                return True
            return False

        return await self._retry("hold_lease", run)

    async def publish(self, name: str, doc: bytes) -> None:
        """Publish a plain-data document (model weights, rules) for every worker to load."""
        key = self.keys.global_(name)
        await self._retry("publish", lambda: self.client.set(key, doc))

    async def read_published(self, name: str) -> bytes | None:
        key = self.keys.global_(name)
        return await self._retry("read_published", lambda: self.client.get(key))
