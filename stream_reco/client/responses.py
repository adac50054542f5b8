"""The response side of a client: one consumer from the end of every partition, and the
requests that wait for their answer, resolved by request_id."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, InvalidStateError
from enum import Enum
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from stream_reco.errors import StackError, StreamRecoError
from stream_reco.kafka_io import QUIET

CLOSED = "this RecoClient is closed; create a new one"
_BATCH = 500  # responses taken per consumer call once the first one is there
_UNKNOWN = KafkaError.UNKNOWN_TOPIC_OR_PART


class RecoTimeout(StreamRecoError, TimeoutError):
    """No response to a request within its timeout."""


class ResponseFuture(Future[dict[str, Any]]):
    """A pending response; `request_id` is the id its request was sent with."""

    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.request_id = request_id


class Route(Enum):
    """Where a response went: to the future waiting for it, or back to the caller."""

    ANSWERED = "answered"  # resolved the future of one of this client's requests
    LATE = "late"  # this client's request, but nothing waits any more (duplicate, timed out)
    OTHER = "other"  # a push or another client's answer: the on_response callback's


class PendingRequests:
    """This client's requests that wait for an answer, each with its deadline; thread-safe."""

    def __init__(self) -> None:
        self._futures: dict[str, ResponseFuture] = {}
        self._deadlines: list[tuple[float, str, float]] = []  # heap of (due, request_id, timeout)
        self._lock = threading.Lock()  # guards _futures, _deadlines and _closed
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once close() ran: no request may be added any more."""
        return self._closed

    def __len__(self) -> int:
        return len(self._futures)

    def add(self, request_id: str, seconds: float, max_pending: int) -> ResponseFuture:
        """A future for `request_id`, failed with RecoTimeout by expire() after `seconds`.
        Added before the request is sent, so its answer always finds it."""
        fut = ResponseFuture(request_id)
        with self._lock:
            if self._closed:
                raise StreamRecoError(CLOSED)
            if len(self._futures) >= max_pending:
                raise StreamRecoError(
                    f"{len(self._futures)} requests already wait for a response (max_pending="
                    f"{max_pending}): send more slowly, or check that a worker answers"
                )
            self._futures[request_id] = fut
            heapq.heappush(self._deadlines, (time.monotonic() + seconds, request_id, seconds))
            if len(self._deadlines) > 2 * len(self._futures) + 1000:  # answered ones linger
                self._deadlines = [d for d in self._deadlines if d[1] in self._futures]
                heapq.heapify(self._deadlines)
        return fut

    def discard(self, request_id: str) -> None:
        """Stop waiting for a request that was never sent; its future stays unresolved."""
        with self._lock:
            self._futures.pop(request_id, None)

    def fail(self, request_id: str, error: BaseException) -> None:
        """Fail the request's future with `error`, if it still waits."""
        with self._lock:
            fut = self._futures.pop(request_id, None)
        if fut is not None:
            settle(fut, error=error)

    def route(self, doc: Mapping[str, Any], client_id: str) -> Route:
        """Resolve the future `doc` answers, by its request_id; say where it went otherwise."""
        rid = doc.get("request_id")
        if isinstance(rid, str):
            with self._lock:
                fut = self._futures.pop(rid, None)
            if fut is not None:
                settle(fut, doc)
                return Route.ANSWERED
            if rid.rpartition("-")[0] == client_id:  # ours, already answered or timed out
                return Route.LATE
        return Route.OTHER

    def expire(self, now: float, topic_requests: str) -> None:
        """Fail with RecoTimeout every request whose deadline is past."""
        overdue: list[tuple[ResponseFuture, float]] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, rid, seconds = heapq.heappop(self._deadlines)
                if (fut := self._futures.pop(rid, None)) is not None:
                    overdue.append((fut, seconds))
        for fut, seconds in overdue:  # settled outside the lock: callbacks may send requests
            why = (
                f"no response to request {fut.request_id} within {seconds:g} s: is a worker "
                f"running and consuming {topic_requests}?"
            )
            settle(fut, error=RecoTimeout(why))

    def close(self) -> dict[str, ResponseFuture] | None:
        """Refuse new requests and hand back those still waiting (None if already closed), so
        the caller fails them once its poll thread has stopped."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            pending, self._futures, self._deadlines = self._futures, {}, []
        return pending


def settle(fut: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    """Resolve `fut` with `result` or `error`, unless its caller cancelled it meanwhile."""
    try:
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)
    except InvalidStateError:  # its caller cancelled it meanwhile
        pass


def parse_response(raw: bytes | None) -> dict[str, Any] | None:
    """The response as a dict, or None if it is not a JSON object."""
    try:
        doc = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def consumer_at_end(
    bootstrap_servers: str,
    topic: str,
    group_id: str,
    config: Mapping[str, Any],
    deadline: float,
) -> Consumer:
    """A consumer assigned every partition of `topic` at its current end, without joining
    `group_id`, so no response sent after this returns can be missed; retried until
    `deadline` (a time.monotonic() value), then StackError."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,  # required, never joined: assign()
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,  # an answer is not held back to fill a fetch
            **QUIET,
            **config,
        }
    )
    try:
        while True:
            try:
                # Explicit offsets, not OFFSET_END: fixed now, not at the first fetch.
                consumer.assign(_ends(consumer, bootstrap_servers, topic, deadline))
                return consumer
            except KafkaException as exc:  # e.g. a new topic's leader not elected yet
                if time.monotonic() >= deadline:
                    raise StackError(
                        f"cannot find where {topic} ends at "
                        f"{bootstrap_servers}: {exc} (is Kafka up? `stream-reco stack up`)"
                    ) from exc
                time.sleep(0.1)
    except BaseException:
        consumer.close()
        raise


def read_batch(consumer: Consumer, timeout: float) -> list[Message]:
    """The responses there are, waiting up to `timeout` s for the first."""
    first = consumer.poll(timeout)  # returns as soon as one response is there
    return [] if first is None else [first, *consumer.consume(_BATCH, 0)]


def _ends(
    consumer: Consumer, bootstrap_servers: str, name: str, deadline: float
) -> list[TopicPartition]:
    """Every partition of topic `name` at its current end offset."""
    topic = consumer.list_topics(name, timeout=_left(deadline)).topics.get(name)
    error = None if topic is None else topic.error
    if error is not None and error.code() != _UNKNOWN:
        raise KafkaException(error)
    if topic is None or not topic.partitions:
        raise StackError(
            f"topic {name} does not exist at {bootstrap_servers}: "
            "run `stream-reco topics` or start a worker"
        )
    where = [TopicPartition(name, p) for p in sorted(topic.partitions)]
    return [TopicPartition(name, tp.partition, _high(consumer, tp, deadline)) for tp in where]


def _high(consumer: Consumer, where: TopicPartition, deadline: float) -> int:
    return consumer.get_watermark_offsets(where, timeout=_left(deadline), cached=False)[1]


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())
