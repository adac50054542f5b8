"""A worker's hot-path Prometheus metrics: O(1) counters, their call sites, counting wrappers."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from prometheus_client import Counter, Histogram, disable_created_metrics

from stream_reco import logs
from stream_reco.dashboard import recent
from stream_reco.errors import ERRORS

# Re-exported: callers reach all of a worker's metrics, scrape-time side included, as
# `metrics.<name>`.
from stream_reco.metrics_scrape import EXPERIMENT_FIELDS as EXPERIMENT_FIELDS
from stream_reco.metrics_scrape import EXPERIMENTS_EVERY_S as EXPERIMENTS_EVERY_S
from stream_reco.metrics_scrape import EXPERIMENTS_WAIT_S as EXPERIMENTS_WAIT_S
from stream_reco.metrics_scrape import SUFFIXES as SUFFIXES
from stream_reco.metrics_scrape import Lagging as Lagging
from stream_reco.metrics_scrape import Observer as Observer
from stream_reco.metrics_scrape import Summary as Summary
from stream_reco.metrics_scrape import experiments_source as experiments_source
from stream_reco.metrics_scrape import log as log
from stream_reco.metrics_scrape import names as names
from stream_reco.state import TYPE_RANK

if TYPE_CHECKING:
    from stream_reco.config import Settings
    from stream_reco.storage.protocol import Store

disable_created_metrics()  # `_created` series per label set: noise nobody here queries
CONTENT_TYPE = "text/plain; version=0.0.4"  # Prometheus' text format (generate_latest)
# From a cached answer (a millisecond) to a Redis outage waited out (seconds).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
MAX_REASONS = 50  # distinct dead-letter reason kinds kept as labels; beyond, one "other"
EVENT_TYPES = frozenset(TYPE_RANK)

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
    """Hook for storage/retry.py `Retrying._retry`: a transient failure that will be retried."""
    REDIS_RETRIES.labels(call).inc()


def redis_gave_up(call: str) -> None:
    """Hook for storage/retry.py `Retrying._retry`: retries exhausted, a StoreError raised."""
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
