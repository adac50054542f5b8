"""Plain Kafka clients outside Faust (confluent-kafka): topic admin, producer, consumer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import AdminClient, NewTopic

from stream_reco import logs
from stream_reco.config import Settings
from stream_reco.errors import ERRORS, StackError
from stream_reco.security import kafka_options

log = logging.getLogger(__name__)
QUEUE_FULL_TRIES = 100  # x 10 ms: how long an output waits for room in the producer's queue
# librdkafka logs transient states (coordinator loading, purged queues) as warnings on stderr;
# errors still surface as exceptions and delivery failures.
QUIET = {"log_level": 3}
NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # Kafka's zero UUID, base64: the broker has none
PRIVACY_RETENTION_MS = 3 * 86400 * 1000  # reco-privacy: three days


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the contract's topics if missing (catalogue and rules compacted); returns those
    created."""
    existing = set(_topics(settings, timeout))
    wanted = []
    for name in settings.topics:
        if name in existing:
            continue
        compacted = name in (settings.topic_catalog, settings.topic_config)
        config = {"cleanup.policy": "compact"} if compacted else {}
        if name == settings.topic_privacy:
            # Its keys name the people to forget: kept long enough to outlast a worker outage,
            # not for the broker's default week (docs/privacy.md).
            config = {"retention.ms": str(PRIVACY_RETENTION_MS)}
        # One order for dead letters; one partition for rules so their updates apply in order,
        # and for forget requests (few, each applied once by one consumer).
        single = name in (settings.topic_deadletter, settings.topic_config, settings.topic_privacy)
        parts = 1 if single else settings.partitions
        wanted.append(NewTopic(name, num_partitions=parts, replication_factor=1, config=config))
    if not wanted:
        return []
    created = []
    admin = AdminClient({**kafka_options(settings), **QUIET})
    for name, fut in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # a concurrent creator won the race
                raise StackError(f"cannot create topic {name}: {exc}") from exc
    return created


# librdkafka's errors that waiting does not cure: what failed, and the settings to check.
REFUSED = {
    KafkaError._AUTHENTICATION: (
        "Kafka at {where} refused the credentials",
        "STREAM_RECO_KAFKA_SASL_USERNAME, STREAM_RECO_KAFKA_SASL_PASSWORD and "
        "STREAM_RECO_KAFKA_SASL_MECHANISM",
    ),
    KafkaError._SSL: (
        "TLS with Kafka at {where} failed",
        "STREAM_RECO_KAFKA_SECURITY_PROTOCOL and STREAM_RECO_KAFKA_SSL_CA_FILE",
    ),
}


def _topics(settings: Settings, timeout: float) -> list[str]:
    """The cluster's topic names; a refused login or a TLS failure says so at once (librdkafka
    reports both as errors beside a metadata request that only times out)."""
    trouble: list[KafkaError] = []
    admin = AdminClient({**kafka_options(settings), **QUIET, "error_cb": trouble.append})
    where, deadline = settings.kafka_bootstrap_servers, time.monotonic() + timeout
    streak: dict[int, int] = {}  # error code -> slices in a row it failed
    while True:
        seen = len(trouble)
        try:
            return list(admin.list_topics(timeout=1.0).topics)
        except KafkaException as exc:
            admin.poll(0)  # error callbacks are served here
            now = {e.code() for e in trouble[seen:]}
            streak = {c: streak.get(c, 0) + 1 for c in now}
            # Twice in a row, not once: a user made a moment ago may not be known yet.
            for code, (what, check) in REFUSED.items():
                if streak.get(code, 0) >= 2:
                    why = next(e.str() for e in trouble if e.code() == code)
                    raise StackError(f"{what.format(where=where)}: {why} (check {check})") from exc
            if time.monotonic() >= deadline:
                raise StackError(
                    f"Kafka at {where} does not answer: {exc} "
                    "(start it with `stream-reco stack up`)"
                ) from exc


