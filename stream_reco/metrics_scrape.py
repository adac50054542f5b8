"""A worker's metrics registry (Observer) and the collectors it reads at scrape time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stream_reco.errors import ERRORS

if TYPE_CHECKING:
    from stream_reco.config import Settings
    from stream_reco.runtime import Runtime
    from stream_reco.storage.protocol import Store

# The metrics' one logger, whichever of their modules logs.
log = logging.getLogger("stream_reco.metrics")
EXPERIMENT_FIELDS = ("sessions", "impressions", "clicks", "carts", "purchases", "revenue")
EXPERIMENTS_WAIT_S = 0.5  # a scrape waits this long for the experiments summary, then goes on
EXPERIMENTS_EVERY_S = 1.0  # scrapes and open dashboards share one read of the summary a second


class Lagging(Protocol):
    """A consumer whose lag is measured (consumer.TopicLoop)."""

    name: str
    topic: str
    consumed: int
    lag: dict[int, int]


# The experiments' per-variant rows (experiments.report.summary): an async function of the
# store; each row names its experiment and variant and carries the EXPERIMENT_FIELDS counts.
Summary = Callable[["Store"], Awaitable[Sequence[Mapping[str, Any]]]]


def experiments_source(settings: Settings, live: Runtime) -> Summary:
    """The running experiments' summary, under the rules this worker holds now."""
    # Imported here: the experiments package reaches the store and ranking, which the hot
    # path's call sites (metrics.py, imported by storage, importing this) must not pull in.
    from stream_reco.experiments.report import summary

    async def read(store: Store) -> Sequence[Mapping[str, Any]]:
        return await summary(store, settings, live.rules)

    return read


class Observer:
    """One worker's metrics registry: the hot-path counters plus collectors reading the
    failure counts, consumer lag, the model in use and the experiments' counters."""

    def __init__(
        self,
        settings: Settings,
        live: Runtime,
        loops: Sequence[Lagging],
        store: Callable[[], Store],
        summary: Summary | None | bool = True,
    ) -> None:
        # Imported here: metrics.py re-exports this module, so importing it at the top would
        # make the two modules import each other.
        from stream_reco.metrics import HOT_PATH

        self.settings, self.live, self.loops, self.store = settings, live, loops, store
        # True: the experiments' own summary; None: none (a test of the metrics alone).
        self.summary = experiments_source(settings, live) if summary is True else summary or None
        self.experiments: list[Mapping[str, Any]] = []  # the latest summary read
        self._read_at = -EXPERIMENTS_EVERY_S
        self.registry = CollectorRegistry(auto_describe=True)
        for metric in HOT_PATH:
            self.registry.register(metric)
        self.registry.register(_Collected(self))

    async def read_experiments(self) -> list[Mapping[str, Any]]:
        """The experiments summary, read now (bounded); the last one read if it fails."""
        if self.summary is None or time.monotonic() - self._read_at < EXPERIMENTS_EVERY_S:
            return self.experiments
        self._read_at = time.monotonic()
        try:
            async with asyncio.timeout(EXPERIMENTS_WAIT_S):
                self.experiments = list(await self.summary(self.store()))
        except Exception as exc:  # a scrape without experiments beats no scrape
            ERRORS["experiments_summary"] += 1
            log.debug("experiments summary not read: %s", exc)
        return self.experiments

    async def scrape(self) -> bytes:
        await self.read_experiments()
        return generate_latest(self.registry)

    def ranker(self) -> str:
        return "model" if self.live.model_ready(self.settings) else "blend"


class _Collected:
    """Metrics read from state the worker keeps anyway, at scrape time."""

    def __init__(self, obs: Observer) -> None:
        self.obs = obs

    def collect(self) -> Iterator[Metric]:
        yield _failures()
        yield from _consumers(self.obs.loops)
        yield from _model(self.obs)
        yield from _experiments(self.obs.experiments)


def _failures() -> Metric:
    m = CounterMetricFamily(
        "stream_reco_failures",
        "Failures handled without stopping a stream, and answers not given on purpose, by kind",
        labels=["kind"],
    )
    for kind, n in sorted(list(ERRORS.items())):  # copied at once: other threads count too
        m.add_metric([kind], n)
    return m


def _consumers(loops: Sequence[Lagging]) -> Iterator[Metric]:
    lag = GaugeMetricFamily(
        "stream_reco_consumer_lag",
        "Messages behind the partition's end: high watermark minus the offset stored after "
        "handling (measured on the fetching thread, at most a second old)",
        labels=["loop", "topic", "partition"],
    )
    consumed = CounterMetricFamily(
        "stream_reco_consumed", "Messages read by each consumer loop", labels=["loop", "topic"]
    )
    for loop in loops:
        consumed.add_metric([loop.name, loop.topic], loop.consumed)
        for partition, behind in sorted(loop.lag.items()):
            lag.add_metric([loop.name, loop.topic, str(partition)], behind)
    yield lag
    yield consumed


def _model(obs: Observer) -> Iterator[Metric]:
    model, ranker = obs.live.model, obs.ranker()
    in_use = GaugeMetricFamily(
        "stream_reco_ranker",
        "The ranker ordering answers now (1) and the other (0)",
        labels=["ranker"],
    )
    for name in ("blend", "model"):
        in_use.add_metric([name], 1 if name == ranker else 0)
    yield in_use
    yield GaugeMetricFamily(
        "stream_reco_model_version", "Version of the learned model loaded", value=model.version
    )
    yield GaugeMetricFamily(
        "stream_reco_model_examples", "Examples the loaded model has seen", value=model.examples
    )
    yield GaugeMetricFamily(
        "stream_reco_model_edge",
        "How much better the model orders recent examples than the blend",
        value=model.edge,
    )


def _experiments(rows: Sequence[Mapping[str, Any]]) -> Iterator[Metric]:
    families = {
        f: GaugeMetricFamily(
            f"stream_reco_experiment_{f}",
            f"Experiment {f} per variant, as attributed in the store (the same on every worker)",
            labels=["experiment", "variant"],
        )
        for f in EXPERIMENT_FIELDS
    }
    for row in rows:
        labels = [str(row.get("experiment")), str(row.get("variant"))]
        for f, family in families.items():
            if isinstance(row.get(f), int | float):
                family.add_metric(labels, float(row[f]))
    yield from families.values()


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def names(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry can expose, samples or not yet (a counter's `_total`, a
    histogram's `_bucket`, `_count` and `_sum`): what dashboards and alerts may query."""
    return {f.name + end for f in registry.collect() for end in SUFFIXES.get(f.type, ("",))}
