"""One real stack per test run: Kafka + Redis (started if needed), one worker on unique topics."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from stream_reco import stack, stack_cluster
from stream_reco.config import Settings
from stream_reco.kafka_io import consumer, ensure_topics, producer
from stream_reco.stack_servers import port_open
from stream_reco.storage import connect
from stream_reco.storage.keys import Keys
from stream_reco.storage.redis_store import RedisStore
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready

RUN = uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def base_settings() -> Iterator[Settings]:
    """The stack's settings; started here unless already up, and then stopped here too."""
    settings = Settings.from_env()
    if settings.redis_cluster:
        yield from _on_local_cluster(settings)
        return
    was_up = all(s["pid"] for s in stack.status(settings).values())
    stack.up(settings)
    yield settings
    if not was_up and not os.environ.get("STREAM_RECO_KEEP_STACK"):
        stack.down(settings)


def _on_local_cluster(settings: Settings) -> Iterator[Settings]:
    """With STREAM_RECO_REDIS_CLUSTER=true the suite runs on a Redis Cluster: the one REDIS_URL
    names, as it is, or else the local stack's (`stack up --redis-cluster`, started here)."""
    node = dataclasses.replace(settings, redis_cluster=False, redis_url=Settings().redis_url)
    was_up = all(s["pid"] for s in stack.status(node).values())
    stack.up(node)  # Kafka (and the stack's single Redis beside the cluster)
    given = "REDIS_URL" in os.environ
    if not given:
        stack_cluster.up(settings, say=lambda _: None)
        settings = dataclasses.replace(settings, redis_url=stack_cluster.url(settings))
    yield settings
    if not was_up and not os.environ.get("STREAM_RECO_KEEP_STACK"):
        if not given:
            stack_cluster.down(settings)
        stack.down(node)


def free_cluster_port(web_port: int) -> int:
    """The first of three free ports in a row whose cluster bus ports (10000 above) are free
    too, all below the kernel's ephemeral range (an outgoing connection may hold one of those
    without listening on it, and Redis could not bind it), clear of the stack's own ports and
    of the run's block of web ports (`web_port` and the 63 above)."""
    rng = random.Random()
    reserved = [(6370, 6390), (7000, 7010), (9090, 9100), (web_port, web_port + 63)]
    for _ in range(500):
        first = rng.randrange(2000, 9000)
        wanted = [p + bus for p in (first, first + 1, first + 2) for bus in (0, 10000)]
        if any(lo <= p <= hi for p in wanted for lo, hi in reserved):
            continue
        if not any(port_open("127.0.0.1", port) for port in wanted):
            return first
    raise AssertionError("no three free ports in a row")


@pytest.fixture(scope="session")
def cluster(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The run's settings on a 3-primary Redis Cluster of the test run's own (its own home
    and ports, so it never meets a cluster someone left running), stopped afterwards."""
    own = dataclasses.replace(
        settings,
        home=tmp_path_factory.mktemp("cluster"),
        redis_cluster_port=free_cluster_port(settings.web_port),
    )
    stack_cluster.up(own, say=lambda _: None)
    try:
        yield dataclasses.replace(own, redis_cluster=True, redis_url=stack_cluster.url(own))
    finally:
        stack_cluster.down(own, say=lambda _: None)


@pytest.fixture(scope="session")
def settings(base_settings: Settings) -> Iterator[Settings]:
    """Settings isolated to this test run: own topics, consumer group and Redis key prefix;
    the run's topics and keys are deleted afterwards so a long-lived stack does not fill up."""
    env = {
        **base_settings.to_env(),
        "STREAM_RECO_APP_ID": f"test-{RUN}",
        "STREAM_RECO_KEY_PREFIX": f"test-{RUN}",
        # Tests add up to +63 to this port for workers of their own; the block sits below the
        # ephemeral range (free_port) and clear of the stack's ports (Redis 6379, Kafka 909x).
        "STREAM_RECO_WEB_PORT": str(10000 + 64 * (int(RUN, 16) % 300)),
        # A loaded test machine must not turn the worker's answers into fallbacks; the time
        # budget itself is tested in process (test_hybrid.py).
        "STREAM_RECO_BUDGET_MS": "1000",
        **{
            f"STREAM_RECO_TOPIC_{name.upper()}": f"test-{RUN}-{name}"
            for name in (
                "events",
                "catalog",
                "requests",
                "responses",
                "deadletter",
                "config",
                "privacy",
            )
        },
    }
    yield Settings.from_env(env)
    _forget_run(base_settings, f"test-{RUN}")


def _forget_run(settings: Settings, prefix: str) -> None:
    """Delete the run's topics, consumer groups and Redis keys (all named from `prefix`)."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 3})
    mine = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    if mine:
        for fut in admin.delete_topics(mine, operation_timeout=30).values():
            fut.result()
    # A group whose last member has only just left may refuse for a moment: a few tries, and
    # a group still in use or already gone is left to itself.
    for _ in range(5):
        listed = admin.list_consumer_groups().result(timeout=10).valid
        groups = [g.group_id for g in listed if g.group_id.startswith(prefix)]
        if not groups:
            break
        refused = 0
        for fut in admin.delete_consumer_groups(groups, request_timeout=10).values():
            try:
                fut.result()
            except KafkaException:
                refused += 1
        if not refused:
            break
        time.sleep(0.5)
    client = connect.sync_client(settings)  # a cluster's client scans every primary
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for n in range(0, len(keys), 1000):
        client.unlink(*keys[n : n + 1000])
    client.close()


@pytest.fixture(scope="session")
def worker(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    ensure_topics(settings)
    log = settings.home.resolve() / "logs" / f"test-worker-{RUN}.log"
    proc = start_worker(settings, log)
    try:
        wait_worker_ready(proc, log)
        yield proc
    finally:
        stop_worker(proc)


class Kafka:
    """Publish to and read from the run's topics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = producer(settings)
        self.consumer = consumer(
            settings,
            [settings.topic_responses, settings.topic_deadletter],
            group=f"test-reader-{uuid.uuid4().hex[:8]}",
            from_beginning=True,
        )
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def send(self, topic: str, key: str | None, value: object) -> float:
        raw = value if isinstance(value, bytes | type(None)) else orjson.dumps(value)
        self.producer.produce(topic, key=key, value=raw)
        self.producer.flush(10)
        return time.monotonic()

    def wait_for(
        self, match: Callable[[str, dict[str, Any]], bool], timeout: float = 15.0
    ) -> tuple[str, dict[str, Any], float]:
        """The first (topic, doc) read that `match`es, and the monotonic time it arrived."""
        for topic, doc in self.seen:
            if match(topic, doc):
                return topic, doc, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.05)
            if msg is None or msg.error() or (doc := _json(msg.value())) is None:
                continue
            entry = (msg.topic(), doc)
            self.seen.append(entry)
            if match(*entry):
                return entry[0], entry[1], time.monotonic()
        raise AssertionError(f"nothing matched within {timeout}s; read {len(self.seen)} messages")

    def responses(self) -> list[dict[str, Any]]:
        self.drain()
        return [d for t, d in self.seen if t == self.settings.topic_responses]

    def drain(self, quiet: float = 0.5) -> None:
        """Read until nothing new arrives for `quiet` seconds."""
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            msg = self.consumer.poll(0.05)
            if msg is not None and not msg.error() and (doc := _json(msg.value())) is not None:
                self.seen.append((msg.topic(), doc))
                last = time.monotonic()

    def close(self) -> None:
        self.consumer.close()


