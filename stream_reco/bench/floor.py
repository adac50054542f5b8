"""The floor: what Kafka and Redis alone cost on this machine, measured like the engine is.

The Kafka floor is the request path with the worker replaced by a bare echo: the same client
sends a request to a scratch topic, an echo thread (plain consumer and producer, no work)
copies it to a second scratch topic, and the client reads it back. Both hops and both
consumers are there; only the engine is not.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable

import orjson
from confluent_kafka import Consumer

from stream_reco import kafka_io
from stream_reco.bench.fleet import Fleet
from stream_reco.bench.load import Pace
from stream_reco.bench.stats import Recorder
from stream_reco.bench.windows import kafka_requests, redis_pings
from stream_reco.client import RecoClient
from stream_reco.config import Settings
from stream_reco.errors import StackError
from stream_reco.security import kafka_options

ASSIGN_TIMEOUT_S = 30.0


class Echo:
    """A do-nothing worker: every request on `inbox` comes back on `outbox` at once."""

    def __init__(self, settings: Settings, inbox: str, outbox: str, group: str) -> None:
        self.outbox = outbox
        self.consumer = Consumer(
            {
                **kafka_options(settings),
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": True,
                "fetch.wait.max.ms": 5,  # as the client's response consumer
                **kafka_io.QUIET,
            }
        )
        self.consumer.subscribe([inbox])
        self.producer = kafka_io.producer(settings, **{"linger.ms": 1})
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="bench-echo", daemon=True)

    def start(self) -> None:
        deadline = time.monotonic() + ASSIGN_TIMEOUT_S
        while not self.consumer.assignment():  # joined before the first request is sent
            if time.monotonic() > deadline:
                raise StackError("the floor's echo consumer got no partitions; is Kafka slow?")
            self.consumer.poll(0.1)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self.consumer.poll(0.05)
            if first is None:
                continue
            for msg in [first, *self.consumer.consume(500, 0)]:
                if msg.error():
                    continue
                doc = orjson.loads(msg.value())
                answer = {
                    "request_id": doc["request_id"],
                    "session_id": doc["session_id"],
                    "trigger": "request",
                    "items": [],
                }
                self.producer.produce(self.outbox, key=msg.key(), value=orjson.dumps(answer))
            self.producer.poll(0)

    def stop(self) -> None:
        """Idempotent: the run calls it again at cleanup if an interrupt cut it short."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if not self._closed:
            self.producer.flush(5)
            self.consumer.close()  # leaves the group, so the run can delete it
            self._closed = True


class KafkaFloor:
    """The echo path, set up once and measured at each rate the engine is measured at."""

    def __init__(self, fleet: Fleet, name: str = "floor") -> None:
        inbox, outbox = fleet.scratch_topics(f"{name}-in", f"{name}-out")
        group = f"{fleet.settings.app_id}-{name}-echo"
        self.echo = Echo(fleet.settings, inbox, outbox, group)
        fleet.closers.append(self.echo.stop)
        own = dataclasses.replace(fleet.settings, topic_requests=inbox, topic_responses=outbox)
        self.client = RecoClient.from_settings(own, client_id=f"floor{uuid.uuid4().hex[:6]}")

    def __enter__(self) -> KafkaFloor:
        self.echo.start()
        self.client.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()
        self.echo.stop()

    def measure(
        self, rate: float, duration: float, session: Callable[[], str], timeout: float
    ) -> tuple[Recorder, Pace]:
        return kafka_requests(self.client, rate, duration, session, timeout)


def redis_floor(settings: Settings, rate: float, duration: float) -> tuple[Recorder, Pace]:
    return redis_pings(settings.redis_url, rate, duration)
