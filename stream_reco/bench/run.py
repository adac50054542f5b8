"""The bench run on one screen: set up its own world, measure every scenario, clean up."""

from __future__ import annotations

import dataclasses
import datetime
import gc
import itertools
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stream_reco import stack
from stream_reco.bench import machine, memory, report, scenarios
from stream_reco.bench.fleet import Fleet, StoreProbe
from stream_reco.bench.floor import KafkaFloor, redis_floor
from stream_reco.bench.interrupt import StopSignals
from stream_reco.bench.load import Background
from stream_reco.bench.scenarios import Bench, Say
from stream_reco.bench.topology import LATENCY_ROLES, ingest_role, topologies
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
    topology: str = "all"  # or "split", or "both" (the latency scenarios on each in turn)
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
        self,
        duration: float | None,
        workers: tuple[int, ...] | None,
        events: int | None,
        topology: str | None = None,
    ) -> Plan:
        changes: dict[str, Any] = {}
        if topology is not None:
            topologies(topology)  # refuses an unknown name
            changes["topology"] = topology
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


def say_from(started: float) -> Say:
    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", file=sys.stderr, flush=True)

    return say


def _line(name: str, e: dict[str, Any]) -> str:
    where = f" [{e['topology']}]" if "topology" in e else ""
    return (
        f"{name}{where} {e['rate']:g}/s @ {e['ingest_rate']:g} events/s: p50 "
        f"{report.latency_cell(e, 'p50_ms')} ms, p99 {report.latency_cell(e, 'p99_ms')} ms, "
        f"{e['answered']}/{e['sent']} answered, {e['errors']} errors{report.flags(e)}"
    )


def run(base: Settings, plan: Plan, *, start_stack: bool = True) -> dict[str, Any]:
    """Every scenario of `plan` on the run's own topics, group and keys; the report. The run's
    topics, group, keys and workers are removed at the end, also on failure, Ctrl-C, SIGINT
    or SIGTERM (which then raise `Stopped`, a KeyboardInterrupt)."""
    done = on_own_fleet(
        base,
        "bench",
        dataclasses.asdict(plan),
        lambda fleet, say: _measure(fleet, plan, say),
        intro="on topics, consumer groups and Redis keys of its own",
        start_stack=start_stack,
    )
    facts, parts = done.facts, done.parts
    facts["topology"] = plan.topology
    facts["topologies"] = {t: list(LATENCY_ROLES[t]) for t in topologies(plan.topology)}
    facts["workers"] = [
        {k: w[k] for k in ("worker", "role", "topology")} for w in parts["memory"]["workers"]
    ]
    return report.build(facts, started=done.started, elapsed_s=done.elapsed_s, **parts)


@dataclass(frozen=True)
class Measured:
    """What a run on its own fleet measured, with the machine it ran on."""

    facts: dict[str, Any]
    parts: dict[str, Any]
    started: str  # UTC, ISO 8601
    elapsed_s: float


def on_own_fleet(
    base: Settings,
    name: str,
    plan: dict[str, Any],
    measure: Callable[[Fleet, Say], dict[str, Any]],
    *,
    intro: str,
    start_stack: bool,
) -> Measured:
    """The frame every load run shares: the stack up, a fleet of workers on topics, groups and
    keys of its own, the machine's facts, `measure(fleet, say)`, then the fleet removed
    whatever happened (Ctrl-C, SIGINT and SIGTERM raise `Stopped` after the cleanup)."""
    t0 = time.monotonic()
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    say = say_from(t0)
    with StopSignals() as signals:
        if start_stack:
            stack.up(base, say=say)
        fleet = Fleet(base, f"{name}{uuid.uuid4().hex[:8]}")
        fleet.hold = signals.hold
        say(f"{name} {fleet.tag}: {intro}")
        facts = machine.machine(fleet.settings, plan)
        parts = measure_then_close(fleet, lambda: measure(fleet, say), say, signals)
    return Measured(facts, parts, started, time.monotonic() - t0)


def measure_then_close(
    fleet: Fleet, measure: Callable[[], dict[str, Any]], say: Say, signals: StopSignals
) -> dict[str, Any]:
    """`measure()`, then `fleet.close()` whatever happened; the cleanup is shielded from
    further stop signals, so a second Ctrl-C cannot leave half of the run behind."""
    switch = sys.getswitchinterval()
    # The generator's threads (pacer, background shoppers, the client's poll thread) take
    # turns at the GIL; at the default 5 ms a woken pacer or a response's timestamp could
    # wait that long, which would be measured as the engine's latency.
    sys.setswitchinterval(GIL_SWITCH_S)
    gc.disable()  # collected between windows instead (windows.fresh_window)
    measured = False
    try:
        parts = measure()
        measured = True
    except KeyboardInterrupt as exc:
        say(f"{exc or 'interrupted'}: stopping")
        raise
    except Exception:
        fleet.failed = True  # keeps the worker logs for the post-mortem
        say(f"failed; the worker logs stay in {fleet.settings.home.resolve() / 'logs'}")
        raise
    finally:
        signals.cleaning()
        gc.enable()
        sys.setswitchinterval(switch)
        say("removing the bench's workers, topics, groups and keys")
        # After a failure or a stop, cleanup errors are only logged: the first error is the
        # one to see.
        fleet.close(raise_errors=measured)
    return parts


