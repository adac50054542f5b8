"""The producing side of a client: events, catalogue records and rules, each checked first."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from stream_reco.client import wire
from stream_reco.errors import StreamRecoError
from stream_reco.kafka_io import QUIET

# The package's name, not this module's: logging set up for "stream_reco.client" keeps working.
log = logging.getLogger("stream_reco.client")


class Sender:
    """Owns the client's producer and what it writes besides requests: shopper events, the
    catalogue and the shop's rules. Everything is checked with the worker's own decoder
    before it is sent, so what the worker would dead-letter raises here instead."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        topic_events: str,
        topic_catalog: str,
        topic_config: str,
        max_future_s: int,
        producer_config: Mapping[str, Any] | None,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic_events, self.topic_catalog, self.topic_config = (
            topic_events,
            topic_catalog,
            topic_config,
        )
        self.max_future_s = max_future_s
        self.undelivered = 0  # messages Kafka did not take
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": f"reco-client-{client_id}",
                "linger.ms": 1,  # a request should not wait for batch-mates
                "enable.idempotence": True,
                "delivery.report.only.error": True,
                "on_delivery": self._delivered,
                **QUIET,
                **(producer_config or {}),
            }
        )

    def track(self, event: Mapping[str, Any]) -> None:
        """Send one shopper event (reco-events wire format) keyed by its session; InvalidEvent
        with the worker's reason if the worker would dead-letter it. Never waits for Kafka."""
        session_id, raw = wire.encode_event(event, self.max_future_s)
        self._send(self.topic_events, session_id, raw)

    def publish_catalog(self, items: Iterable[Mapping[str, Any]]) -> int:
        """Send catalogue records (reco-catalog wire format), each keyed by its item_id, and
        return how many. Each replaces its item's whole metadata. All are checked before any is
        sent: one the worker would dead-letter raises InvalidItem naming it, and none goes out.
        Never waits for Kafka; `flush()` does."""
        checked: list[tuple[str, bytes]] = []
        for n, item in enumerate(items):
            try:
                checked.append(wire.encode_item(item))
            except wire.InvalidItem as exc:
                raise wire.InvalidItem(exc.reason, f"items[{n}]") from None
        for item_id, raw in checked:
            self._send(self.topic_catalog, item_id, raw)
        return len(checked)

    def remove_item(self, item_id: str) -> None:
        """Remove an item from the catalogue (a tombstone keyed by `item_id`): from the moment
        the worker applies it, the item is never recommended. To hide an item for a while,
        publish it with `"in_stock": False` instead."""
        self._send(self.topic_catalog, wire.encode_removal(item_id), None)

    def set_rules(self, key: str, overrides: Mapping[str, Any] | None) -> None:
        """Replace the runtime rules of `key` ("default" or a placement name) with `overrides`
        (docs/rules.md: e.g. {"category_cap": 2, "exclude": ["item-7"]}), or drop them with None
        so the rules file's entry applies again. Checked as the worker checks it (InvalidRules
        with its reason); every worker applies it within STREAM_RECO_REFRESH_S seconds."""
        name, raw = wire.encode_rules(key, overrides)
        self._send(self.topic_config, name, raw)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until Kafka has taken every message sent so far (bounded)."""
        if left := self._producer.flush(timeout):
            raise StreamRecoError(
                f"{left} messages still unsent after {timeout:g} s: "
                f"is Kafka at {self.bootstrap_servers} up?"
            )

    def _check_open(self) -> None:
        """Raise if nothing may be sent any more (the client is closed)."""

    def _send(self, topic: str, key: str, raw: bytes | None) -> None:
        self._check_open()
        try:
            self._producer.produce(topic, value=raw, key=key)
        except (BufferError, KafkaException) as exc:
            raise StreamRecoError(
                f"cannot send to {topic}: {exc} (the local queue fills up when Kafka at "
                f"{self.bootstrap_servers} is slow or down: call flush() or send more slowly)"
            ) from exc
        self._producer.poll(0)  # serves delivery reports; returns at once

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.undelivered += 1
            log.warning("a message was not delivered to %s: %s", msg.topic(), err.str())

    def _close_producer(self) -> None:
        """Hand Kafka what the producer still holds (up to 10 s), then drop the rest."""
        if left := self._producer.flush(10.0):
            self.undelivered += left
            log.warning("%d messages never reached Kafka; dropped at close", left)
            self._producer.purge()
