"""A worker's health for probes: liveness (its event loop answers) and readiness (Redis and
Kafka reachable, its consumers not failing), and the two HTTP views that serve them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol, runtime_checkable

import faust
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from faust.web import Request, Response, View
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from stream_reco.config import Settings
from stream_reco.kafka_io import QUIET
from stream_reco.security import kafka_options
from stream_reco.storage.protocol import Store

LIVE_PATH = "/health/live"
READY_PATH = "/health/ready"
PATHS = (LIVE_PATH, READY_PATH)
# A probe must answer well within the kubelet's timeout (deploy/k8s/worker.yaml), whatever
# Redis or Kafka do: each check is bounded on its own and both run side by side.
REDIS_TIMEOUT_S = 1.0
KAFKA_TIMEOUT_S = 2.0
# Every replica is probed every few seconds: a metadata request per probe per pod would add
# load on the brokers for nothing, so one answer serves the probes of the next seconds.
KAFKA_CACHE_S = 5.0

Doc = dict[str, Any]


@runtime_checkable
class _Pingable(Protocol):
    """What RedisStore offers beyond the Store protocol: its client, to PING directly (the
    store's own calls retry an outage for seconds, which a probe must not wait out)."""

    client: Any


class Consumer(Protocol):
    """What readiness reads of a topic loop (consumer.TopicLoop)."""

    name: str
    topic: str
    lag: dict[int, int]

    @property
    def trouble(self) -> Any: ...  # logs.Trouble: `.failing` while its brokers are down


async def live() -> tuple[bool, Doc]:
    """Liveness: this coroutine ran, so the event loop answers. It checks nothing else on
    purpose: a Redis or Kafka outage must not get healthy workers restarted."""
    return True, {"status": "live"}


async def check(
    store: Store, settings: Settings, consumers: Collection[Consumer] | None = None
) -> tuple[bool, Doc]:
    """Readiness: Redis answers PING, Kafka answers a metadata request (cached for
    KAFKA_CACHE_S), and no consumer loop of `consumers` is failing. The document says why
    when not ok, naming an unreachable server by host and port only: never a connection URL,
    a password or a token."""
    redis_doc, kafka_doc = await asyncio.gather(ping_redis(store), _probe(settings).reach(settings))
    doc: Doc = {"redis": redis_doc, "kafka": kafka_doc}
    if consumers is not None:
        doc["consumers"] = _consumers(consumers)
    ok = redis_doc["ok"] and kafka_doc["ok"] and all(c["ok"] for c in doc.get("consumers", []))
    return ok, {"status": "ready" if ok else "not ready", **doc}


async def ping_redis(store: Store, timeout_s: float = REDIS_TIMEOUT_S) -> Doc:
    """PING through the store's client (every primary of a cluster), bounded by `timeout_s`."""
    if not isinstance(store, _Pingable):
        return {"ok": False, "error": f"{type(store).__name__} has no Redis client to PING"}
    client, started = store.client, time.perf_counter()
    # On a cluster every primary: a node down leaves its slots' sessions and items unserved.
    cluster = isinstance(client, RedisCluster)
    ping = client.ping(target_nodes=RedisCluster.PRIMARIES) if cluster else client.ping()
    try:
        await asyncio.wait_for(ping, timeout_s)
    except TimeoutError:
        return {"ok": False, "error": f"Redis did not answer PING within {timeout_s:g} s"}
    except (RedisError, OSError) as exc:
        return {"ok": False, "error": f"Redis unreachable: {type(exc).__name__}: {exc}"}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


class KafkaProbe:
    """One admin client per Kafka connection and its latest answer: a probe within
    KAFKA_CACHE_S of the last metadata request reuses its answer."""

    def __init__(self, cache_s: float = KAFKA_CACHE_S, timeout_s: float = KAFKA_TIMEOUT_S) -> None:
        self.cache_s, self.timeout_s = cache_s, timeout_s
        self._admin: AdminClient | None = None
        self._last: tuple[float, Doc] | None = None
        # A thread lock, not an asyncio one: probes may come from several event loops (a
        # worker's, a test's), and only one metadata request is in flight at a time.
        self._lock = threading.Lock()

    async def reach(self, settings: Settings) -> Doc:
        last = self._last
        if last is not None and time.monotonic() - last[0] < self.cache_s:
            return {**last[1], "cached": True}
        return await asyncio.to_thread(self._ask, settings)

    def _ask(self, settings: Settings) -> Doc:
        with self._lock:
            last = self._last  # another probe may have asked while this one waited
            if last is not None and time.monotonic() - last[0] < self.cache_s:
                return {**last[1], "cached": True}
            doc = self._metadata(settings)
            self._last = (time.monotonic(), doc)
            return {**doc, "cached": False}

    def _metadata(self, settings: Settings) -> Doc:
        if self._admin is None:
            self._admin = AdminClient({**kafka_options(settings), **QUIET})
        started = time.perf_counter()
        try:
            meta = self._admin.list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            why = exc.args[0].str() if exc.args and hasattr(exc.args[0], "str") else str(exc)
            # A new client next time: this one would keep reconnecting, and logging each try,
            # to servers that may have moved (a broker replaced behind the same name).
            self._admin = None
            return {"ok": False, "error": f"Kafka unreachable within {self.timeout_s:g} s: {why}"}
        hot = (settings.topic_events, settings.topic_requests)
        return {
            "ok": bool(meta.brokers),
            "ms": round((time.perf_counter() - started) * 1000, 1),
            "brokers": len(meta.brokers),
            # Told, not judged: `stream-reco topics` creates them, and HTTP answers need none.
            "topics_missing": [t for t in hot if t not in meta.topics],
        }


_PROBES: dict[tuple[tuple[str, Any], ...], KafkaProbe] = {}
_PROBES_LOCK = threading.Lock()


def _probe(settings: Settings) -> KafkaProbe:
    """The probe of this Kafka connection (servers, protocol, credentials) and hot topics (its
    answer names those missing): one per process."""
    hot = (("topics", (settings.topic_events, settings.topic_requests)),)
    key = tuple(sorted(kafka_options(settings).items())) + hot
    with _PROBES_LOCK:
        probe = _PROBES.get(key)
        if probe is None:
            probe = _PROBES[key] = KafkaProbe()
        return probe


def _consumers(consumers: Collection[Consumer]) -> list[Doc]:
    # A backlog is told, not judged: scaling answers it (KEDA), and a pod taken out of the
    # Service for it would only move its HTTP load onto the others. Owning no partition is no
    # failure either: replicas beyond the partition count idle by design.
    return [
        {
            "name": c.name,
            "topic": c.topic,
            "ok": not c.trouble.failing,
            "lag": sum(c.lag.values()),  # messages behind, over the partitions it owns
        }
        for c in consumers
    ]


def add_health_views(
    app: faust.App,
    settings: Settings,
    store: Callable[[], Store],
    consumers: Collection[Consumer] | None = None,
) -> None:
    """GET /health/live (200 while the event loop answers) and GET /health/ready (200 when
    Redis and Kafka are reachable, else 503 with the reason). Open without the HTTP token:
    probes send none, and the documents hold no personal data or secrets."""

    @app.page(LIVE_PATH)
    class Live(View):
        async def get(self, request: Request) -> Response:
            return _answer(self, *(await live()))

    @app.page(READY_PATH)
    class Ready(View):
        async def get(self, request: Request) -> Response:
            return _answer(self, *(await check(store(), settings, consumers)))


def _answer(view: View, ok: bool, doc: Mapping[str, Any]) -> Response:
    return view.json(dict(doc), status=200 if ok else 503)
