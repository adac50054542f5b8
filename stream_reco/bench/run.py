"""The bench run on one screen: set up its own world, measure every scenario, clean up."""

from __future__ import annotations

import dataclasses
import datetime
import gc
import itertools
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from stream_reco import stack
from stream_reco.bench import machine, memory, report, scenarios
from stream_reco.bench.fleet import Fleet, StoreProbe
from stream_reco.bench.floor import KafkaFloor, redis_floor
from stream_reco.bench.load import Background
from stream_reco.bench.scenarios import Bench, Say
from stream_reco.bench.windows import PushWatch
from stream_reco.client import RecoClient
from stream_reco.config import Settings
from stream_reco.simulator import make_catalog

GIL_SWITCH_S = 0.0005


@dataclass(frozen=True)
class Plan:
    """What to measure; `full()` and `quick_plan()` are the presets the command offers."""

    quick: bool
    duration: float  # seconds per measured window
    workers: tuple[int, ...]  # worker counts for ingest
    ingest_events: int
    request_rates: tuple[float, ...]
    background_rates: tuple[float, ...]
    http_rates: tuple[float, ...]
    items: int = 1000
    seed: int = 7
    timeout_s: float = 10.0
    warmup_s: float = 3.0

    @classmethod
    def full(cls) -> Plan:
        return cls(False, 30.0, (1, 2), 100_000, (50, 200, 500), (2000, 5000), (50, 200, 500))

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(True, 10.0, (1,), 30_000, (200,), (2000,), (200,), warmup_s=2.0)

    def with_options(
        self, duration: float | None, workers: tuple[int, ...] | None, events: int | None
    ) -> Plan:
        changes: dict[str, Any] = {}
        if duration is not None:
            changes["duration"] = duration
            changes["warmup_s"] = min(self.warmup_s, duration)
        if workers is not None:
            changes["workers"] = workers
        if events is not None:
            changes["ingest_events"] = events
        return dataclasses.replace(self, **changes)

    @property
    def floor_rates(self) -> tuple[float, ...]:
        return tuple(sorted({*self.request_rates, *self.http_rates}))


def _say(started: float) -> Say:
    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    return say


def _line(name: str, e: dict[str, Any]) -> str:
    return (
        f"{name} {e['rate']:g}/s @ {e['ingest_rate']:g} events/s: p50 {e['p50_ms']} ms, "
        f"p99 {e['p99_ms']} ms, {e['answered']}/{e['sent']} answered, {e['errors']} errors"
    )


def run(base: Settings, plan: Plan, *, start_stack: bool = True) -> dict[str, Any]:
    """Every scenario of `plan` on the run's own topics, group and keys; the report. The run's
    topics, group, keys and workers are removed at the end, also on failure or Ctrl-C."""
    t0 = time.monotonic()
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    say = _say(t0)
    if start_stack:
        stack.up(base, say=say)
    fleet = Fleet(base, f"bench{uuid.uuid4().hex[:8]}")
    say(f"bench {fleet.tag}: on topics, a consumer group and Redis keys of its own")
    facts = machine.machine(fleet.settings, dataclasses.asdict(plan))
    switch = sys.getswitchinterval()
    # The generator's threads (pacer, background shoppers, the client's poll thread) take
    # turns at the GIL; at the default 5 ms a woken pacer or a response's timestamp could
    # wait that long, which would be measured as the engine's latency.
    sys.setswitchinterval(GIL_SWITCH_S)
    gc.disable()  # collected between windows instead (windows.fresh_window)
    try:
        parts = _measure(fleet, plan, say)
    except Exception:
        fleet.failed = True  # keeps the worker logs for the post-mortem
        say(f"failed; the worker logs stay in {fleet.settings.home.resolve() / 'logs'}")
        raise
    finally:
        gc.enable()
        sys.setswitchinterval(switch)
        say("removing the bench's workers, topics, group and keys")
        fleet.close()
    return report.build(facts, started=started, elapsed_s=time.monotonic() - t0, **parts)


