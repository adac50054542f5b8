"""One evaluation run: every method on the same data and protocol, reported side by side."""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stream_reco.config import Settings
from stream_reco.evaluation.baselines import BASELINES
from stream_reco.evaluation.data import DAY_MS, SessionLog, end_ms, read_sessions
from stream_reco.evaluation.metrics import Metrics
from stream_reco.evaluation.rankers import summary_line
from stream_reco.evaluation.replay import evaluate_engine

METHODS = ("engine", *BASELINES)


@dataclass(frozen=True)
class Plan:
    train: Path
    test: Path
    k: int = 20
    modes: tuple[str, ...] = ("frozen",)
    methods: tuple[str, ...] = METHODS
    limit: int | None = None
    via_kafka: bool = False
    learn_ranker: bool = False


def machine() -> dict[str, Any]:
    """What the numbers ran on: they mean little without it."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def positions(logs: Sequence[SessionLog]) -> int:
    return sum(max(len(s) - 1, 0) for s in logs)


def run(settings: Settings, plan: Plan) -> dict[str, Any]:
    """Evaluate every requested method; returns the JSON-ready report."""
    started = time.perf_counter()
    train_logs = read_sessions(plan.train)
    # Without timestamps the test file continues the train file's synthetic clock.
    test_logs = read_sessions(plan.test, start_ms=end_ms(train_logs) + DAY_MS)
    test_logs = [s for s in test_logs if len(s) >= 2][: plan.limit]
    # Hundreds of thousands of logged events live for the whole run: keep them out of the
    # cyclic GC, whose full passes over them would show up as engine latency.
    gc.collect()
    gc.freeze()
    popularity = Counter(item for s in train_logs for item in s.items)
    report: dict[str, Any] = {
        "train": str(plan.train),
        "test": str(plan.test),
        "k": plan.k,
        "train_sessions": len(train_logs),
        "train_events": sum(map(len, train_logs)),
        "test_sessions": len(test_logs),
        "test_positions": positions(test_logs),
        "machine": machine(),
        "methods": {},
    }
    for method in plan.methods:
        for mode in plan.modes if method == "engine" else ("frozen",):
            name = f"engine[{mode}]" if method == "engine" else method
            metrics = Metrics(plan.k, popularity)
            t0 = time.perf_counter()
            if method == "engine":
                extra = _engine(settings, train_logs, test_logs, metrics, plan, mode)
            else:
                extra = _baseline(method, train_logs, test_logs, metrics, plan.k)
            report["methods"][name] = {
                **metrics.summary(plan.k),
                **extra,
                "seconds": round(time.perf_counter() - t0, 1),
                "curves": metrics.curves(),
            }
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _bar(total: int, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, smoothing=0.1, leave=False)


def _engine(
    settings: Settings,
    train_logs: Sequence[SessionLog],
    test_logs: Sequence[SessionLog],
    metrics: Metrics,
    plan: Plan,
    mode: str,
) -> dict[str, Any]:
    route = "kafka" if plan.via_kafka else "direct"
    with (
        _bar(sum(map(len, train_logs)), f"engine[{mode}] train ({route})", "ev") as tb,
        _bar(positions(test_logs), f"engine[{mode}] test", "pos") as sb,
    ):
        return asyncio.run(
            evaluate_engine(
                settings,
                train_logs,
                test_logs,
                metrics,
                plan.k,
                mode == "online",
                tb.update,
                sb.update,
                via_kafka=plan.via_kafka,
                learn_ranker=plan.learn_ranker,
            )
        )


def _baseline(
    method: str,
    train_logs: Sequence[SessionLog],
    test_logs: Sequence[SessionLog],
    metrics: Metrics,
    k: int,
) -> dict[str, float]:
    model = BASELINES[method]()
    t0 = time.perf_counter()
    model.fit([s.items for s in train_logs])
    fit_s = time.perf_counter() - t0
    with _bar(positions(test_logs), method, "pos") as bar:
        for log in test_logs:
            for i in range(1, len(log)):
                t = time.perf_counter()
                recs = model.recommend(log.items[:i], k)
                metrics.add(log.items[i], recs, (time.perf_counter() - t) * 1000)
                bar.update(1)
    return {"fit_seconds": round(fit_s, 1)}


def table(report: dict[str, Any]) -> str:
    """The terminal table: method x metric, percentages at the report's k; then a line per
    engine run on its rankers and model."""
    k = report["k"]
    head = (
        f"{'method':<16}{'HR@' + str(k):>8}{'MRR@' + str(k):>9}{'NDCG@' + str(k):>9}"
        f"{'cov@' + str(k):>8}{'pop':>7}{'p50 ms':>9}{'p99 ms':>9}{'secs':>8}"
    )
    lines = [head, "-" * len(head)]
    for name, m in report["methods"].items():
        lines.append(
            f"{name:<16}{m['hr']:>8.2f}{m['mrr']:>9.2f}{m['ndcg']:>9.2f}{m['coverage']:>8.2f}"
            f"{m['popularity']:>7.3f}{m['latency_p50_ms']:>9.3f}{m['latency_p99_ms']:>9.3f}"
            f"{m['seconds']:>8.1f}"
        )
    # Engine runs: which ranker answered, and the learned model they ended with.
    lines += [line for name, m in report["methods"].items() if (line := summary_line(name, m))]
    lines.append(
        f"{report['test_positions']} positions from {report['test_sessions']} test sessions; "
        f"train {report['train_events']} events; {report['machine']['cpus']} CPUs, "
        f"{report['machine']['platform']}; {report['seconds']} s"
    )
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    """HR@k and MRR@k for k = 1..K, one line per method."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ks = range(1, report["k"] + 1)
    for name, m in report["methods"].items():
        for ax, metric in zip(axes, ("hr", "mrr"), strict=True):
            ax.plot(ks, m["curves"][metric], marker=".", label=name)
    for ax, title in zip(axes, ("HR@k (%)", "MRR@k (%)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("k")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{Path(report['test']).parent.name}: {report['test_positions']} positions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
