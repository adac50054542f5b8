"""The Kafka side of the Locust load test: options, catalogue, and one RecoClient per process."""

from __future__ import annotations

import dataclasses
import functools
import logging
import random
import time
import uuid
from argparse import Namespace
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import gevent
import gevent.event
import orjson
from confluent_kafka import KafkaException
from locust.env import Environment

from stream_reco import kafka_io
from stream_reco.client import RecoClient, RecoTimeout
from stream_reco.config import Settings
from stream_reco.errors import ConfigError, StackError, StreamRecoError
from stream_reco.simulator import Storefront, make_catalog

log = logging.getLogger("stream_reco.loadtest")

TOPICS = ("events", "catalog", "requests", "responses", "deadletter", "config")
CATALOG_SEED = 0  # every process and every run builds the same catalogue, so item ids agree
# Sessions the storefront users touched last; one entry per event, so a session a shopper is
# active in is asked about more often, as a shop's pages would.
RECENT_SESSIONS: deque[str] = deque(maxlen=2000)
IDLE_POLL_S = 0.001  # short: a response must not sit in the consumer while users wait on it
WAIT_GRACE_S = 5.0  # beyond the client's own timeout, before a lost future counts as failed
# Kafka and client errors a load test records as failed requests instead of crashing a user.
RequestErrors = (StreamRecoError, KafkaException, BufferError)
KafkaConfig = dict[str, str]


def add_arguments(parser: Any) -> None:
    """stream-reco options on Locust's parser; defaults come from the STREAM_RECO_* env."""
    env = Settings.from_env()
    group = parser.add_argument_group("stream-reco")
    group.add_argument(
        "--bootstrap-servers",
        default=env.kafka_bootstrap_servers,
        help="Kafka bootstrap servers (default: env KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    group.add_argument(
        "--topic-prefix",
        default="",
        help="topics PREFIX-events, PREFIX-catalog, PREFIX-requests, ... "
        "(default: env STREAM_RECO_TOPIC_* or reco-*)",
    )
    for name in TOPICS[:4]:
        group.add_argument(
            f"--topic-{name}",
            default="",
            help=f"{name} topic, over --topic-prefix (default: {getattr(env, f'topic_{name}')})",
        )
    group.add_argument(
        "--kafka-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka setting for every Kafka client, e.g. security.protocol=SASL_SSL "
        "(repeat for more)",
    )
    group.add_argument(
        "--catalog-items", type=int, default=200, help="simulated catalogue size (default 200)"
    )
    group.add_argument(
        "--skip-catalog",
        action="store_true",
        help="do not publish the simulated catalogue (the cluster already has one)",
    )
    group.add_argument(
        "--k", type=int, default=env.default_k, help="items per recommendation request"
    )
    group.add_argument(
        "--reco-timeout",
        type=float,
        default=5.0,
        help="seconds until a Kafka request without an answer counts as failed (default 5)",
    )


def settings_from(options: Namespace) -> Settings:
    """The env's Settings with the command line's servers and topics over them."""
    topics: dict[str, str] = {}
    if options.topic_prefix:
        topics = {f"topic_{n}": f"{options.topic_prefix}-{n}" for n in TOPICS}
    for name in TOPICS[:4]:
        if getattr(options, f"topic_{name}"):
            topics[f"topic_{name}"] = getattr(options, f"topic_{name}")
    return dataclasses.replace(
        Settings.from_env(), kafka_bootstrap_servers=options.bootstrap_servers, **topics
    ).validate()


def kafka_config(options: Namespace) -> KafkaConfig:
    """The --kafka-config pairs as a librdkafka config (TLS, SASL, client tuning)."""
    config: KafkaConfig = {}
    for pair in options.kafka_config:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--kafka-config {pair!r}: use KEY=VALUE, e.g. sasl.mechanisms=PLAIN")
        config[key.strip()] = value
    return config


@functools.cache
def catalog(n_items: int) -> list[dict[str, object]]:
    return make_catalog(n_items=n_items, seed=CATALOG_SEED)


def publish_catalog(settings: Settings, n_items: int, kafka: KafkaConfig) -> None:
    """Put the simulated items on the catalogue topic, so answers can carry their metadata."""
    failed: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(str(err))

    producer = kafka_io.producer(settings, **kafka)
    for item in catalog(n_items):
        producer.produce(
            settings.topic_catalog,
            key=str(item["item_id"]),
            value=orjson.dumps(item),
            on_delivery=delivered,
        )
        producer.poll(0)
    if producer.flush(30) or failed:
        raise StackError(
            f"the catalogue did not reach {settings.topic_catalog} on "
            f"{settings.kafka_bootstrap_servers} ({failed[:1] or 'not acknowledged in 30 s'}); "
            "check --bootstrap-servers, or pass --skip-catalog if the topic is not writable"
        )
    log.info("published %d catalogue items to %s", n_items, settings.topic_catalog)


