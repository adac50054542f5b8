"""The Python client for services and storefronts: send events, ask for recommendations."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, InvalidStateError, wait
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from stream_reco.config import Settings
from stream_reco.errors import ConfigError, StackError, StreamRecoError
from stream_reco.events import Rejected, decode_event, decode_request
from stream_reco.kafka_io import QUIET

log = logging.getLogger(__name__)
_DEFAULTS = Settings()
_CLIENT_ID = re.compile(r"[A-Za-z0-9._]{1,64}")  # no "-": it separates the id from the counter
_BATCH = 500  # responses taken per consumer call once the first one is there
_IDLE_POLL_S = 0.05  # the poll thread's wait for a response: how late a timeout may fire
_GRACE_S = 5.0  # recommend() stops waiting for a stuck poll thread this long after the timeout
_CLOSED = "this RecoClient is closed; create a new one"
_UNKNOWN = KafkaError.UNKNOWN_TOPIC_OR_PART


class RecoTimeout(StreamRecoError, TimeoutError):
    """No response to a request within its timeout."""


class _Refused(StreamRecoError, ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidEvent(_Refused):
    """An event the worker would dead-letter; `reason` is the worker's own reason."""


class InvalidRequest(_Refused):
    """A request the worker would dead-letter, so never answer; `reason` says why."""


class ResponseFuture(Future[dict[str, Any]]):
    """A pending response; `request_id` is the id its request was sent with."""

    def __init__(self, request_id: str) -> None:
        super().__init__()
        self.request_id = request_id


def encode_request(
    request_id: str,
    session_id: str,
    k: int | None = None,
    *,
    placement: str | None = None,
    exclude: Iterable[str] = (),
    user_id: str | None = None,
    max_k: int = _DEFAULTS.max_k,
) -> bytes:
    """The request's wire bytes, checked as the worker checks them (InvalidRequest if not)."""
    if isinstance(exclude, str | bytes):  # one id would go out as a list of its characters
        raise InvalidRequest("invalid request: exclude must be a list of item ids, not a string")
    doc: dict[str, Any] = {"request_id": request_id, "session_id": session_id}
    optional = {"k": k, "placement": placement, "user_id": user_id, "exclude": list(exclude)}
    doc.update((name, value) for name, value in optional.items() if value not in (None, []))
    try:
        raw = orjson.dumps(doc)
    except TypeError as exc:
        raise InvalidRequest(f"invalid request: {exc}") from None
    checked = decode_request(raw, default_k=1, max_k=max_k)  # default_k only stands in for k
    if isinstance(checked, Rejected):
        raise InvalidRequest(checked.reason)
    return raw


def encode_event(
    event: Mapping[str, Any], max_future_s: int = _DEFAULTS.max_future_s
) -> tuple[str, bytes]:
    """(session_id, wire bytes) of an event checked as the worker checks it (InvalidEvent if
    not); `max_future_s` is the worker's STREAM_RECO_MAX_FUTURE_S."""
    try:
        raw = orjson.dumps(event if isinstance(event, dict) else dict(event))
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"invalid event: {exc}") from None
    checked = decode_event(raw, int(time.time() * 1000) + max_future_s * 1000)
    if isinstance(checked, Rejected):
        raise InvalidEvent(checked.reason)
    return checked.session_id, raw