def stream_name(settings: Settings, topic: str, timeout: float = 30.0) -> str:
    """The topic by name and Kafka's id for it (`<name>:<id>`): what the store files each
    partition's last applied offset under, so a topic deleted and made again under the same
    name starts over instead of looking already applied. A broker without topic ids (before
    Kafka 2.8) gives the name alone."""
    admin = AdminClient({**kafka_options(settings), **QUIET})
    try:
        found = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout)
        described = found[topic].result(timeout)
    except KafkaException as exc:
        raise StackError(
            f"cannot describe topic {topic} at {settings.kafka_bootstrap_servers}: {exc} "
            "(is Kafka up? `stream-reco stack status`; does the topic exist? `stream-reco topics`)"
        ) from exc
    topic_id = str(described.topic_id or "")
    return f"{topic}:{topic_id}" if topic_id and topic_id != NO_TOPIC_ID else topic


def producer(settings: Settings, **extra: object) -> Producer:
    # Small linger: the storefront's events should reach the engine within milliseconds.
    conf = {
        **kafka_options(settings),
        "linger.ms": 2,
        "enable.idempotence": True,
        **QUIET,
        **extra,
    }
    return Producer(conf)


def consumer(
    settings: Settings, topics: list[str], group: str, *, from_beginning: bool = False
) -> Consumer:
    c = Consumer(
        {
            **kafka_options(settings),
            "group.id": group,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": True,
            "fetch.wait.max.ms": 10,
            **QUIET,
        }
    )
    c.subscribe(topics)
    return c


class Output(Protocol):
    topic: str
    key: bytes | None
    value: bytes


class Sink:
    """Every output of a worker (responses, pushes, dead letters) through one librdkafka
    producer: handing a message over never waits for the broker, so no answer waits behind
    another's delivery."""

    def __init__(self, settings: Settings, errors: Counter[str]) -> None:
        # 1 ms: a shopper's page waits for a push or an answer; batching beyond that buys
        # throughput nobody here needs.
        # A delivery that cannot succeed within 30 s is reported (and counted) as failed,
        # rather than held for librdkafka's default of five minutes.
        self._producer = producer(
            settings, **{"linger.ms": 1, "message.timeout.ms": 30000, "error_cb": _client_error}
        )
        self._errors = errors

    async def send(self, outs: Iterable[Output]) -> None:
        """Hand every output to the producer. A full local queue is waited out on the event
        loop (bounded), never by blocking it; an output Kafka refuses outright (too large, a
        fatal producer state) is counted and logged, and the stream goes on."""
        for o in outs:
            for _ in range(QUEUE_FULL_TRIES):
                try:
                    self._producer.produce(
                        o.topic, value=o.value, key=o.key, on_delivery=self._delivered
                    )
                    break
                except BufferError:  # the local queue is full: let it drain a little
                    self._producer.poll(0)
                    await asyncio.sleep(0.01)
                except KafkaException as exc:
                    self._errors["send"] += 1
                    logs.KAFKA_PRODUCER.failed(f"output for {o.topic}", exc)
                    break
            else:
                self._errors["send"] += 1
                logs.KAFKA_PRODUCER.failed(f"output for {o.topic}", "local queue full: dropped")
        self._producer.poll(0)

    def poll(self) -> None:
        """Serve delivery reports (call now and then even when nothing is sent)."""
        self._producer.poll(0)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait for queued outputs (at shutdown); those still queued after `timeout` are
        counted as lost."""
        left = self._producer.flush(timeout)
        if left:
            self._errors["send"] += left
            log.error("%d outputs were still undelivered at shutdown", left)

    def _delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            logs.KAFKA_PRODUCER.ok()
            return
        self._errors["send"] += 1
        logs.KAFKA_PRODUCER.failed(f"delivery to {msg.topic()}", err)


def _client_error(err: KafkaError) -> None:
    """librdkafka's client-wide errors: most are passing states it recovers from on its own
    (one broker connection dropped); all brokers down, or a fatal error, is trouble."""
    if err.fatal() or err.code() == KafkaError._ALL_BROKERS_DOWN:
        ERRORS["kafka_produce"] += 1
        logs.KAFKA_PRODUCER.failed("brokers", err)
