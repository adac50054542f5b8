"""The soak: one steady mixed load for many minutes, its figures per window, and their drift."""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stream_reco.bench import memory
from stream_reco.bench.fleet import Fleet, StoreProbe
from stream_reco.bench.load import Background
from stream_reco.bench.run import on_own_fleet
from stream_reco.bench.scenarios import Say
from stream_reco.bench.topology import topologies
from stream_reco.bench.windows import K, PushWatch, fresh_window, kafka_requests
from stream_reco.client import RecoClient
from stream_reco.config import Settings
from stream_reco.errors import ConfigError
from stream_reco.simulator import make_catalog

MIN_WINDOWS = 3
MIN_REQUESTS = 50
SHORT_SHARE = 0.95  # a window whose background sent less than this share of its rate: no verdict
# Figures judged for drift, and which way is worse. Redis memory is reported, not judged:
# it grows by design until the sessions' lifetimes start expiring keys.
HIGHER_IS_WORSE = {
    "request_p50_ms": True,
    "request_p99_ms": True,
    "push_p50_ms": True,
    "push_p99_ms": True,
    "applied_per_s": False,
    "worker_rss_mb": True,
}


@dataclass(frozen=True)
class SoakPlan:
    """One steady load (background events, requests over Kafka) for `minutes`."""

    minutes: float
    window_s: float = 60.0
    events_per_s: float = 2000.0
    requests_per_s: float = 200.0
    topology: str = "all"
    tolerance: float = 0.2  # a figure degrades when its last third is worse by more than this
    items: int = 1000
    seed: int = 7
    timeout_s: float = 10.0
    warmup_s: float = 5.0

    def check(self) -> SoakPlan:
        numbers = (self.minutes, self.window_s, self.events_per_s, self.requests_per_s)
        if not all(math.isfinite(x) for x in (*numbers, self.tolerance)):
            raise ConfigError("--minutes, --window, the rates and --tolerance must be numbers")
        if self.minutes <= 0 or self.window_s <= 0:
            raise ConfigError("--minutes and --window must be > 0")
        if self.minutes * 60 // self.window_s < MIN_WINDOWS:
            raise ConfigError(
                f"a soak compares the first third of its windows with the last: it needs at "
                f"least {MIN_WINDOWS} (--minutes x 60 / --window)"
            )
        if self.tolerance < 0:
            raise ConfigError("--tolerance must be >= 0")
        if self.events_per_s <= 0 or self.requests_per_s * self.window_s < MIN_REQUESTS:
            raise ConfigError(
                f"--events-per-s must be > 0, and --requests-per-s x --window at least "
                f"{MIN_REQUESTS} (requests per window, for its percentiles)"
            )
        if self.topology not in topologies("both"):  # one topology for the whole run
            raise ConfigError(f"--topology {self.topology!r}: choose all or split")
        return self

    @property
    def windows(self) -> int:
        return int(self.minutes * 60 // self.window_s)


def run(base: Settings, plan: SoakPlan, *, start_stack: bool = True) -> dict[str, Any]:
    """The soak on topics, groups and keys of its own (removed at the end, also on a stop)."""
    plan.check()
    done = on_own_fleet(
        base,
        "soak",
        dataclasses.asdict(plan),
        lambda fleet, say: _measure(fleet, plan, say),
        intro=f"{plan.windows} windows of {plan.window_s:g} s",
        start_stack=start_stack,
    )
    rows = done.parts["windows"]
    return {
        "machine": done.facts,
        "started": done.started,
        "elapsed_s": round(done.elapsed_s, 1),
        "plan": dataclasses.asdict(plan),
        "windows": rows,
        "drift": drift(rows, plan),
        "redis_growth": redis_growth(rows),
    }


def _measure(fleet: Fleet, plan: SoakPlan, say: Say) -> dict[str, Any]:
    fleet.open()
    fleet.deploy(plan.topology)
    probe = StoreProbe(fleet.settings)
    catalog = make_catalog(plan.items, seed=plan.seed)
    fleet.publish_catalog(catalog, probe)
    watches: list[PushWatch] = []

    def on_response(doc: dict[str, Any], arrived: float) -> None:
        for watch in list(watches):
            watch.on_response(doc, arrived)

    client = RecoClient.from_settings(
        fleet.settings, on_response=on_response, timeout=plan.timeout_s, client_id="soak"
    )
    background = Background(fleet.settings, catalog, plan.seed)
    rows: list[dict[str, Any]] = []
    try:
        client.start()
        base = probe.applied()
        background.start(plan.events_per_s)
        time.sleep(plan.warmup_s)
        t_start = time.monotonic()
        for n in range(plan.windows):
            rows.append(_window(fleet, probe, background, client, watches, plan, base))
            rows[-1]["t_s"] = round(time.monotonic() - t_start, 1)
            say(_progress(n + 1, plan.windows, rows[-1]))
    finally:
        background.stop()
        client.close()
        probe.close()
    return {"windows": rows}


def _window(
    fleet: Fleet,
    probe: StoreProbe,
    background: Background,
    client: RecoClient,
    watches: list[PushWatch],
    plan: SoakPlan,
    base: int,
) -> dict[str, Any]:
    """Requests on schedule for one window while its cart additions' pushes are timed."""
    watch = PushWatch()
    watches.append(watch)
    background.on_cart = watch.on_cart
    mark, applied_before = background.mark(), probe.applied()
    watch.measuring = True
    try:
        requests, pace = kafka_requests(
            client, plan.requests_per_s, plan.window_s, background.session, plan.timeout_s
        )
        pushes = watch.close(drain_s=plan.timeout_s)
    finally:
        background.on_cart = None
        watches.remove(watch)
    span = time.monotonic() - mark[1]  # the window and its drain: carts were made in both
    applied = probe.applied()
    assert background.pace is not None
    sent_total = background.pace.sent
    bg = background.since(mark)
    row = {
        "requests": requests.entry(plan.requests_per_s, plan.events_per_s, **pace.behind(), **bg),
        "pushes": pushes.entry(round(pushes.sent / span, 1), plan.events_per_s, **bg),
        **bg,
        "applied_per_s": round((applied - applied_before) / span, 1),
        # Sent but not applied yet: a backlog that grows from window to window is a worker
        # that cannot keep up.
        "backlog_events": max(sent_total - (applied - base), 0),
        "worker_rss_mb": [memory.rss_mb(w.proc.pid) for w in fleet.workers],
        "redis_used_mb": round(memory.used_memory(fleet.settings) / 2**20, 1),
        "k": K,
    }
    background.pace.forget()  # the generator's own records stay bounded over hours
    fresh_window()
    return row


def _progress(n: int, total: int, row: dict[str, Any]) -> str:
    rq, ps = row["requests"], row["pushes"]
    return (
        f"window {n}/{total} at {row['t_s']:g} s: request p50/p99 {rq['p50_ms']}/{rq['p99_ms']} ms "
        f"({rq['answered']}/{rq['sent']}), push p50/p99 {ps['p50_ms']}/{ps['p99_ms']} ms "
        f"({ps['answered']}/{ps['sent']}), applied {row['applied_per_s']:g}/s, backlog "
        f"{row['backlog_events']:,}, RSS {row['worker_rss_mb']} MB, Redis {row['redis_used_mb']} MB"
    )


def series(rows: Sequence[dict[str, Any]]) -> dict[str, list[float | None]]:
    """Each judged figure over the windows (None where a window had no value)."""

    def total_rss(r: dict[str, Any]) -> float | None:
        mbs = r["worker_rss_mb"]
        return None if any(m is None for m in mbs) else sum(mbs)

    return {
        "request_p50_ms": [r["requests"]["p50_ms"] for r in rows],
        "request_p99_ms": [r["requests"]["p99_ms"] for r in rows],
        "push_p50_ms": [r["pushes"]["p50_ms"] for r in rows],
        "push_p99_ms": [r["pushes"]["p99_ms"] for r in rows],
        "applied_per_s": [r["applied_per_s"] for r in rows],
        "worker_rss_mb": [total_rss(r) for r in rows],
    }


def drift(rows: Sequence[dict[str, Any]], plan: SoakPlan) -> dict[str, Any]:
    """Each figure's median over the first third of the windows against the last third; it
    degraded when the last is worse by more than `plan.tolerance` (a share). Thirds, not
    single windows: one window's p99 moves by up to 2x here on its own. The backlog degrades
    when it grew by more than that share of a window's events. No verdict passes with a
    figure missing or a window where the load generator fell short of its rate."""
    third = max(len(rows) // 3, 1)
    figures: dict[str, Any] = {}
    for name, values in series(rows).items():
        figures[name] = _compare(name, values[:third], values[-third:], plan.tolerance)
    backlog = [float(r["backlog_events"]) for r in rows]
    grew = (_median(backlog[-third:]) or 0.0) - (_median(backlog[:third]) or 0.0)
    allowed = plan.tolerance * plan.events_per_s * plan.window_s
    figures["backlog_events"] = {
        "first": _median(backlog[:third]),
        "last": _median(backlog[-third:]),
        "ratio": None,
        "degraded": grew > allowed,
    }
    carts = sum(r["pushes"]["sent"] for r in rows)
    missing = [n for n, f in figures.items() if f["degraded"] is None]
    if not carts:  # no cart in the load: no push figure to miss
        missing = [n for n in missing if not n.startswith("push_")]
    short = sum(
        1 for r in rows if r.get("ingest_sent_per_s", 0.0) < SHORT_SHARE * plan.events_per_s
    )
    lost = sum(r["requests"]["sent"] - r["requests"]["answered"] for r in rows) + sum(
        r["pushes"]["sent"] - r["pushes"]["answered"] for r in rows
    )
    degraded = any(f["degraded"] for f in figures.values())
    return {
        "tolerance": plan.tolerance,
        "windows_per_third": third,
        "figures": figures,
        "unanswered": lost,
        "missing": missing,
        "generator_short_windows": short,
        "passed": not degraded and not missing and not short and lost == 0,
    }


def _compare(
    name: str, first_values: Sequence[float | None], last_values: Sequence[float | None], tol: float
) -> dict[str, Any]:
    first, last = _median(first_values), _median(last_values)
    if first is None or last is None or first == 0:
        return {"first": first, "last": last, "ratio": None, "degraded": None}
    ratio = last / first
    worse = ratio - 1 if HIGHER_IS_WORSE[name] else 1 - ratio
    return {
        "first": round(first, 3),
        "last": round(last, 3),
        "ratio": round(ratio, 3),
        "degraded": worse > tol,
    }


def redis_growth(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Redis memory over the run: MB per minute, and bytes per event applied."""
    if len(rows) < 2:
        return {"mb_per_minute": None, "bytes_per_event": None}
    mb = rows[-1]["redis_used_mb"] - rows[0]["redis_used_mb"]
    minutes = (rows[-1]["t_s"] - rows[0]["t_s"]) / 60
    pairs = zip(rows, rows[1:], strict=False)
    events = sum(b["applied_per_s"] * (b["t_s"] - a["t_s"]) for a, b in pairs)
    return {
        "mb_per_minute": round(mb / minutes, 2) if minutes > 0 else None,
        "bytes_per_event": round(mb * 2**20 / events, 1) if events > 0 else None,
    }


def table(result: dict[str, Any]) -> str:
    """The terminal summary: one line per window, then the drift verdict."""
    lines = [
        f"soak: {result['plan']['events_per_s']:g} events/s + "
        f"{result['plan']['requests_per_s']:g} requests/s, topology {result['plan']['topology']}",
        f"  {'t/s':>6} {'req p50':>8} {'req p99':>8} {'push p50':>8} {'push p99':>8} "
        f"{'applied/s':>9} {'backlog':>8} {'RSS MB':>8} {'Redis MB':>8}",
    ]
    for r, rss in zip(result["windows"], series(result["windows"])["worker_rss_mb"], strict=True):
        rq, ps = r["requests"], r["pushes"]
        lines.append(
            f"  {r['t_s']:>6g} {_cell(rq['p50_ms'])} {_cell(rq['p99_ms'])} {_cell(ps['p50_ms'])} "
            f"{_cell(ps['p99_ms'])} {r['applied_per_s']:>9,.0f} {r['backlog_events']:>8,} "
            f"{_cell(rss)} {r['redis_used_mb']:>8.1f}"
        )
    d = result["drift"]
    lines.append(f"drift (median of the last {d['windows_per_third']} windows / the first):")
    for name, f in d["figures"].items():
        verdict = {True: "DEGRADED", False: "ok", None: "missing"}[f["degraded"]]
        ratio = "" if f["ratio"] is None else f" (x{f['ratio']})"
        lines.append(f"  {name:<16} {f['first']} -> {f['last']}{ratio} {verdict}")
    g = result["redis_growth"]
    lines.append(
        f"  redis memory     +{g['mb_per_minute']} MB/min, {g['bytes_per_event']} bytes per "
        "event applied (not judged: grows until the TTLs expire keys)"
    )
    if d["generator_short_windows"]:
        lines.append(
            f"  the load generator fell short of its rate in {d['generator_short_windows']} "
            "window(s): the machine, not the engine, may have set the pace"
        )
    tol = f"{d['tolerance']:.0%}"
    verdict = "PASSED" if d["passed"] else "FAILED"
    lines.append(f"soak {verdict}: figures within {tol}, unanswered {d['unanswered']}")
    return "\n".join(lines)


def _cell(v: float | None) -> str:
    return f"{'-':>8}" if v is None else f"{v:>8.1f}"


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None
