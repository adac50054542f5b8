"""Plain Kafka clients outside Faust (confluent-kafka): topic admin, producer, consumer."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from stream_reco.config import Settings
from stream_reco.errors import StackError

# librdkafka logs transient states (coordinator loading, purged queues) as warnings on stderr;
# errors still surface as exceptions and delivery failures.
QUIET = {"log_level": 3}


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the contract's topics if missing (catalogue and rules compacted); returns those
    created."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, **QUIET})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise StackError(
            f"Kafka at {settings.kafka_bootstrap_servers} does not answer: {exc} "
            "(start it with `stream-reco stack up`)"
        ) from exc
    wanted = []
    for name in settings.topics:
        if name in existing:
            continue
        compacted = name in (settings.topic_catalog, settings.topic_config)
        config = {"cleanup.policy": "compact"} if compacted else {}
        # One order for dead letters; one partition for rules so their updates apply in order.
        single = name in (settings.topic_deadletter, settings.topic_config)
        parts = 1 if single else settings.partitions
        wanted.append(NewTopic(name, num_partitions=parts, replication_factor=1, config=config))
    if not wanted:
        return []
    created = []
    for name, fut in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):  # a concurrent creator won the race
                raise StackError(f"cannot create topic {name}: {exc}") from exc
    return created


def producer(settings: Settings, **extra: object) -> Producer:
    # Small linger: the storefront's events should reach the engine within milliseconds.
    conf = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
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
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": True,
            "fetch.wait.max.ms": 10,
            **QUIET,
        }
    )
    c.subscribe(topics)
    return c
