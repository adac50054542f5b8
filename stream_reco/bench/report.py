"""The bench report: its JSON shape, the ratios to the floor, the terminal table and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream_reco.bench.stats import ratio

# The fields every latency entry has (issue 9); entries carry more figures after these.
ENTRY_KEYS = ("rate", "ingest_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms", "sent", "answered")
ENTRY_KEYS += ("errors",)
HEADLINE_RATE = 200.0  # the target rate: the floor's headline figures are taken there
VERSION = 1


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
    elapsed_s: float,
) -> dict[str, Any]:
    """The whole report; latency entries get their ratios to the floor here (Kafka's for
    the Kafka paths, Redis's for HTTP, which has no broker in its path)."""
    with_ratios(request_response, floor_kafka)
    with_ratios(push, floor_kafka)
    with_ratios(http, floor_redis)
    runs = sorted(ingest, key=lambda r: r["workers"])
    return {
        "version": VERSION,
        "started": started,
        "elapsed_s": round(elapsed_s, 1),
        "machine": machine,
        "scenarios": {
            "ingest": {"events_per_s": runs[0]["events_per_s"] if runs else None, "runs": runs},
            "request_response": request_response,
            "push": push,
            "http": http,
            "floor": floor_summary(floor_kafka, floor_redis),
            "memory": memory,
        },
    }


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.{digits}f}"
    return f"{int(value):,}"


def _x(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}x"


def table(report: dict[str, Any]) -> str:
    """The report as the terminal shows it."""
    m, sc = report["machine"], report["scenarios"]
    plan = m.get("bench", {})
    lines = [
        f"stream-reco bench ({'quick' if plan.get('quick') else 'full'}, "
        f"{report['elapsed_s']:.0f} s): {m['cores']} cores {m['cpu_model']}, "
        f"{m['ram_gb']} GB, Kafka {m['kafka']}, Redis {m['redis']}, Python {m['python']}",
        "",
        "ingest: events produced -> applied in Redis (steady 10-90 %)",
        f"  {'workers':>7} {'events':>8} {'events/s':>10} {'first-last/s':>13} {'producer/s':>11}",
    ]
    for r in sc["ingest"]["runs"]:
        lines.append(
            f"  {r['workers']:>7} {_num(r['events']):>8} {_num(r['events_per_s']):>10} "
            f"{_num(r['first_to_last_per_s']):>13} {_num(r['producer_per_s']):>11}"
            + ("  (producer-bound)" if r.get("producer_bound") else "")
        )
    head = (
        f"  {'scenario':<18}{'rate/s':>7}{'ingest/s':>9}{'p50':>8}{'p95':>8}{'p99':>8}"
        f"{'max':>9}{'sent':>7}{'answered':>9}{'errors':>7}{'p50/floor':>10}{'p99/floor':>10}"
        f"{'behind':>8}"
    )
    lines += ["", "latency in ms, from the scheduled send to the answer read (open loop)", head]
    rows = [("request->response", e) for e in sc["request_response"]]
    rows += [("add_to_cart->push", e) for e in sc["push"]]
    rows += [("http GET", e) for e in sc["http"]]
    rows += [("floor kafka echo", e) for e in sc["floor"]["kafka"]]
    rows += [("floor redis PING", e) for e in sc["floor"]["redis"]]
    for name, e in rows:
        lines.append(
            f"  {name:<18}{_num(e['rate'], 0):>7}{_num(e['ingest_rate'], 0):>9}"
            f"{_num(e['p50_ms']):>8}{_num(e['p95_ms']):>8}{_num(e['p99_ms']):>8}"
            f"{_num(e['max_ms']):>9}{e['sent']:>7}{e['answered']:>9}{e['errors']:>7}"
            f"{_x(e.get('x_floor_p50')):>10}{_x(e.get('x_floor_p99')):>10}"
            f"{_num(e.get('behind_p99_ms')):>8}"
        )
    mem = sc["memory"]
    rss = "; ".join(
        f"worker {w['worker']} RSS {_num(w['start_mb'])} -> {_num(w['end_mb'])} MB"
        for w in mem.get("workers", [])
    )
    lines += [
        "",
        f"memory: Redis {_num(mem.get('bytes_per_session'))} B/session "
        f"({_num(mem.get('sessions'))} sessions), {_num(mem.get('bytes_per_item'))} B/item "
        f"({_num(mem.get('items'))} items); {rss}",
        "behind: the load generator's own p99 lag behind its schedule (ms); p50/floor and "
        "p99/floor: multiples of the floor at the closest rate",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """PNGs of latency percentiles against request rate, one line set per ingest rate."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    sc = report["scenarios"]
    written = []
    for name, floor in (("request_response", sc["floor"]["kafka"]), ("http", sc["floor"]["redis"])):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        # One colour per ingest rate, one line style per percentile.
        for n, bg in enumerate(sorted({e["ingest_rate"] for e in sc[name]})):
            entries = sorted((e for e in sc[name] if e["ingest_rate"] == bg), key=_rate)
            for q, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
                ax.plot(
                    [e["rate"] for e in entries],
                    [e[q] for e in entries],
                    style,
                    color=f"C{n}",
                    label=f"{q[:3]} @ {bg:,.0f} events/s",
                )
        floor = sorted(floor, key=_rate)
        for q in ("p50_ms", "p99_ms"):
            ax.plot([e["rate"] for e in floor], [e[q] for e in floor], "k--", alpha=0.4, lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("requests per second")
        ax.set_ylabel("latency (ms, log)")
        ax.set_title(f"{name}: latency against request rate (dashed grey: floor p50/p99)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _rate(entry: dict[str, Any]) -> float:
    return float(entry["rate"])
