"""The store's plumbing on a Redis Cluster: clients, key scans and deletes, the offsets lookup,
the eviction check, digests."""

from __future__ import annotations

import asyncio
import dataclasses

from redis.cluster import RedisCluster

from stream_reco import digest
from stream_reco.bench.memory import used_memory
from stream_reco.config import Settings
from stream_reco.storage import connect
from stream_reco.storage.apply import marker, resume_at
from stream_reco.storage.keys import Keys
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import clear_store, uid


def _on(settings: Settings, tag: str) -> Settings:
    return dataclasses.replace(settings, key_prefix=f"{settings.key_prefix}-{uid(tag)}")


def _sessions(settings: Settings, n: int) -> int:
    """Write n sessions' recent lists by hand (what the apply script would), in many slots;
    returns how many keys were written."""
    client = connect.sync_client(settings)
    keys = Keys(settings.key_prefix)
    try:
        for s in range(n):
            client.rpush(keys.session(f"s{s}", "recent"), f"i{s}\x1f1\x1f1", f"i{s + 1}\x1f1\x1f2")
    finally:
        client.close()
    return n


def test_the_cluster_client_spreads_the_store_over_every_primary(cluster: Settings) -> None:
    own = _on(cluster, "spread")
    n = _sessions(own, 60)
    client = connect.sync_client(own)
    assert isinstance(client, RedisCluster)
    holders = [
        node.dbsize() for node in connect.primaries(client)
    ]  # each primary holds some of them
    client.close()
    assert len(holders) == 3 and all(h > 0 for h in holders) and sum(holders) >= n

    async def scan_and_clear() -> tuple[bool, int, bool]:
        store = RedisStore.connect(own)
        try:
            before = await store.holds_anything()
            await store.publish("rules", b"{}")  # one of the keys holds_anything looks for
            deleted = await store.clear()
            return before, deleted, await store.holds_anything()
        finally:
            await store.close()

    before, deleted, after = asyncio.run(scan_and_clear())
    assert before is False  # sessions alone are not what it looks for
    assert deleted == n + 1  # every key, whichever primary held it
    assert after is False


def test_offsets_are_looked_up_on_the_cluster(cluster: Settings) -> None:
    own = _on(cluster, "offsets")
    client = connect.sync_client(own)
    key = Keys(own.key_prefix).global_("offsets")
    client.hset(key, mapping={marker("events", 0): 41, marker("events", 2): 7})
    try:
        assert resume_at(own, "events", [0, 1, 2]) == {0: 42, 2: 8}
    finally:
        client.delete(key)
        client.close()


def test_an_evicting_primary_is_found(
    cluster: Settings,
) -> None:
    client = connect.sync_client(cluster)
    nodes = connect.primaries(client)
    was = nodes[1].config_get("maxmemory-policy")["maxmemory-policy"]

    async def check() -> str | None:
        store = RedisStore.connect(cluster)
        try:
            return await store.eviction_policy()
        finally:
            await store.close()

    try:
        assert asyncio.run(check()) == "noeviction"
        nodes[1].config_set("maxmemory-policy", "allkeys-lru")  # one primary of three
        assert asyncio.run(check()) == "allkeys-lru"
    finally:
        nodes[1].config_set("maxmemory-policy", was)
        client.close()


def test_a_digest_reads_the_same_on_a_cluster_as_on_one_node(
    cluster: Settings, settings: Settings
) -> None:
    on_cluster = _on(cluster, "digest")  # the same prefix on both: a digest names it
    on_node = dataclasses.replace(settings, key_prefix=on_cluster.key_prefix)
    for s in (on_cluster, on_node):
        _sessions(s, 40)
    try:
        a, b = digest.take(on_cluster), digest.take(on_node)
        assert a == b and a  # same kinds, counts and content hashes
        assert used_memory(on_cluster) > 0  # summed over the primaries
    finally:
        for s in (on_cluster, on_node):
            clear_store(s)