def _measure(fleet: Fleet, plan: Plan, say: Say) -> dict[str, Any]:
    used_before = memory.used_memory(fleet.settings)
    fleet.open()
    order = topologies(plan.topology)
    fleet.deploy(order[0])
    probe = StoreProbe(fleet.settings)
    catalog = make_catalog(plan.items, seed=plan.seed)
    fleet.publish_catalog(catalog, probe)
    say(f"{_deployment(fleet)} ready, {len(catalog)}-item catalogue stored")
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
    parts: dict[str, Any] = {
        "ingest": [],
        "request_response": [],
        "push": [],
        "http": [],
        "floor_loaded": [],
    }
    try:
        client.start()
        parts["floor_kafka"], parts["floor_redis"] = _floor(bench, plan)
        for topology in order:
            _one_topology(bench, plan, topology, parts)
        parts["memory"] = memory.redis_memory(fleet.settings, used_before, plan.seed)
        parts["memory"]["workers"] = fleet.rss_figures()
    finally:
        background.stop()
        client.close()
        probe.close()
    return parts


def _deployment(fleet: Fleet) -> str:
    roles = ", ".join(f"{w.role} (web port {w.web_port})" for w in fleet.workers)
    return f"topology {fleet.topology}: workers {roles}"


def _one_topology(bench: Bench, plan: Plan, topology: str, parts: dict[str, Any]) -> None:
    """Ingest with one worker, the latency windows, then ingest with more workers: all on
    `topology`'s workers (deployed here unless they already run)."""
    fleet = bench.fleet
    if fleet.topology != topology:
        fleet.deploy(topology)
        bench.say(f"{_deployment(fleet)} ready")
    if 1 in plan.workers:
        parts["ingest"].append(_ingest(bench, plan, topology, 1))
    latency = _under_load(bench, plan, topology, fleet.answering().web_port)
    names = ("request_response", "push", "http", "floor_loaded")
    for name, entries in zip(names, latency, strict=True):
        parts[name] += entries
    for n in sorted(w for w in plan.workers if w > 1):
        fleet.scale_ingest(topology, n)
        parts["ingest"].append(_ingest(bench, plan, topology, n))


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


def _ingest(bench: Bench, plan: Plan, topology: str, workers: int) -> dict[str, Any]:
    role = ingest_role(topology)
    events = scenarios.make_events(bench.catalog, plan.ingest_events, plan.seed + workers)
    who = f"{workers} {role} worker(s), topology {topology}"
    bench.say(f"ingest: {len(events):,} events with {who} ...")
    result = {"topology": topology, "role": role, **scenarios.ingest(bench, workers, events)}
    bench.say(
        f"ingest with {who}: {result['events_per_s']} events/s applied "
        f"(producer {result['producer_per_s']} events/s)"
    )
    return result


def _under_load(
    bench: Bench, plan: Plan, topology: str, web_port: int
) -> tuple[list[dict[str, Any]], ...]:
    """Push, request->response, HTTP and loaded-floor windows at each background ingest rate,
    each entry marked with the topology it was measured on."""
    on = {"topology": topology}
    rr: list[dict[str, Any]] = []
    push: list[dict[str, Any]] = []
    http: list[dict[str, Any]] = []
    loaded: list[dict[str, Any]] = []
    for bg in plan.background_rates:
        bench.background.start(bg)
        try:
            time.sleep(plan.warmup_s)  # sessions to ask for, and the worker in its stride
            bench.say(_windows(plan, topology, bg))
            push.append({**scenarios.push(bench, bg), **on})
            bench.say(_line("add_to_cart->push", push[-1]))
            for rate in plan.request_rates:
                rr.append({**scenarios.request_response(bench, rate, bg), **on})
                bench.say(_line("request->response", rr[-1]))
            for rate in plan.http_rates:
                http.append({**scenarios.http(bench, rate, bg, web_port), **on})
                bench.say(_line("http GET", http[-1]))
            loaded += _floor_loaded(bench, plan, bg, on)
        finally:
            bench.background.stop()
        # Each ingest rate starts from a worker with no backlog, whatever the last one left.
        scenarios.wait_quiet(bench.probe)
    return rr, push, http, loaded


def _floor_loaded(bench: Bench, plan: Plan, bg: float, on: dict[str, Any]) -> list[dict[str, Any]]:
    """The bare Kafka echo at the request rates while the worker takes `bg` events/s: how
    much of a latency is the machine's cores being shared, not the worker's code."""
    out: list[dict[str, Any]] = []
    sessions = itertools.cycle([f"floor-s{i}" for i in range(64)])
    with KafkaFloor(bench.fleet, f"floor-{on['topology']}-{bg:g}") as floor:
        for rate in plan.request_rates:
            rec, pace = floor.measure(rate, plan.duration, lambda: next(sessions), plan.timeout_s)
            out.append({**rec.entry(rate, bg, **pace.behind()), **on})
            bench.say(_line("floor echo, loaded", out[-1]))
    return out


def _windows(plan: Plan, topology: str, bg: float) -> str:
    """The progress line that opens the latency windows at one background rate."""
    n = 1 + len(plan.request_rates) + len(plan.http_rates)
    return (
        f"latency windows [{topology}] @ {bg:g} events/s: push, request->response at "
        f"{_rates(plan.request_rates)}/s, http GET at {_rates(plan.http_rates)}/s; "
        f"{n} x {plan.duration:g} s ..."
    )


def _rates(rates: tuple[float, ...]) -> str:
    return ",".join(f"{r:g}" for r in rates)
