"""Prometheus metrics of one worker: the hot path's O(1) counts, and collectors that read at
scrape time the state the engine keeps anyway (failure counts, consumer lag, the model)."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from stream_reco import logs
from stream_reco.dashboard import recent
from stream_reco.errors import ERRORS
from stream_reco.state import TYPE_RANK

if TYPE_CHECKING:
    from stream_reco.config import Settings
    from stream_reco.runtime import Runtime
    from stream_reco.storage.protocol import Store

log = logging.getLogger(__name__)
disable_created_metrics()  # `_created` series per label set: noise nobody here queries
CONTENT_TYPE = "text/plain; version=0.0.4"  # Prometheus' text format (generate_latest)
# From a cached answer (a millisecond) to a Redis outage waited out (seconds).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
MAX_REASONS = 50  # distinct dead-letter reason kinds kept as labels; beyond, one "other"
EVENT_TYPES = frozenset(TYPE_RANK)
EXPERIMENT_FIELDS = ("sessions", "impressions", "clicks", "carts", "purchases", "revenue")
EXPERIMENTS_WAIT_S = 0.5  # a scrape waits this long for the experiments summary, then goes on
EXPERIMENTS_EVERY_S = 1.0  # scrapes and open dashboards share one read of the summary a second

# Counted where things happen, each an O(1) increment; created unregistered, so every app's
# own registry (Observer) can hold them without clashing with another's in one process.
EVENTS = Counter(
    "stream_reco_events",
    "Events read from the events topic, by type and outcome (applied, duplicate, rejected)",
    ["type", "outcome"],
    registry=None,
)
DEAD_LETTERS = Counter(
    "stream_reco_dead_letters",
    "Dead letters written, by source topic and reason kind (values masked)",
    ["topic", "reason"],
    registry=None,
)
REQUEST_LATENCY = Histogram(
    "stream_reco_request_latency_seconds",
    "Time to build an answer to a request (its latency_ms), by how it came (kafka, http)",
    ["via"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)
PUSH_LATENCY = Histogram(
    "stream_reco_push_latency_seconds",
    "Time to build a push after an add_to_cart (its latency_ms)",
    buckets=LATENCY_BUCKETS,
    registry=None,
)
ANSWERS = Counter(
    "stream_reco_answers",
    "Answers and pushes sent, by trigger and the ranker that ordered them (model, blend)",
    ["trigger", "ranker"],
    registry=None,
)
DEGRADED = Counter(
    "stream_reco_degraded_answers",
    "Answers that degraded to meet the time budget or survive an outage, by level",
    ["level"],
    registry=None,
)
REDIS_RETRIES = Counter(
    "stream_reco_redis_retries",
    "Redis calls retried after a transient failure, by store call",
    ["call"],
    registry=None,
)
REDIS_ERRORS = Counter(
    "stream_reco_redis_errors",
    "Redis calls given up after their bounded retries (a StoreError), by store call",
    ["call"],
    registry=None,
)
BOT_EVENTS = Counter(
    "stream_reco_bot_events",
    "Events applied to sessions flagged as bots (their session only, nothing shared), by "
    "the rule that flagged the session (rate, items, carts, repeats, burst)",
    ["reason"],
    registry=None,
)
BOT_SESSIONS = Counter(
    "stream_reco_bot_sessions",
    "Sessions flagged as bots by the abuse guard, each once, by rule (rate, items, carts, "
    "repeats, burst)",
    ["reason"],
    registry=None,
)
HOT_PATH = (EVENTS, DEAD_LETTERS, REQUEST_LATENCY, PUSH_LATENCY, ANSWERS, DEGRADED)
HOT_PATH += (REDIS_RETRIES, REDIS_ERRORS, BOT_EVENTS, BOT_SESSIONS)
_REASONS: set[str] = set()
COUNTING = logs.Trouble("metrics")  # a counting bug: one line per interval, not one per output
_EVENT_CHILDREN: dict[tuple[str, str], Any] = {}


class Output(Protocol):
    topic: str
    key: bytes | None
    value: bytes


class Outputs(Protocol):
    async def send(self, outs: Iterable[Output]) -> None: ...

    def poll(self) -> None: ...

    def flush(self, timeout: float = 10.0) -> None: ...


class Lagging(Protocol):
    """A consumer whose lag is measured (consumer.TopicLoop)."""

    name: str
    topic: str
    consumed: int
    lag: dict[int, int]


# --- call sites: each O(1) ------------------------------------------------------------------


def events_applied(events: Sequence[Any], applied: Sequence[bool]) -> None:
    """Each valid event's outcome: applied, or a duplicate (a redelivery the store knew)."""
    for e, new in zip(events, applied, strict=True):
        key = (e.type, "applied" if new else "duplicate")
        child = _EVENT_CHILDREN.get(key)
        if child is None:  # once per (type, outcome): labels() takes a lock each call
            child = _EVENT_CHILDREN[key] = EVENTS.labels(*key)
        child.inc()


