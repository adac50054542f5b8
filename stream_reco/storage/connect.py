"""Connections to Redis: one node, or a Redis Cluster when the settings say so."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stream_reco import metrics
from stream_reco.config import Settings
from stream_reco.errors import StoreError

RESHARDING = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")
# RESP2: redis-py 8 on RESP3 re-encodes every zset score to text and back, for no gain here.
PROTOCOL = 2
AsyncClient = aioredis.Redis | AsyncRedisCluster
SyncClient = redis.Redis | RedisCluster


def async_client(
    settings: Settings, *, max_connections: int = 64, socket_timeout: float = 5.0
) -> AsyncClient:
    """The async client the store uses. On one node a blocking pool: a burst waits for a
    connection instead of failing. A cluster client keeps a pool per node (redis-py has no
    blocking one for clusters); `max_connections` bounds each."""
    if settings.redis_cluster:
        return AsyncRedisCluster.from_url(
            settings.redis_url,
            protocol=PROTOCOL,
            socket_timeout=socket_timeout,
            max_connections=max_connections,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        socket_timeout=socket_timeout,
        protocol=PROTOCOL,
        max_connections=max_connections,
        timeout=10,
    )
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


def resharding(exc: BaseException) -> bool:
    """A node's reply while a cluster's slots move or fail over (MOVED, ASK, CLUSTERDOWN,
    TRYAGAIN): waited out, with the slot map read again (Transactions.refresh)."""
    if isinstance(exc, AskError | ClusterDownError | TryAgainError):  # MovedError is an AskError
        return True
    return isinstance(exc, ResponseError) and str(exc).startswith(RESHARDING)


class Transactions:
    """MULTI/EXEC pipelines on one hash slot. On one node the client's own. On a cluster a
    plain client on the node that owns the slot: redis-py's async cluster transactions queue
    each command through an event loop of their own, whose connections the caller's loop then
    cannot use."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._nodes: dict[tuple[str, int], aioredis.Redis] = {}

    async def pipeline(self, key: str) -> Any:
        client = self.client
        if not isinstance(client, AsyncRedisCluster):
            return client.pipeline(transaction=True)
        await client.initialize()  # learns the slots on its first use; then a no-op
        node = client.get_node_from_key(key)
        plain = self._nodes.get((node.host, node.port))
        if plain is None:
            pool = aioredis.ConnectionPool(
                connection_class=node.connection_class, max_connections=8, **node.connection_kwargs
            )
            plain = self._nodes[(node.host, node.port)] = aioredis.Redis(connection_pool=pool)
        return plain.pipeline(transaction=True)

    async def refresh(self) -> None:
        """Read the cluster's slot map again (after MOVED, ASK or CLUSTERDOWN from a node)."""
        if isinstance(self.client, AsyncRedisCluster):
            await self.client.nodes_manager.initialize()

    async def close(self) -> None:
        for plain in self._nodes.values():
            await plain.aclose(close_connection_pool=True)
        self._nodes.clear()


def sync_client(settings: Settings, **options: Any) -> SyncClient:
    """A blocking client for tools and callbacks (digest, bench, the consumer's rebalance)."""
    options.setdefault("protocol", PROTOCOL)
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def primaries(client: SyncClient) -> list[redis.Redis]:
    """One plain client per primary (the node itself on a single Redis): for what each node
    answers for itself (INFO, CONFIG GET, SCAN, MEMORY USAGE)."""
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(node) for node in client.get_primaries()]
    return [client]


T = TypeVar("T")
BRIEF_TRIES = 3


async def briefly(what: str, call: Callable[[], Awaitable[T]], tries: int = BRIEF_TRIES) -> T:
    """A few quick tries, for work that follows an applied batch or an answer (experiments,
    profiles): its caller's budget bounds the rest, and a failure costs only that work
    (StoreError, which the caller counts). A script's own error is no outage: not retried."""
    for attempt in range(1, tries + 1):
        try:
            return await call()
        except (RedisConnectionError, RedisTimeoutError, OSError, ResponseError) as exc:
            if isinstance(exc, ResponseError) and not resharding(exc):
                raise StoreError(f"{what}: Redis refused it: {exc}") from exc
            if attempt == tries:
                metrics.redis_gave_up(what)
                raise StoreError(f"{what}: Redis unavailable after {tries} tries") from exc
            metrics.redis_retried(what)
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")
