"""The bench's PNGs: latency against request rate per topology, and a soak's figures over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream_reco.bench.report import order


def plot(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """PNGs of latency percentiles against request rate, one line set per topology and
    ingest rate."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    sc = report["scenarios"]
    written = []
    for name, floor in (("request_response", sc["floor"]["kafka"]), ("http", sc["floor"]["redis"])):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        # One colour per topology and ingest rate, one line style per percentile.
        sets = sorted({(order(e), e.get("topology", "all"), e["ingest_rate"]) for e in sc[name]})
        for n, (_, topology, bg) in enumerate(sets):
            entries = [e for e in sc[name] if e.get("topology", "all") == topology]
            entries = sorted((e for e in entries if e["ingest_rate"] == bg), key=rate_of)
            for q, style in (("p50_ms", "o-"), ("p95_ms", "s--"), ("p99_ms", "^:")):
                ax.plot(
                    [e["rate"] for e in entries],
                    [e[q] for e in entries],
                    style,
                    color=f"C{n}",
                    label=f"{q[:3]} {topology} @ {bg:,.0f} events/s",
                )
        floor = sorted(floor, key=rate_of)
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


def rate_of(entry: dict[str, Any]) -> float:
    return float(entry["rate"])


def soak_plot(result: dict[str, Any], out_dir: Path) -> Path:
    """soak.png: latency, throughput and memory against time, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stream_reco.bench.soak import series

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = result["windows"]
    t = [r["t_s"] / 60 for r in rows]
    s = series(rows)
    fig, (lat, rate, mem) = plt.subplots(3, 1, figsize=(7, 9), sharex=True)
    for name, style in (
        ("request_p50_ms", "o-"),
        ("request_p99_ms", "^-"),
        ("push_p50_ms", "o--"),
        ("push_p99_ms", "^--"),
    ):
        lat.plot(t, s[name], style, label=name)
    lat.set_ylabel("latency (ms)")
    lat.legend(fontsize=7)
    rate.plot(t, s["applied_per_s"], "o-", label="events applied/s")
    rate.plot(t, [r["backlog_events"] for r in rows], "s--", label="backlog (events)")
    rate.legend(fontsize=7)
    mem.plot(t, s["worker_rss_mb"], "o-", label="worker RSS (MB, all workers)")
    mem.plot(t, [r["redis_used_mb"] for r in rows], "s-", label="Redis used memory (MB)")
    mem.set_xlabel("minutes")
    mem.legend(fontsize=7)
    for ax in (lat, rate, mem):
        ax.grid(alpha=0.3)
    plan = result["plan"]
    fig.suptitle(
        f"soak: {plan['events_per_s']:g} events/s + {plan['requests_per_s']:g} requests/s, "
        f"{plan['topology']}"
    )
    fig.tight_layout()
    path = out_dir / "soak.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
