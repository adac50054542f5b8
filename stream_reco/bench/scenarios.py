"""The scenarios: ingest to applied state, and request, push and HTTP latency under ingest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_reco import kafka_io
from stream_reco.bench import stats
from stream_reco.bench.fleet import Fleet, StoreProbe
from stream_reco.bench.load import Background, Pace
from stream_reco.bench.windows import PushWatch, fresh_window, http_requests, kafka_requests
from stream_reco.client import RecoClient
from stream_reco.errors import StackError
from stream_reco.simulator import Storefront

Say = Callable[[str], None]
STALL_S = 30.0  # ingest fails if the store applies nothing new for this long
QUIET_S = 1.0  # the applied count must hold still this long before an ingest run starts
SAMPLE_S = 0.02
# Throughput settings for the ingest producer: it must outrun the worker by far.
INGEST_PRODUCER = {
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 2_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
}


@dataclass
class Bench:
    """What the scenarios share: the run's world, its store probe, load and client."""

    fleet: Fleet
    probe: StoreProbe
    background: Background
    client: RecoClient
    catalog: list[dict[str, object]]
    duration: float
    warmup_s: float
    timeout_s: float
    say: Say
    pushes: list[PushWatch] = field(default_factory=list)  # the client hands them pushes


class Meter:
    """The side figures of one window: background really sent and applied, bench CPU."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.mark = bench.background.mark()
        self.cpu = time.process_time()
        self.applied = bench.probe.applied()

    def figures(self, pace: Pace | None = None) -> dict[str, Any]:
        span = time.monotonic() - self.mark[1]
        applied = self.bench.probe.applied() - self.applied
        out: dict[str, Any] = dict(pace.behind()) if pace is not None else {}
        out.update(self.bench.background.since(self.mark))
        out["ingest_applied_per_s"] = round(applied / span, 1) if span > 0 else 0.0
        # The bench process's own CPU (all its threads): a saturated generator skews figures.
        out["bench_cpu_pct"] = round((time.process_time() - self.cpu) / span * 100, 1)
        return out


def make_events(catalog: list[dict[str, object]], n: int, seed: int) -> list[tuple[str, bytes]]:
    """`n` simulated events as (key, value) wire bytes, stamped now: serialised before the
    clock starts so the producer only produces."""
    now = int(time.time() * 1000)
    shop = Storefront(catalog, seed=seed, run_id=f"ingest{seed}x{now % 100000}", start_ms=now)
    out = []
    for ev in shop.stream(concurrency=500):
        ev["ts"] = now
        out.append((str(ev["session_id"]), orjson.dumps(ev)))
        if len(out) >= n:
            break
    return out


def wait_quiet(probe: StoreProbe, timeout: float = 300.0) -> int:
    """The applied count once it has held still for QUIET_S (no backlog left to apply)."""
    deadline = time.monotonic() + timeout
    last, since = probe.applied(), time.monotonic()
    while time.monotonic() - since < QUIET_S:
        if time.monotonic() > deadline:
            raise StackError(f"the worker still applies events after {timeout:.0f} s")
        time.sleep(0.1)
        now = probe.applied()
        if now != last:
            last, since = now, time.monotonic()
    return last


def ingest(bench: Bench, workers: int, events: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Produce `events` as fast as one producer can and time the store applying them."""
    fleet = bench.fleet
    fleet.wait_ready()
    producer = kafka_io.producer(fleet.settings, **INGEST_PRODUCER)
    # Connected (and its idempotent id fetched) while the worker settles, not on the clock.
    producer.list_topics(fleet.settings.topic_events, timeout=10)
    base = wait_quiet(bench.probe)
    produced: list[float] = []

    def produce() -> None:
        for key, value in events:
            while True:
                try:
                    producer.produce(fleet.settings.topic_events, key=key, value=value)
                    break
                except BufferError:  # local queue full: let deliveries drain, then retry
                    producer.poll(0.01)
        producer.flush(120)
        produced.append(time.monotonic())

    started = time.monotonic()
    thread = threading.Thread(target=produce, name="bench-ingest", daemon=True)
    thread.start()
    samples = _sample_applied(bench.probe, base, len(events), started)
    thread.join()
    total = len(events)
    producer_s = produced[0] - started if produced else float("nan")
    steady = stats.steady_rate(samples, total)
    producer_rate = total / producer_s if producer_s > 0 else None
    return {
        "workers": workers,
        "events": total,
        "events_per_s": round(steady, 1) if steady else None,
        "first_to_last_per_s": _round(stats.first_to_last_rate(samples, total)),
        "producer_per_s": _round(producer_rate),
        "seconds": round(samples[-1][0] - started, 3),
        # Applied as fast as it was produced: the producer, not the worker, set the pace.
        "producer_bound": bool(steady and producer_rate and producer_rate < steady * 1.2),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _sample_applied(
    probe: StoreProbe, base: int, total: int, started: float
) -> list[tuple[float, int]]:
    samples = [(started, 0)]
    progress_at = started
    while samples[-1][1] < total:
        time.sleep(SAMPLE_S)
        now, done = time.monotonic(), probe.applied() - base
        if done > samples[-1][1]:
            progress_at = now
        elif now - progress_at > STALL_S:
            raise StackError(
                f"ingest stalled: the store applied {samples[-1][1]} of {total} events and "
                f"nothing for {STALL_S:.0f} s; see the worker logs"
            )
        samples.append((now, done))
    return samples


def push(bench: Bench, ingest_rate: float) -> dict[str, Any]:
    """Cart additions among the background events → the push each one gets."""
    watch = PushWatch()
    bench.pushes.append(watch)
    fresh_window()
    meter = Meter(bench)
    bench.background.on_cart = watch.on_cart
    watch.measuring = True
    try:
        time.sleep(bench.duration)
        rec = watch.close(drain_s=bench.timeout_s)
    finally:
        bench.background.on_cart = None
        bench.pushes.remove(watch)
    rate = round(rec.sent / bench.duration, 1)
    figures = meter.figures()
    # A push is timed from its cart event's scheduled time: the background's lag is the one.
    figures["behind_p99_ms"] = figures.get("ingest_behind_p99_ms")
    return rec.entry(rate, ingest_rate, **figures)


def request_response(bench: Bench, rate: float, ingest_rate: float) -> dict[str, Any]:
    meter = Meter(bench)
    rec, pace = kafka_requests(
        bench.client, rate, bench.duration, bench.background.session, bench.timeout_s
    )
    return rec.entry(rate, ingest_rate, **meter.figures(pace))


def http(bench: Bench, rate: float, ingest_rate: float, port: int) -> dict[str, Any]:
    meter = Meter(bench)
    rec, pace = http_requests(
        f"http://127.0.0.1:{port}",
        rate,
        bench.duration,
        bench.background.session,
        bench.timeout_s,
    )
    return rec.entry(rate, ingest_rate, **meter.figures(pace))
