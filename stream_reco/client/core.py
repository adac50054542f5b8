"""RecoClient: the public face of the client, its requests, poll thread and lifecycle."""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import wait
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, Message

from stream_reco.client import responses, wire
from stream_reco.client.responses import RecoTimeout, ResponseFuture, Route
from stream_reco.client.sending import Sender, log
from stream_reco.config import Settings
from stream_reco.errors import ConfigError, StreamRecoError
from stream_reco.security import kafka_options

_CLIENT_ID = re.compile(r"[A-Za-z0-9._]{1,64}")  # no "-": it separates the id from the counter
_IDLE_POLL_S = 0.05  # the poll thread's wait for a response: how late a timeout may fire
_GRACE_S = 5.0  # recommend() stops waiting for a stuck poll thread this long after the timeout


class RecoClient(Sender):
    """Track shopper events and get recommendations over Kafka from any Python service; publish
    the catalogue (`publish_catalog`, `remove_item`) and change rules (`set_rules`) too.

    ```python
    with RecoClient("127.0.0.1:9092") as client:
        client.publish_catalog([{"item_id": "item-0001", "title": "Red Mug"}])
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
        topic_catalog: str = "reco-catalog",
        topic_config: str = "reco-config",
        client_id: str | None = None,
        timeout: float = 5.0,
        on_response: Callable[[dict[str, Any], float], None] | None = None,
        background: bool = True,
        producer_config: Mapping[str, Any] | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        max_pending: int = 100_000,
        max_k: int = wire.DEFAULTS.max_k,
        max_future_s: int = wire.DEFAULTS.max_future_s,
    ) -> None:
        self.client_id = secrets.token_hex(4) if client_id is None else client_id
        if not _CLIENT_ID.fullmatch(self.client_id):
            raise ConfigError(f"client_id={self.client_id!r}: use 1-64 of A-Z a-z 0-9 . _")
        wire.check_timeout(timeout, ConfigError)
        if max_pending < 1:
            raise ConfigError(f"max_pending={max_pending} must be at least 1")
        super().__init__(
            bootstrap_servers,
            client_id=self.client_id,
            topic_events=topic_events,
            topic_catalog=topic_catalog,
            topic_config=topic_config,
            max_future_s=max_future_s,
            producer_config=producer_config,
        )
        self.timeout, self.on_response, self.background = timeout, on_response, background
        self.topic_requests, self.topic_responses = topic_requests, topic_responses
        self.max_pending, self.max_k = max_pending, max_k
        self.ignored = 0  # responses that are not a JSON object
        self.late = 0  # answers to this client's requests that no longer wait (duplicate, late)
        self.errors = 0  # consumer errors and exceptions raised by on_response
        self._consumer_config = dict(consumer_config or {})
        self._pending = responses.PendingRequests()
        self._ids = itertools.count(1)
        self._start_lock = threading.Lock()
        self._poll_lock = threading.RLock()  # one consumer user at a time; on_response may close
        self._stop = threading.Event()
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> RecoClient:
        """A client for the Kafka, topics and limits of `settings`; kwargs as for the class."""
        base = {
            "topic_requests": settings.topic_requests,
            "topic_responses": settings.topic_responses,
            "topic_events": settings.topic_events,
            "topic_catalog": settings.topic_catalog,
            "topic_config": settings.topic_config,
            "max_k": settings.max_k,
            "max_future_s": settings.max_future_s,
        }
        # The deployment's authentication and encryption, for both of the client's connections.
        secure = {k: v for k, v in kafka_options(settings).items() if k != "bootstrap.servers"}
        for name in ("producer_config", "consumer_config"):
            base[name] = {**secure, **kwargs.pop(name, {})}
        return cls(settings.kafka_bootstrap_servers, **{**base, **kwargs})

    def start(self, timeout: float = 30.0) -> RecoClient:
        """Position the response consumer at the end of every partition, so no response sent
        after this returns can be missed, and start the poll thread; idempotent."""
        with self._start_lock:
            if self._pending.closed:
                raise StreamRecoError(responses.CLOSED)
            if self._consumer is None:
                self._consumer = responses.consumer_at_end(
                    self.bootstrap_servers,
                    self.topic_responses,
                    f"reco-client-{self.client_id}",
                    self._consumer_config,
                    time.monotonic() + timeout,
                )
            if self.background and self._thread is None:
                name = f"reco-client-{self.client_id}"
                self._thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._thread.start()
        return self

    def request(
        self,
        session_id: str,
        k: int | None = None,
        *,
        placement: str | None = None,
        exclude: Iterable[str] = (),
        user_id: str | None = None,
        item_id: str | None = None,
        timeout: float | None = None,
    ) -> ResponseFuture:
        """Send a request without waiting: its future gets the response dict, or RecoTimeout
        after `timeout` seconds (default: the client's). `placement` picks the rules (e.g.
        "product_page"), `exclude` items never to return, `item_id` the item on the page the
        answer is shown on. Starts the client if needed."""
        seconds = self.timeout if timeout is None else timeout
        wire.check_timeout(seconds, wire.InvalidRequest)
        rid = f"{self.client_id}-{next(self._ids)}"
        raw = wire.encode_request(
            rid, session_id, k, placement=placement, exclude=exclude, user_id=user_id,
            item_id=item_id, max_k=self.max_k,
        )  # fmt: skip
        if self._consumer is None:
            self.start()
        fut = self._pending.add(rid, seconds, self.max_pending)  # before the send: no answer lost
        try:
            self._send(self.topic_requests, session_id, raw)
        except StreamRecoError:
            self._pending.discard(rid)
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
        item_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """`request()` that waits: the response dict, or RecoTimeout."""
        fut = self.request(
            session_id, k, placement=placement, exclude=exclude, user_id=user_id,
            item_id=item_id, timeout=timeout,
        )  # fmt: skip
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
        item_id: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """`recommend()` for asyncio code: never blocks the event loop."""
        if self._consumer is None:  # the one step that waits for Kafka
            await asyncio.to_thread(self.start)
        fut = self.request(
            session_id, k, placement=placement, exclude=exclude, user_id=user_id,
            item_id=item_id, timeout=timeout,
        )  # fmt: skip
        while not self.background and not fut.done():
            self.poll(0)
            await asyncio.sleep(0.001)
        return await asyncio.wrap_future(fut)

    def _check_open(self) -> None:
        if self._pending.closed:
            raise StreamRecoError(responses.CLOSED)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None or msg.topic() != self.topic_requests:
            super()._delivered(err, msg)
            return
        self.undelivered += 1
        rid = orjson.loads(msg.value())["request_id"]  # our own bytes: always valid
        why = f"request {rid} was not delivered to {msg.topic()}: {err.str()}"
        self._pending.fail(rid, StreamRecoError(why))

    def poll(self, timeout: float = 0.0) -> int:
        """Handle the responses there are (waiting up to `timeout` s for the first), fail the
        overdue requests, serve delivery reports; returns how many responses were read."""
        read = 0
        with self._poll_lock:
            consumer = self._consumer  # None before start() and after close()
            for msg in [] if consumer is None else responses.read_batch(consumer, timeout):
                if msg.error():
                    self.errors += 1
                    log.warning("reading %s failed: %s", self.topic_responses, msg.error())
                else:
                    read += 1
                    self._dispatch(msg.value())
        self._producer.poll(0)
        self._pending.expire(time.monotonic(), self.topic_requests)
        return read

    def _dispatch(self, raw: bytes | None) -> None:
        doc = responses.parse_response(raw)
        if doc is None:
            self.ignored += 1
            return
        route = self._pending.route(doc, self.client_id)
        if route is Route.LATE:
            self.late += 1
        elif route is Route.OTHER and self.on_response is not None:
            try:
                self.on_response(doc, time.monotonic())
            except Exception:  # one bad callback must not stop the answers behind it
                self.errors += 1
                log.exception("on_response failed on a %s response", doc.get("trigger"))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll(_IDLE_POLL_S)
            except Exception:  # the thread must outlive one bad poll, or every future hangs
                self.errors += 1
                log.exception("the RecoClient poll thread failed once; it carries on")
                self._stop.wait(0.1)

    def close(self) -> None:
        """Stop the poll thread, fail the pending futures, close the consumer and hand Kafka
        what the producer still holds (up to 10 s); idempotent."""
        pending = self._pending.close()
        if pending is None:
            return
        self._stop.set()
        with self._start_lock:  # lets a start() in progress finish first
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        for rid, fut in pending.items():
            why = f"the client was closed before request {rid} got a response"
            responses.settle(fut, error=StreamRecoError(why))
        with self._poll_lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
        self._close_producer()

    @property
    def pending(self) -> int:
        """Requests waiting for their response."""
        return len(self._pending)

    def __enter__(self) -> RecoClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