def _json(raw: bytes | None) -> Any:
    """A message's JSON, or None: other tests put deliberately broken records on the topics."""
    try:
        return orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None


@pytest.fixture(scope="session")
def kafka(settings: Settings, worker: subprocess.Popen[bytes]) -> Iterator[Kafka]:
    k = Kafka(settings)
    yield k
    k.close()


def run_cli(settings: Settings, *args: str, timeout: float = 300) -> str:
    """Run the real `stream-reco` command line with these settings; its stdout on success."""
    done = subprocess.run(
        [sys.executable, "-m", "stream_reco.cli", *args],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def cli(settings: Settings, *args: str) -> Any:
    """`run_cli` for the commands that print JSON (stack status, inspect)."""
    return orjson.loads(run_cli(settings, *args, timeout=60))


def _poll(
    settings: Settings,
    read: Callable[[RedisStore], Any],
    done: Callable[[Any], bool],
    what: str,
    timeout: float = 15.0,
) -> None:
    """Block until the worker's effect is visible in Redis (topics have no order between them)."""

    async def once() -> Any:
        store = RedisStore.connect(settings)
        try:
            return await read(store)
        finally:
            await store.close()

    deadline = time.monotonic() + timeout
    while not done(seen := asyncio.run(once())):
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last saw {seen!r}"
        time.sleep(0.05)


def wait_session(settings: Settings, session_id: str, events: int) -> None:
    _poll(
        settings,
        lambda st: st.read_session(session_id),
        lambda s: s.events >= events,
        f"{events} events of {session_id}",
    )


def wait_item(settings: Settings, item_id: str, in_stock: bool | None) -> None:
    """Until the catalogue agent has applied the item's latest state (None: removed)."""
    _poll(
        settings,
        lambda st: st.read_items([item_id]),
        lambda m: (m[item_id].in_stock if item_id in m else None) is in_stock,
        f"catalogue state of {item_id}",
    )


TOPIC_FIELDS = [
    f"topic_{t}"
    for t in ("events", "catalog", "requests", "responses", "deadletter", "config", "privacy")
]


def forget_isolated(settings: Settings, base: Settings, *prefixes: str) -> None:
    """Remove what a test's `isolated` settings made (topics, groups and keys are named from
    different prefixes, so each goes by its own), plus any extra key or group prefixes."""
    topics = [getattr(base, f) for f in TOPIC_FIELDS]
    for prefix in (base.app_id, base.key_prefix, *prefixes, *topics):
        _forget_run(settings, prefix)


def applied_count(settings: Settings) -> int:
    """Events the store under these settings has applied, as it counts them itself."""
    client = connect.sync_client(settings)
    try:
        return int(client.get(Keys(settings.key_prefix).global_("applied")) or 0)
    finally:
        client.close()


def clear_store(settings: Settings) -> None:
    """Delete every key under the settings' prefix (a single node or a cluster)."""

    async def run() -> None:
        store = RedisStore.connect(settings)
        try:
            await store.clear()
        finally:
            await store.close()

    asyncio.run(run())


def uid(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def inspect(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `stream-reco inspect`, whatever its exit code (run_cli wants 0)."""
    return subprocess.run(
        [sys.executable, "-m", "stream_reco.cli", "inspect", *args],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.fixture
def own(settings: Settings) -> Iterator[Settings]:
    """A key prefix of this test's own, emptied afterwards."""
    mine = settings.isolated(f"own{uuid.uuid4().hex[:6]}")
    yield mine
    clear_store(mine)
