"""The store's bounded retry: which Redis failures are waited out, how often, and how long."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.exceptions import (
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_reco import logs, metrics
from stream_reco.errors import StoreCredentialsError, StoreError
from stream_reco.storage import connect

T = TypeVar("T")
RETRIES = 5
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


class Retrying:
    """Mixed into RedisStore (first, so its `_retry` is the one the other mixins call)."""

    cluster: bool
    transactions: connect.Transactions

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


def transient(exc: ResponseError) -> bool:
    """An error reply that passes (memory freed, failover done, script ended): waited out."""
    # A cluster's slots moving or failing over too (connect.resharding): the slot map is
    # read again before the retry.
    return (
        isinstance(exc, _TRANSIENT_CLASSES)
        or bool(_TRANSIENT_TEXT.search(str(exc)))
        or connect.resharding(exc)
    )
