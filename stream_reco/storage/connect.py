"""Connections to Redis: one node, or a Redis Cluster when the settings say so."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from stream_reco.config import Settings

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
