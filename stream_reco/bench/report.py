"""The bench report: its JSON shape, the ratios to the floor and between topologies, the table."""

from __future__ import annotations

from typing import Any

from stream_reco.bench.stats import INGEST_SHORT_SHARE, ratio
from stream_reco.bench.topology import TOPOLOGIES

# The fields every latency entry has (issue 9); entries carry more figures after these.
ENTRY_KEYS = ("rate", "ingest_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms", "sent", "answered")
ENTRY_KEYS += ("errors",)
LABELS = {"request_response": "request->response", "push": "add_to_cart->push", "http": "http GET"}
HEADLINE_RATE = 200.0  # the target rate: the floor's headline figures are taken there
VERSION = 2  # 2: topologies (entries, ingest runs and workers say which)


def nearest(entries: list[dict[str, Any]], rate: float) -> dict[str, Any] | None:
    """The entry measured at the rate closest to `rate`."""
    if not entries:
        return None
    return min(entries, key=lambda e: abs(float(e["rate"]) - rate))


def floor_summary(kafka: list[dict[str, Any]], redis: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's `floor` object: headline figures at the rate closest to 200/s, and every
    rate measured."""
    k = nearest(kafka, HEADLINE_RATE) or {}
    r = nearest(redis, HEADLINE_RATE) or {}
    return {
        "rate": k.get("rate"),
        "kafka_p50_ms": k.get("p50_ms"),
        "kafka_p95_ms": k.get("p95_ms"),
        "kafka_p99_ms": k.get("p99_ms"),
        "kafka_max_ms": k.get("max_ms"),
        "redis_p50_ms": r.get("p50_ms"),
        "redis_p99_ms": r.get("p99_ms"),
        "kafka": kafka,
        "redis": redis,
    }


def with_ratios(entries: list[dict[str, Any]], floor: list[dict[str, Any]]) -> None:
    """Add each entry's p50 and p99 as multiples of the floor measured at the closest rate."""
    for e in entries:
        f = nearest(floor, float(e["rate"]))
        e["floor_rate"] = None if f is None else f["rate"]
        e["x_floor_p50"] = ratio(e.get("p50_ms"), None if f is None else f.get("p50_ms"))
        e["x_floor_p99"] = ratio(e.get("p99_ms"), None if f is None else f.get("p99_ms"))


def build(
    machine: dict[str, Any],
    *,
    ingest: list[dict[str, Any]],
    request_response: list[dict[str, Any]],
    push: list[dict[str, Any]],
    http: list[dict[str, Any]],
    floor_kafka: list[dict[str, Any]],
    floor_redis: list[dict[str, Any]],
    memory: dict[str, Any],
    started: str,
    floor_loaded: list[dict[str, Any]] | None = None,
    elapsed_s: float,
) -> dict[str, Any]:
    """The whole report; latency entries get their ratios to the floor here (Kafka's for
    the Kafka paths, Redis's for HTTP, which has no broker in its path)."""
    with_ratios(request_response, floor_kafka)
    with_ratios(push, floor_kafka)
    with_ratios(http, floor_redis)
    runs = sorted(ingest, key=lambda r: (order(r), r["workers"]))
    head = runs[0] if runs else {}
    latency = {"request_response": request_response, "push": push, "http": http}
    return {
        "version": VERSION,
        "started": started,
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine,
        "scenarios": {
            "ingest": {
                "events_per_s": head.get("events_per_s"),
                "topology": head.get("topology"),
                "role": head.get("role"),
                "runs": runs,
            },
            **latency,
            "floor": {
                **floor_summary(floor_kafka, floor_redis),
                "kafka_loaded": floor_loaded or [],
            },
            "topology_ratios": topology_ratios(latency),
            "memory": memory,
        },
    }


def order(entry: dict[str, Any]) -> int:
    """Topologies in the order a `both` run measures them."""
    return TOPOLOGIES.index(entry.get("topology", "all"))


def topology_ratios(latency: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each latency measured in both topologies: split's p50 and p99 as multiples of all's
    (same scenario, ingest rate and request rate; pushes have no rate of their own)."""
    out = []
    for name, entries in latency.items():
        by_key: dict[tuple[str, float, float], dict[str, Any]] = {}
        for e in entries:
            rate = 0.0 if name == "push" else float(e["rate"])
            by_key[(e.get("topology", "all"), float(e["ingest_rate"]), rate)] = e
        for (topology, bg, rate), split in by_key.items():
            base = by_key.get(("all", bg, rate))
            if topology != "split" or base is None:
                continue
            out.append(
                {
                    "scenario": name,
                    "rate": split["rate"],
                    "ingest_rate": bg,
                    "all_p50_ms": base["p50_ms"],
                    "split_p50_ms": split["p50_ms"],
                    "all_p99_ms": base["p99_ms"],
                    "split_p99_ms": split["p99_ms"],
                    "split_over_all_p50": ratio(split["p50_ms"], base["p50_ms"]),
                    "split_over_all_p99": ratio(split["p99_ms"], base["p99_ms"]),
                }
            )
    return out


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.{digits}f}"
    return f"{int(value):,}"


def latency_cell(e: dict[str, Any], key: str) -> str:
    """One latency figure as the table shows it: ">timeout" where it falls among requests
    that got no answer (an entry from before `unanswered` was counted shows "-")."""
    if e.get(key) is None and e.get("unanswered", 0) > 0:
        return ">timeout"
    return _num(e.get(key))


def flags(e: dict[str, Any]) -> str:
    """What makes an entry's figures not what its rates promise, for the end of its row."""
    out = []
    if e.get("saturated"):
        out.append(f"saturated: {e['unanswered']:,} of {e['sent']:,} unanswered")
    if e.get("ingest_short"):
        out.append(f"ingest short: {_num(e.get('ingest_sent_per_s'), 0)}/s sent")
    return f"  ({'; '.join(out)})" if out else ""


def _x(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def _workers(roles: list[str]) -> str:
    """["ingest", "query"] -> "1 ingest + 1 query worker"."""
    counts = {r: roles.count(r) for r in dict.fromkeys(roles)}
    text = " + ".join(f"{n} {role}" for role, n in counts.items())
    return f"{text} worker{'s' if len(roles) > 1 else ''}"


def _topologies(machine: dict[str, Any]) -> dict[str, list[str]]:
    """The topologies measured and their latency workers' roles (a report from before
    topologies had one: a single `all` worker)."""
    return machine.get("topologies") or {"all": ["all"]}


def table(report: dict[str, Any]) -> str:
    """The report as the terminal shows it."""
    m, sc = report["machine"], report["scenarios"]
    plan = m.get("bench", {})
    shapes = _topologies(m)
    where = "; ".join(f"{t}: {_workers(roles)}" for t, roles in shapes.items())
    if len(shapes) == 1:
        where = _workers(next(iter(shapes.values())))
    lines = [
        f"stream-reco bench ({'quick' if plan.get('quick') else 'full'}, "
        f"{report['elapsed_s']:.0f} s), topology {m.get('topology', 'all')} ({where})",
        f"  {m['cores']} cores {m['cpu_model']}, {m['ram_gb']} GB, Kafka {m['kafka']}, "
        f"Redis {m['redis']}, Python {m['python']}",
        "",
        "ingest: events produced -> applied in Redis (steady 10-90 %)",
        f"  {'topology':<9}{'workers':>12} {'events':>8} {'events/s':>10} {'first-last/s':>13} "
        f"{'producer/s':>11}",
    ]
    for r in sc["ingest"]["runs"]:
        who = f"{r['workers']} {r.get('role', 'all')}"
        lines.append(
            f"  {r.get('topology', 'all'):<9}{who:>12} {_num(r['events']):>8} "
            f"{_num(r['events_per_s']):>10} {_num(r['first_to_last_per_s']):>13} "
            f"{_num(r['producer_per_s']):>11}"
            + ("  (producer-bound)" if r.get("producer_bound") else "")
        )
    head = (
        f"  {'scenario':<18}{'rate/s':>7}{'ingest/s':>9}{'p50':>9}{'p95':>9}{'p99':>9}"
        f"{'max':>9}{'sent':>7}{'answered':>9}{'errors':>7}{'p50/floor':>10}{'p99/floor':>10}"
        f"{'behind':>8}"
    )
    lines += [
        "",
        "latency in ms, from the scheduled send to the answer read (open loop), over every "
        "request sent",
        head,
    ]
    for topology, roles in shapes.items():
        lines.append(f"  topology {topology} ({_workers(roles)}):")
        lines += _rows(sc, topology)
    lines.append("  floor (Kafka and Redis alone, no worker in the path):")
    lines += [_row("floor kafka echo", e) for e in sc["floor"]["kafka"]]
    lines += [_row("floor redis PING", e) for e in sc["floor"]["redis"]]
    # The same echo while the worker takes the background load: what this machine's sharing
    # of its cores alone adds, with no worker code in the path.
    lines += [_row("floor echo, loaded", e) for e in sc["floor"].get("kafka_loaded", [])]
    lines += _ratio_lines(sc.get("topology_ratios", []))
    mem = sc["memory"]
    rss = "; ".join(
        f"worker {w['worker']} ({w.get('role', 'all')}) RSS {_num(w['start_mb'])} -> "
        f"{_num(w['end_mb'])} MB"
        for w in mem.get("workers", [])
    )
    lines += [
        "",
        f"memory: Redis {_num(mem.get('bytes_per_session'))} B/session "
        f"({_num(mem.get('sessions'))} sessions), {_num(mem.get('bytes_per_item'))} B/item "
        f"({_num(mem.get('items'))} items)",
        f"  {rss}",
        "behind: the load generator's own p99 lag behind its schedule (ms); p50/floor and "
        "p99/floor: multiples of the floor at the closest rate",
        ">timeout: the percentile falls among requests that got no answer (timed out or "
        "failed); saturated: more than 1 % did, so p99 is beyond the timeout",
        "ingest short: the background generator sent under "
        f"{INGEST_SHORT_SHARE:.0%} of the nominal ingest/s",
    ]
    return "\n".join(lines)


def _rows(sc: dict[str, Any], topology: str) -> list[str]:
    return [
        _row(label, e)
        for key, label in LABELS.items()
        for e in sc[key]
        if e.get("topology", "all") == topology
    ]


def _row(name: str, e: dict[str, Any]) -> str:
    return (
        f"  {name:<18}{_num(e['rate'], 0):>7}{_num(e['ingest_rate'], 0):>9}"
        f"{latency_cell(e, 'p50_ms'):>9}{latency_cell(e, 'p95_ms'):>9}"
        f"{latency_cell(e, 'p99_ms'):>9}{latency_cell(e, 'max_ms'):>9}"
        f"{e['sent']:>7}{e['answered']:>9}{e['errors']:>7}"
        f"{_x(e.get('x_floor_p50')):>10}{_x(e.get('x_floor_p99')):>10}"
        f"{_num(e.get('behind_p99_ms')):>8}{flags(e)}"
    )


def _ratio_lines(ratios: list[dict[str, Any]]) -> list[str]:
    if not ratios:
        return []
    lines = ["", "split / all: the split topology's latency as a multiple of all's"]
    lines.append(f"  {'scenario':<18}{'rate/s':>7}{'ingest/s':>9}{'p50':>8}{'p99':>8}")
    for r in ratios:
        lines.append(
            f"  {LABELS[r['scenario']]:<18}{_num(r['rate'], 0):>7}{_num(r['ingest_rate'], 0):>9}"
            f"{_x(r['split_over_all_p50'], 2):>8}{_x(r['split_over_all_p99'], 2):>8}"
        )
    return lines