def _measure(fleet: Fleet, plan: Plan, say: Say) -> dict[str, Any]:
    used_before = memory.used_memory(fleet.settings)
    fleet.open()
    first = fleet.add_worker()
    fleet.wait_assigned(1)
    probe = StoreProbe(fleet.settings)
    catalog = make_catalog(plan.items, seed=plan.seed)
    fleet.publish_catalog(catalog, probe)
    say(f"worker ready (web port {first.web_port}), {len(catalog)}-item catalogue stored")
    rss = {0: memory.rss_mb(first.proc.pid)}
    watches: list[PushWatch] = []

    def on_response(doc: dict[str, Any], arrived: float) -> None:
        for watch in list(watches):
            watch.on_response(doc, arrived)

    client = RecoClient.from_settings(
        fleet.settings, on_response=on_response, timeout=plan.timeout_s, client_id="bench"
    )
    background = Background(fleet.settings, catalog, plan.seed)
    bench = Bench(
        fleet=fleet,
        probe=probe,
        background=background,
        client=client,
        catalog=catalog,
        duration=plan.duration,
        warmup_s=plan.warmup_s,
        timeout_s=plan.timeout_s,
        say=say,
        pushes=watches,
    )
    try:
        client.start()
        floor_kafka, floor_redis = _floor(bench, plan)
        ingest = [_ingest(bench, plan, 1)] if 1 in plan.workers else []
        rr, push, http = _under_load(bench, plan, first.web_port)
        for n in sorted(w for w in plan.workers if w > 1):
            while len(fleet.workers) < n:
                index = len(fleet.workers)
                rss[index] = memory.rss_mb(fleet.add_worker().proc.pid)
            ingest.append(_ingest(bench, plan, n))
        mem = memory.redis_memory(fleet.settings, used_before, plan.seed)
        mem["workers"] = [
            {"worker": i, "start_mb": rss.get(i), "end_mb": memory.rss_mb(w.proc.pid)}
            for i, w in enumerate(fleet.workers)
        ]
    finally:
        background.stop()
        client.close()
        probe.close()
    return {
        "ingest": ingest,
        "request_response": rr,
        "push": push,
        "http": http,
        "floor_kafka": floor_kafka,
        "floor_redis": floor_redis,
        "memory": mem,
    }


def _floor(bench: Bench, plan: Plan) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Kafka's and Redis's own round trips at every request rate the engine is measured at."""
    kafka: list[dict[str, Any]] = []
    redis: list[dict[str, Any]] = []
    sessions = itertools.cycle([f"floor-s{i}" for i in range(64)])
    with KafkaFloor(bench.fleet) as floor:
        for rate in plan.floor_rates:
            rec, pace = floor.measure(rate, plan.duration, lambda: next(sessions), plan.timeout_s)
            kafka.append(rec.entry(rate, 0, **pace.behind()))
            bench.say(_line("floor kafka echo", kafka[-1]))
    for rate in plan.floor_rates:
        # Half as long: Redis's own spread is narrow and the window is only a reference.
        rec, pace = redis_floor(bench.fleet.settings, rate, plan.duration / 2)
        redis.append(rec.entry(rate, 0, **pace.behind()))
        bench.say(_line("floor redis PING", redis[-1]))
    return kafka, redis


def _ingest(bench: Bench, plan: Plan, workers: int) -> dict[str, Any]:
    events = scenarios.make_events(bench.catalog, plan.ingest_events, plan.seed + workers)
    bench.say(f"ingest: {len(events):,} events with {workers} worker(s) ...")
    result = scenarios.ingest(bench, workers, events)
    bench.say(
        f"ingest with {workers} worker(s): {result['events_per_s']} events/s applied "
        f"(producer {result['producer_per_s']} events/s)"
    )
    return result


def _under_load(
    bench: Bench, plan: Plan, web_port: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Push, request->response and HTTP windows at each background ingest rate."""
    rr: list[dict[str, Any]] = []
    push: list[dict[str, Any]] = []
    http: list[dict[str, Any]] = []
    for bg in plan.background_rates:
        bench.background.start(bg)
        try:
            time.sleep(plan.warmup_s)  # sessions to ask for, and the worker in its stride
            push.append(scenarios.push(bench, bg))
            bench.say(_line("add_to_cart->push", push[-1]))
            for rate in plan.request_rates:
                rr.append(scenarios.request_response(bench, rate, bg))
                bench.say(_line("request->response", rr[-1]))
            for rate in plan.http_rates:
                http.append(scenarios.http(bench, rate, bg, web_port))
                bench.say(_line("http GET", http[-1]))
        finally:
            bench.background.stop()
        # Each ingest rate starts from a worker with no backlog, whatever the last one left.
        scenarios.wait_quiet(bench.probe)
    return rr, push, http
