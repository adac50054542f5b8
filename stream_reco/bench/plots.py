"""The bench report's PNGs: latency percentiles against request rate, per topology."""

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
