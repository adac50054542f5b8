"""One measured window per path: requests over Kafka, pushes, HTTP GETs and Redis PINGs.

Every latency runs from the *scheduled* send time to the moment the answer is read, so time a
request spends queued (in the generator, in Kafka, in the worker) is part of the figure.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from stream_reco.bench.load import Pace, paced, paced_async
from stream_reco.bench.stats import Recorder
from stream_reco.client import RecoClient, RecoTimeout
from stream_reco.errors import StreamRecoError

K = 10
DRAIN_GRACE_S = 2.0  # past the request timeout, for the client's poll thread to fail the rest
HTTP_CONNECTIONS = 256  # open loop: enough sockets that the client side does not queue


def kafka_requests(
    client: RecoClient, rate: float, duration: float, session: Callable[[], str], timeout: float
) -> tuple[Recorder, Pace]:
    """Requests through `client` on schedule, never waiting for answers before the next."""
    rec = Recorder()
    outstanding = Outstanding()

    def fire(due: float) -> None:
        # Counted before the attempt: a request the client refuses (too many waiting) is a
        # scheduled request without an answer, part of the latency figures like a timeout.
        rec.on_sent()
        try:
            fut = client.request(session(), K, timeout=timeout)
        except StreamRecoError:
            rec.on_error("send")
            return
        outstanding.add()
        fut.add_done_callback(partial(_answered, rec, outstanding, due))

    fresh_window()
    pace = paced(rate, duration, fire)
    for _ in range(outstanding.wait(timeout + DRAIN_GRACE_S)):
        rec.on_error("missing")
    return rec, pace


def fresh_window() -> None:
    """Collect garbage now, between windows: the run keeps the collector off (a pause of the
    generator would be measured as latency)."""
    gc.collect()


class Outstanding:
    """Requests sent and not settled yet; futures are not kept, so answers are freed."""

    def __init__(self) -> None:
        self._n = 0
        self._cond = threading.Condition()

    def add(self) -> None:
        with self._cond:
            self._n += 1

    def settle(self) -> None:
        with self._cond:
            self._n -= 1
            if self._n == 0:
                self._cond.notify_all()

    def wait(self, timeout: float) -> int:
        """Block until all are settled or `timeout` s pass; how many never were."""
        with self._cond:
            self._cond.wait_for(lambda: self._n == 0, timeout=timeout)
            return self._n


def _answered(rec: Recorder, outstanding: Outstanding, due: float, fut: Future[Any]) -> None:
    # Runs on the client's poll thread the moment the response is read: first, the clock.
    now = time.monotonic()
    error = fut.exception()
    if error is None:
        rec.on_answer(now - due)
        if fut.result().get("degraded"):
            rec.note("degraded")
    else:
        rec.on_error("timeout" if isinstance(error, RecoTimeout) else "failed")
    outstanding.settle()


class PushWatch:
    """Cart additions made during a window and the pushed responses that answer them.

    A worker pushes once per session and batch, naming the latest cart addition; earlier
    additions of that session in the same batch count as answered by it ("coalesced"). Carts
    made after the window are still followed while its pushes drain, as they may be the ones
    a window's cart was coalesced into."""

    def __init__(self) -> None:
        self.rec = Recorder()
        self._lock = threading.Lock()
        # session -> its carts in order: (event_id, due, measured)
        self._by_session: dict[str, list[tuple[str, float, bool]]] = {}
        self._waiting = 0  # measured carts without their push yet
        self.measuring = False

    def on_cart(self, event_id: str, session: str, due: float) -> None:
        with self._lock:
            # Read once: a window ending between two reads would time a cart never counted
            # as sent. Counted under the lock, so close() sees it sent or not at all.
            measured = self.measuring
            self._by_session.setdefault(session, []).append((event_id, due, measured))
            if measured:
                self._waiting += 1
                self.rec.on_sent()

    def on_response(self, doc: dict[str, Any], arrived: float) -> None:
        if doc.get("trigger") != "add_to_cart":
            return
        session = str(doc.get("session_id"))
        named = doc.get("event_id")
        with self._lock:
            carts = self._by_session.get(session)
            if not carts:
                return  # a cart from before the window
            ids = [c[0] for c in carts]
            # Without event_id (older workers) the session's oldest waiting cart is the match.
            upto = ids.index(named) + 1 if named in ids else (0 if named else 1)
            done, self._by_session[session] = carts[:upto], carts[upto:]
            timed = [(eid, due) for eid, due, measured in done if measured]
            self._waiting -= len(timed)
            # Recorded under the lock: once close() has counted the missing, every cart
            # no longer waiting is already among the answered.
            for eid, due in timed:
                self.rec.on_answer(arrived - due)
                if named is not None and eid != named:
                    self.rec.note("coalesced")

    def close(self, drain_s: float) -> Recorder:
        """Stop measuring new carts, wait up to `drain_s` for the pushes of those measured;
        the rest are missing."""
        with self._lock:
            self.measuring = False
        deadline = time.monotonic() + drain_s
        while self._waiting > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            missing = self._waiting
            self._waiting = 0
            self._by_session.clear()
        for _ in range(missing):
            self.rec.on_error("missing")
        return self.rec


def http_requests(
    base_url: str, rate: float, duration: float, session: Callable[[], str], timeout: float
) -> tuple[Recorder, Pace]:
    """GET /recommendations on schedule, each as its own task (open loop)."""
    rec = Recorder()

    async def run() -> Pace:
        conn = aiohttp.TCPConnector(limit=HTTP_CONNECTIONS)
        limit = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(connector=conn, timeout=limit) as http:

            async def call(due: float) -> None:
                rec.on_sent()
                params = {"session_id": session(), "k": str(K)}
                try:
                    async with http.get(f"{base_url}/recommendations", params=params) as resp:
                        body = await resp.read()
                        now = time.monotonic()
                except TimeoutError:
                    rec.on_error("timeout")
                    return
                except aiohttp.ClientError:
                    rec.on_error("failed")
                    return
                except asyncio.CancelledError:
                    rec.on_error("missing")
                    raise
                if resp.status != 200:
                    rec.on_error(f"http_{resp.status}")
                    return
                rec.on_answer(now - due)
                if orjson.loads(body).get("degraded"):
                    rec.note("degraded")

            fresh_window()
            return await paced_async(rate, duration, call, drain_s=timeout + DRAIN_GRACE_S)

    pace = asyncio.run(run())
    return rec, pace


def redis_pings(redis_url: str, rate: float, duration: float) -> tuple[Recorder, Pace]:
    """Bare Redis round trips (PING through redis.asyncio) on schedule: the Redis floor."""
    rec = Recorder()

    async def run() -> Pace:
        client = aioredis.Redis.from_url(redis_url, protocol=2)
        try:
            await client.ping()  # connect outside the window

            async def call(due: float) -> None:
                rec.on_sent()
                try:
                    await client.ping()
                except aioredis.RedisError:
                    rec.on_error("failed")
                    return
                except asyncio.CancelledError:
                    rec.on_error("missing")
                    raise
                rec.on_answer(time.monotonic() - due)

            fresh_window()
            return await paced_async(rate, duration, call, drain_s=5.0)
        finally:
            await client.aclose()

    pace = asyncio.run(run())
    return rec, pace
