"""Open-loop load: sends on a fixed schedule whatever the answers do, and records any lag."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from stream_reco import kafka_io
from stream_reco.bench.stats import percentile
from stream_reco.config import Settings
from stream_reco.simulator import Storefront

# Enough overlapping shoppers that one session's events are spread out in real time too.
CONCURRENT_SESSIONS = 500
RECENT_SESSIONS = 256  # requests ask for one of the sessions that were active just now
# Background events may go out in bursts this close together; requests are sent exactly.
BACKGROUND_GRAIN_S = 0.001

CartSink = Callable[[str, str, float], None]


@dataclass
class Pace:
    """How a paced loop kept to its schedule: sends made and how late each one was."""

    rate: float
    sent: int = 0
    lags_s: list[float] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0
    forgotten: int = 0  # lags dropped from the front by forget(): a long run stays bounded

    def forget(self) -> None:
        """Drop the lags recorded so far (their count stays in `forgotten`). Safe while the
        paced loop appends: only what was there when called is removed."""
        n = len(self.lags_s)
        del self.lags_s[:n]
        self.forgotten += n

    def behind(self) -> dict[str, float]:
        """The generator's own lag behind its schedule; large values mean the load generator,
        not the system under test, set the pace."""
        if not self.lags_s:
            return {"behind_p99_ms": 0.0, "behind_max_ms": 0.0}
        return {
            "behind_p99_ms": round(percentile(self.lags_s, 99) * 1000, 3),
            "behind_max_ms": round(max(self.lags_s) * 1000, 3),
        }

    @property
    def achieved_rate(self) -> float:
        span = self.ended - self.started
        return self.sent / span if span > 0 else 0.0


def paced(
    rate: float,
    duration: float | None,
    fire: Callable[[float], None],
    *,
    stop: threading.Event | None = None,
    grain_s: float = 0.0,
    pace: Pace | None = None,
) -> Pace:
    """Call `fire(due)` at `rate` per second for `duration` s (None: until `stop`), on the
    monotonic clock; a late loop catches up by firing at once and its lag is recorded (in
    `pace`, which others may read while it runs)."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    pace = pace or Pace(rate)
    pace.started = time.monotonic()
    total = None if duration is None else int(rate * duration)
    while (total is None or pace.sent < total) and not (stop is not None and stop.is_set()):
        due = pace.started + pace.sent / rate
        now = time.monotonic()
        if now < due - grain_s:
            time.sleep(min(due - now, 0.05))  # bounded so `stop` is seen soon
            continue
        fire(due)
        pace.lags_s.append(max(0.0, now - due))
        pace.sent += 1
    pace.ended = time.monotonic()
    return pace


async def paced_async(
    rate: float, duration: float, call: Callable[[float], Awaitable[None]], drain_s: float
) -> Pace:
    """`paced` for asyncio: each call starts as its own task on time and is never awaited
    before the next send; waits up to `drain_s` at the end for the calls still in flight."""
    pace = Pace(rate, started=time.monotonic())
    tasks: set[asyncio.Task[None]] = set()
    for n in range(int(rate * duration)):
        due = pace.started + n / rate
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        pace.lags_s.append(max(0.0, time.monotonic() - due))
        task = asyncio.create_task(call(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        pace.sent += 1
    pace.ended = time.monotonic()
    if tasks:
        _, late = await asyncio.wait(set(tasks), timeout=drain_s)
        for task in late:
            task.cancel()  # the caller counts what never finished
        await asyncio.gather(*late, return_exceptions=True)
    return pace


class Background:
    """Simulated shoppers publishing to the events topic at a fixed rate, in their own thread
    with one producer; remembers the sessions active just now and, on request, each cart."""

    def __init__(self, settings: Settings, catalog: list[dict[str, object]], seed: int) -> None:
        self.settings = settings
        start_ms = int(time.time() * 1000)
        run_id = f"bg{seed}x{start_ms % 100000}"
        self._shop = Storefront(catalog, seed=seed, run_id=run_id, start_ms=start_ms).stream(
            concurrency=CONCURRENT_SESSIONS
        )
        self._producer = kafka_io.producer(settings)
        self._recent: list[str] = []
        self._next_slot = 0
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pace: Pace | None = None
        self.rate = 0.0
        self.on_cart: CartSink | None = None

    def start(self, rate: float) -> None:
        if self._thread is not None:
            raise RuntimeError("background load is already running; stop() it first")
        self.rate = rate
        self._stop.clear()
        self.pace = Pace(rate, started=time.monotonic())
        self._thread = threading.Thread(target=self._run, name="bench-background", daemon=True)
        self._thread.start()

    def stop(self) -> Pace | None:
        if self._thread is None:
            return self.pace
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._producer.flush(10)
        return self.pace

    def session(self) -> str:
        """One of the sessions the shoppers were active in just now."""
        while not self._recent:
            time.sleep(0.01)
        return self._recent[self._rng.randrange(len(self._recent))]

    def mark(self) -> tuple[int, float]:
        """Where the background stands now; `since(mark)` describes the time after it."""
        pace = self.pace
        return (0 if pace is None else pace.forgotten + len(pace.lags_s)), time.monotonic()

    def since(self, mark: tuple[int, float]) -> dict[str, float]:
        """Events/s really sent and the lag behind schedule since `mark`."""
        if self.pace is None:
            return {}
        start, at = mark
        lags = self.pace.lags_s[max(start - self.pace.forgotten, 0) :]
        span = time.monotonic() - at
        return {
            "ingest_sent_per_s": round(len(lags) / span, 1) if span > 0 else 0.0,
            "ingest_behind_p99_ms": round(percentile(lags, 99) * 1000, 3) if lags else 0.0,
        }

    def _run(self) -> None:
        assert self.pace is not None
        paced(
            self.rate, None, self._send, stop=self._stop, grain_s=BACKGROUND_GRAIN_S, pace=self.pace
        )

    def _send(self, due: float) -> None:
        ev = next(self._shop)
        ev["ts"] = int(time.time() * 1000)  # a live shop stamps now; the simulator runs faster
        session = str(ev["session_id"])
        value = orjson.dumps(ev)
        sink = self.on_cart
        if sink is not None and ev["type"] == "add_to_cart":
            sink(str(ev["event_id"]), session, due)  # before sending: its push cannot be first
        while True:
            try:
                self._producer.produce(self.settings.topic_events, key=session, value=value)
                break
            except BufferError:  # the local queue is full: let deliveries drain, then retry
                self._producer.poll(0.05)
        self._producer.poll(0)
        self._remember(session)

    def _remember(self, session: str) -> None:
        if len(self._recent) < RECENT_SESSIONS:
            self._recent.append(session)
        else:
            self._recent[self._next_slot] = session
            self._next_slot = (self._next_slot + 1) % RECENT_SESSIONS