class RecoClient:
    """Track shopper events and get recommendations over Kafka from any Python service.

    ```python
    with RecoClient("127.0.0.1:9092") as client:
        client.track({"event_id": "e1", "type": "view", "session_id": "s1",
                      "item_id": "item-0001", "ts": int(time.time() * 1000)})
        answer = client.recommend("s1", k=5)  # RecoTimeout if no worker answers in time
        print([item["item_id"] for item in answer["items"]])
    ```

    One response consumer serves every request: it reads each partition of the responses topic
    from its end at `start()`, without a consumer group, and resolves each request's future by
    `request_id` on the poll thread. Everything else it reads (pushes after cart additions,
    other clients' answers) goes to `on_response(doc, time.monotonic())`. With
    `background=False` no thread is started and the caller drives `poll()`.
    """

    def __init__(
        self,
        bootstrap_servers: str = "127.0.0.1:9092",
        *,
        topic_requests: str = "reco-requests",
        topic_responses: str = "reco-responses",
        topic_events: str = "reco-events",
        client_id: str | None = None,
        timeout: float = 5.0,
        on_response: Callable[[dict[str, Any], float], None] | None = None,
        background: bool = True,
        producer_config: Mapping[str, Any] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        max_pending: int = 100_000,
        max_k: int = _DEFAULTS.max_k,
        max_future_s: int = _DEFAULTS.max_future_s,
    ) -> None:
        self.client_id = secrets.token_hex(4) if client_id is None else client_id
        if not _CLIENT_ID.fullmatch(self.client_id):
            raise ConfigError(f"client_id={self.client_id!r}: use 1-64 of A-Z a-z 0-9 . _")
        _check_timeout(timeout, ConfigError)
        if max_pending < 1:
            raise ConfigError(f"max_pending={max_pending} must be at least 1")
        self.bootstrap_servers, self.timeout = bootstrap_servers, timeout
        self.topic_requests, self.topic_responses = topic_requests, topic_responses
        self.topic_events, self.on_response, self.background = topic_events, on_response, background
        self.max_pending, self.max_k, self.max_future_s = max_pending, max_k, max_future_s
        self.ignored = 0  # responses that are not a JSON object
        self.late = 0  # answers to this client's requests that no longer wait (duplicate, late)
        self.undelivered = 0  # requests and events Kafka did not take
        self.errors = 0  # consumer errors and exceptions raised by on_response
        self._consumer_config = dict(consumer_config or {})
        self._pending: dict[str, ResponseFuture] = {}
        self._deadlines: list[tuple[float, str, float]] = []  # heap of (due, request_id, timeout)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()  # guards _pending, _deadlines and _closed
        self._start_lock = threading.Lock()
        self._poll_lock = threading.RLock()  # one consumer user at a time; on_response may close
        self._stop = threading.Event()
        self._closed = False
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": f"reco-client-{self.client_id}",
                "linger.ms": 1,  # a request should not wait for batch-mates
                "enable.idempotence": True,
                "delivery.report.only.error": True,
                "on_delivery": self._delivered,
                **QUIET,
                **(producer_config or {}),
            }
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RecoClient:
        """A client for the Kafka, topics and limits of `settings`; kwargs as for the class."""
        base = {
            "topic_requests": settings.topic_requests,
            "topic_responses": settings.topic_responses,
            "topic_events": settings.topic_events,
            "max_k": settings.max_k,
            "max_future_s": settings.max_future_s,
        }
        return cls(settings.kafka_bootstrap_servers, **{**base, **kwargs})

    def start(self, timeout: float = 30.0) -> RecoClient:
        """Position the response consumer at the end of every partition, so no response sent
        after this returns can be missed, and start the poll thread; idempotent."""
        with self._start_lock:
            if self._closed:
                raise StreamRecoError(_CLOSED)
            if self._consumer is None:
                self._consumer = self._consumer_at_end(time.monotonic() + timeout)
            if self.background and self._thread is None:
                name = f"reco-client-{self.client_id}"
                self._thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._thread.start()
        return self

    def _consumer_at_end(self, deadline: float) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": f"reco-client-{self.client_id}",  # required, never joined: assign()
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,  # an answer is not held back to fill a fetch
                **QUIET,
                **self._consumer_config,
            }
        )
        try:
            while True:
                try:
                    # Explicit offsets, not OFFSET_END: fixed now, not at the first fetch.
                    consumer.assign(self._ends(consumer, deadline))
                    return consumer
                except KafkaException as exc:  # e.g. a new topic's leader not elected yet
                    if time.monotonic() >= deadline:
                        raise StackError(
                            f"cannot find where {self.topic_responses} ends at "
                            f"{self.bootstrap_servers}: {exc} (is Kafka up? `stream-reco stack up`)"
                        ) from exc
                    time.sleep(0.1)
        except BaseException:
            consumer.close()
            raise

    def _ends(self, consumer: Consumer, deadline: float) -> list[TopicPartition]:
        """Every partition of the responses topic at its current end offset."""
        name = self.topic_responses
        topic = consumer.list_topics(name, timeout=_left(deadline)).topics.get(name)
        error = None if topic is None else topic.error
        if error is not None and error.code() != _UNKNOWN:
            raise KafkaException(error)
        if topic is None or not topic.partitions:
            raise StackError(
                f"topic {name} does not exist at {self.bootstrap_servers}: "
                "run `stream-reco topics` or start a worker"
            )
        where = [TopicPartition(name, p) for p in sorted(topic.partitions)]
        return [TopicPartition(name, tp.partition, _high(consumer, tp, deadline)) for tp in where]

    def request(
        self,
        session_id: str,
        k: int | None = None,
        *,
        placement: str | None = None,
        exclude: Iterable[str] = (),
        user_id: str | None = None,
        timeout: float | None = None,
    ) -> ResponseFuture:
        """Send a request without waiting: its future gets the response dict, or RecoTimeout
        after `timeout` seconds (default: the client's). Starts the client if needed."""
        seconds = self.timeout if timeout is None else timeout
        _check_timeout(seconds, InvalidRequest)
        rid = f"{self.client_id}-{next(self._ids)}"
        raw = encode_request(
            rid, session_id, k, placement=placement, exclude=exclude, user_id=user_id,
            max_k=self.max_k,
        )  # fmt: skip
        if self._consumer is None:
            self.start()
        fut = ResponseFuture(rid)
        with self._lock:  # registered before it is sent, so its answer always finds it
            if self._closed:
                raise StreamRecoError(_CLOSED)
            if len(self._pending) >= self.max_pending:
                raise StreamRecoError(
                    f"{len(self._pending)} requests already wait for a response (max_pending="
                    f"{self.max_pending}): send more slowly, or check that a worker answers"
                )
            self._pending[rid] = fut
            heapq.heappush(self._deadlines, (time.monotonic() + seconds, rid, seconds))
            if len(self._deadlines) > 2 * len(self._pending) + 1000:  # answered ones linger
                self._deadlines = [d for d in self._deadlines if d[1] in self._pending]
                heapq.heapify(self._deadlines)
        try:
            self._send(self.topic_requests, session_id, raw)
        except StreamRecoError:
            with self._lock:
                self._pending.pop(rid, None)
            raise
        return fut

    def recommend(
        self,
        session_id: str,
        k: int | None = None,
        *,
        placement: str | None = None,
        exclude: Iterable[str] = (),
        user_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """`request()` that waits: the response dict, or RecoTimeout."""
        fut = self.request(
            session_id, k, placement=placement, exclude=exclude, user_id=user_id, timeout=timeout
        )
        while not self.background and not fut.done():
            self.poll(0.01)
        seconds = self.timeout if timeout is None else timeout
        if not wait([fut], timeout=seconds + _GRACE_S).done:
            raise RecoTimeout(f"no response to request {fut.request_id}: the poll thread hangs")
        return fut.result()

    async def recommend_async(
        self,
        session_id: str,
        k: int | None = None,
        *,
        placement: str | None = None,
        exclude: Iterable[str] = (),
        user_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """`recommend()` for asyncio code: never blocks the event loop."""
        if self._consumer is None:  # the one step that waits for Kafka
            await asyncio.to_thread(self.start)
        fut = self.request(
            session_id, k, placement=placement, exclude=exclude, user_id=user_id, timeout=timeout
        )
        while not self.background and not fut.done():
            self.poll(0)
            await asyncio.sleep(0.001)
        return await asyncio.wrap_future(fut)

    def track(self, event: Mapping[str, Any]) -> None:
        """Send one shopper event (reco-events wire format) keyed by its session; InvalidEvent
        with the worker's reason if the worker would dead-letter it. Never waits for Kafka."""
        session_id, raw = encode_event(event, self.max_future_s)
        if self._closed:
            raise StreamRecoError(_CLOSED)
        self._send(self.topic_events, session_id, raw)

    def _send(self, topic: str, key: str, raw: bytes) -> None:
        try:
            self._producer.produce(topic, value=raw, key=key)
        except (BufferError, KafkaException) as exc:
            raise StreamRecoError(
                f"cannot send to {topic}: {exc} (the local queue fills up when Kafka at "
                f"{self.bootstrap_servers} is slow or down: call flush() or send more slowly)"
            ) from exc
        self._producer.poll(0)  # serves delivery reports; returns at once

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self.undelivered += 1
        if msg.topic() != self.topic_requests:
            log.warning("an event was not delivered to %s: %s", msg.topic(), err.str())
            return
        rid = orjson.loads(msg.value())["request_id"]  # our own bytes: always valid
        with self._lock:
            fut = self._pending.pop(rid, None)
        if fut is not None:
            why = f"request {rid} was not delivered to {msg.topic()}: {err.str()}"
            _settle(fut, error=StreamRecoError(why))

    def poll(self, timeout: float = 0.0) -> int:
        """Handle the responses there are (waiting up to `timeout` s for the first), fail the
        overdue requests, serve delivery reports; returns how many responses were read."""
        read = 0
        with self._poll_lock:
            for msg in [] if self._consumer is None else _read(self._consumer, timeout):
                if msg.error():
                    self.errors += 1
                    log.warning("reading %s failed: %s", self.topic_responses, msg.error())
                else:
                    read += 1
                    self._dispatch(msg.value())
        self._producer.poll(0)
        self._expire(time.monotonic())
        return read

    def _dispatch(self, raw: bytes | None) -> None:
        try:
            doc = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict):
            self.ignored += 1
            return
        rid = doc.get("request_id")
        if isinstance(rid, str):
            with self._lock:
                fut = self._pending.pop(rid, None)
            if fut is not None:
                _settle(fut, doc)
                return
            if rid.rpartition("-")[0] == self.client_id:  # already answered, or timed out
                self.late += 1
                return
        if self.on_response is not None:
            try:
                self.on_response(doc, time.monotonic())
            except Exception:
                self.errors += 1
                log.exception("on_response failed on a %s response", doc.get("trigger"))

    def _expire(self, now: float) -> None:
        overdue: list[tuple[ResponseFuture, float]] = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, rid, seconds = heapq.heappop(self._deadlines)
                if (fut := self._pending.pop(rid, None)) is not None:
                    overdue.append((fut, seconds))
        for fut, seconds in overdue:
            why = (
                f"no response to request {fut.request_id} within {seconds:g} s: is a worker "
                f"running and consuming {self.topic_requests}?"
            )
            _settle(fut, error=RecoTimeout(why))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll(_IDLE_POLL_S)
            except Exception:  # the thread must outlive one bad poll, or every future hangs
                self.errors += 1
                log.exception("the RecoClient poll thread failed once; it carries on")
                self._stop.wait(0.1)

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until Kafka has taken every request and event sent so far (bounded)."""
        if left := self._producer.flush(timeout):
            raise StreamRecoError(
                f"{left} messages still unsent after {timeout:g} s: "
                f"is Kafka at {self.bootstrap_servers} up?"
            )

    def close(self) -> None:
        """Stop the poll thread, fail the pending futures, close the consumer and hand Kafka
        what the producer still holds (up to 10 s); idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending, self._pending, self._deadlines = self._pending, {}, []
        self._stop.set()
        with self._start_lock:  # lets a start() in progress finish first
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        for rid, fut in pending.items():
            why = f"the client was closed before request {rid} got a response"
            _settle(fut, error=StreamRecoError(why))
        with self._poll_lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
        if left := self._producer.flush(10.0):
            self.undelivered += left
            log.warning("%d messages never reached Kafka; dropped at close", left)
            self._producer.purge()

    @property
    def pending(self) -> int:
        """Requests waiting for their response."""
        return len(self._pending)

    def __enter__(self) -> RecoClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _settle(fut: Future[Any], result: Any = None, error: BaseException | None = None) -> None:
    try:
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)
    except InvalidStateError:  # its caller cancelled it meanwhile
        pass


def _high(consumer: Consumer, where: TopicPartition, deadline: float) -> int:
    return consumer.get_watermark_offsets(where, timeout=_left(deadline), cached=False)[1]


def _left(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _read(consumer: Consumer, timeout: float) -> list[Message]:
    first = consumer.poll(timeout)  # returns as soon as one response is there
    return [] if first is None else [first, *consumer.consume(_BATCH, 0)]


def _check_timeout(seconds: float, error: type[StreamRecoError]) -> None:
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise error(f"timeout={seconds!r} must be a positive number of seconds")