def storefront(n_items: int) -> Iterator[dict[str, object]]:
    """A shopper stream of its own: a unique run id keeps session ids apart across users."""
    shop = Storefront(
        catalog(n_items),
        seed=random.randrange(2**32),
        run_id=f"lt{uuid.uuid4().hex[:10]}",
        start_ms=int(time.time() * 1000),
    )
    return shop.stream()


def pick_session() -> str:
    """A session a storefront user was active in lately, or a fresh one before there are any."""
    if RECENT_SESSIONS:
        return random.choice(RECENT_SESSIONS)
    return f"lt-synthetic-{uuid.uuid4().hex[:10]}"


class ProcessClient:
    """This process's one RecoClient, driven by one poll greenlet: under gevent a blocking
    consumer poll in a thread would stall every user, so nothing here blocks for long."""

    def __init__(self) -> None:
        self.client: RecoClient | None = None
        self.environment: Environment | None = None
        self.timeout_s = 5.0
        self._driver: gevent.Greenlet | None = None
        self._reported = (0, 0)  # the client's (undelivered, errors) as told to Locust

    def start(
        self, environment: Environment, settings: Settings, timeout_s: float, kafka: KafkaConfig
    ) -> None:
        self.stop()
        self.environment, self.timeout_s = environment, timeout_s
        client = RecoClient.from_settings(
            settings,
            client_id=f"locust_{uuid.uuid4().hex[:8]}",
            timeout=timeout_s,
            background=False,
            producer_config=kafka,
            consumer_config=kafka,
        )
        # Blocks the hub briefly (metadata and end offsets), before any user runs.
        client.start(timeout=30.0)
        self.client, self._reported = client, (0, 0)
        self._driver = gevent.spawn(self._drive, client)

    def stop(self) -> None:
        if self._driver is not None:
            self._driver.kill()
            self._driver = None
        if self.client is not None:
            client, self.client = self.client, None
            client.close()  # hands Kafka what is still queued (bounded), fails what still waits
            self._report_counters(client)

    def track(self, event: dict[str, object]) -> None:
        """Publish one event; its Locust time is the produce call (the client does not wait)."""
        started = time.perf_counter()
        error: Exception | None = None
        try:
            self._client().track(event)
        except RequestErrors as exc:
            error = exc
        self._fire("track", started, time.perf_counter(), len(orjson.dumps(event)), error)

    def recommend(self, session_id: str, k: int) -> None:
        """Ask over Kafka; the Locust time runs from just before the request is produced to
        the moment the poll greenlet consumed the answer, so it is request-to-response."""
        answered = gevent.event.Event()
        consumed: list[float] = []

        def on_done(_: Future[dict[str, Any]]) -> None:
            consumed.append(time.perf_counter())  # runs on the poll greenlet, at consumption
            answered.set()

        started = time.perf_counter()
        try:
            future = self._client().request(session_id, k)
        except RequestErrors as exc:
            self._fire("recommend", started, time.perf_counter(), 0, exc)
            return
        future.add_done_callback(on_done)
        if not answered.wait(self.timeout_s + WAIT_GRACE_S):
            lost = RecoTimeout(f"no answer and no timeout for {session_id}: is the poller alive?")
            self._fire("recommend", started, time.perf_counter(), 0, lost)
            return
        self._fire("recommend", started, consumed[0], *_outcome(future))

    def _client(self) -> RecoClient:
        if self.client is None:
            raise StackError("the load test's Kafka client is not running; see the start error")
        return self.client

    def _drive(self, client: RecoClient) -> None:
        while True:
            try:
                handled = client.poll(0)
            except RequestErrors as exc:
                now = time.perf_counter()
                self._fire("poll", now, now, 0, exc)
                handled = 0
            self._report_counters(client)
            # Yield after every round so users run; sleep only when there was nothing to do.
            gevent.sleep(0 if handled else IDLE_POLL_S)

    def _report_counters(self, client: RecoClient) -> None:
        """Failures the client only counts (lost sends, consumer errors) as Locust failures."""
        counts = (client.undelivered, client.errors)
        if counts == self._reported:
            return
        now = time.perf_counter()
        names = ("undelivered", "consumer error")
        for name, new, old in zip(names, counts, self._reported, strict=True):
            for _ in range(new - old):
                self._fire(name, now, now, 0, StreamRecoError(f"{name}: see the client's log"))
        self._reported = counts

    def _fire(
        self, name: str, started: float, ended: float, size: int, error: BaseException | None
    ) -> None:
        if self.environment is None:
            return
        self.environment.events.request.fire(
            request_type="kafka",
            name=name,
            response_time=(ended - started) * 1000.0,
            response_length=size,
            exception=error,
            context={},
        )


def _outcome(future: Future[dict[str, Any]]) -> tuple[int, BaseException | None]:
    """(answer size in bytes, error); an answer without an items list is an error too."""
    error = future.exception()
    if error is not None:
        return 0, error
    answer = future.result()
    size = len(orjson.dumps(answer))
    if not isinstance(answer.get("items"), list):
        return size, StreamRecoError(f"answer without an items list: {str(answer)[:200]}")
    return size, None


PROCESS = ProcessClient()