def answered(doc: Mapping[str, Any], via: str) -> None:
    """An answer or push as sent: its latency, ranker and degradation, and the explorer's copy."""
    seconds = float(doc.get("latency_ms") or 0.0) / 1000
    trigger = str(doc.get("trigger"))
    if trigger == "request":
        REQUEST_LATENCY.labels(via).observe(seconds)
    else:
        PUSH_LATENCY.observe(seconds)
    ANSWERS.labels(trigger, "model" if doc.get("model_version") else "blend").inc()
    if level := doc.get("degraded"):
        DEGRADED.labels(str(level)).inc()
    recent.seen(trigger, seconds, doc)


def dead_lettered(raw: bytes, events_topic: str) -> None:
    """A dead letter as written (events.dead_letter): by reason kind; a rejected event also
    counts among the events, under its type when it names a known one."""
    try:
        doc = orjson.loads(raw)
        topic, reason = str(doc.get("source_topic")), str(doc.get("reason"))
    except (orjson.JSONDecodeError, AttributeError):
        doc, topic, reason = {}, "unknown", "unreadable dead letter"
    kind = logs.reason_kind(reason)
    if kind not in _REASONS:
        if len(_REASONS) >= MAX_REASONS:
            kind = "other"
        else:
            _REASONS.add(kind)
    DEAD_LETTERS.labels(topic, kind).inc()
    if topic == events_topic:
        EVENTS.labels(_claimed_type(doc), "rejected").inc()


def _claimed_type(doc: Mapping[str, Any]) -> str:
    """The type a rejected event said it was, if it is one of ours (else "unknown")."""
    try:
        claimed = orjson.loads(base64.b64decode(doc.get("value_b64") or "")).get("type")
    except (ValueError, AttributeError, TypeError):
        return "unknown"
    return claimed if isinstance(claimed, str) and claimed in EVENT_TYPES else "unknown"


def bots_seen(applied: Any) -> None:
    """Hook for storage/redis_store.py `apply_events` (an apply.Applied): the events applied to
    flagged sessions, and the sessions the batch flagged, by reason. Nothing when none."""
    if not any(applied.flags):
        return
    for new, reason in zip(applied, applied.flags, strict=True):
        if new and reason:
            BOT_EVENTS.labels(reason).inc()
    for reason in applied.newly:
        BOT_SESSIONS.labels(reason).inc()
        ERRORS["bot_session_flagged"] += 1


def redis_retried(call: str) -> None:
    """Hook for storage/redis_store.py `_retry`: a transient failure that will be retried."""
    REDIS_RETRIES.labels(call).inc()


def redis_gave_up(call: str) -> None:
    """Hook for storage/redis_store.py `_retry`: retries exhausted, a StoreError raised."""
    REDIS_ERRORS.labels(call).inc()


class WatchedSink:
    """The worker's sink, watching what goes out: every answer and push on the responses topic
    (answered) and every dead letter (dead_lettered), whichever agent or loop sent it."""

    def __init__(self, sink: Outputs, settings: Settings) -> None:
        self._sink = sink
        self._responses, self._dead = settings.topic_responses, settings.topic_deadletter
        self._events = settings.topic_events

    async def send(self, outs: Iterable[Output]) -> None:
        outs = list(outs)
        await self._sink.send(outs)  # first: counting never delays an answer's hand-over
        for o in outs:
            try:
                if o.topic == self._responses:
                    answered(orjson.loads(o.value), "kafka")
                elif o.topic == self._dead:
                    dead_lettered(o.value, self._events)
            except Exception as exc:  # counting must never cost an output, nor stop the stream
                ERRORS["metrics"] += 1
                COUNTING.failed(f"counting an output for {o.topic}", exc, trace=True)

    def poll(self) -> None:
        self._sink.poll()

    def flush(self, timeout: float = 10.0) -> None:
        self._sink.flush(timeout)


class CountedStore:
    """A store whose `apply_events` counts each event's outcome; everything else is the store's
    own (attribute access passes through)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def apply_events(self, events: Sequence[Any], **how: Any) -> list[bool]:
        applied = await self._store.apply_events(events, **how)
        try:
            events_applied(events, applied)
        except Exception as exc:  # applied is applied: counting must not turn it into a retry
            ERRORS["metrics"] += 1
            COUNTING.failed("counting applied events", exc, trace=True)
        return applied


# --- collectors read at scrape time ----------------------------------------------------------

# The experiments' per-variant rows (experiments.report.summary): an async function of the
# store; each row names its experiment and variant and carries the EXPERIMENT_FIELDS counts.
Summary = Callable[["Store"], Awaitable[Sequence[Mapping[str, Any]]]]


def experiments_source(settings: Settings, live: Runtime) -> Summary:
    """The running experiments' summary, under the rules this worker holds now."""
    # Imported here: the experiments package reaches the store and ranking, which the hot
    # path's call sites above (imported by storage) must not pull in.
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
