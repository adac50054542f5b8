"""Faust wiring only: topics, agents and the worker; decisions live in pipeline.py and guard.py."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from contextlib import AbstractContextManager

import faust
import mode

from stream_reco import logs, messages, metrics, runtime, security
from stream_reco.candidates import behaviour
from stream_reco.candidates.index_sync import IndexSync
from stream_reco.config import Settings
from stream_reco.consumer import SESSION_TIMEOUT_S, TopicLoop
from stream_reco.errors import survived
from stream_reco.health import add_health_views
from stream_reco.kafka_io import stream_name
from stream_reco.messages import Message, Out
from stream_reco.storage.apply import resume_at
from stream_reco.storage.protocol import Store
from stream_reco.web import FAUST_BUILTINS_OFF, add_observability, add_views
from stream_reco.wiring import Handler, Wiring

log = logging.getLogger(__name__)
BEHAVIOUR_EVERY_S = 60.0  # behavioural vectors change slowly; one worker (a lease) redoes them
INDEX_EVERY_S = 0.2  # how soon another worker's new catalogue item is similar-searchable here
SNAPSHOT_EVERY_S = 30.0
# Once the worker's long-lived objects exist (Faust, caches, the ANN index), they leave the
# garbage collector's view: a full collection then scans only what requests allocate, instead
# of pausing every answer in flight for a scan of the whole heap.
FREEZE_AFTER_S = 5.0
LEARN_SHARE = 0.1  # of a worker's time the learner may take: answers come first
STOP_GRACE_S = 10.0  # how long a stopping worker lets its batches in flight finish
LOG_EVERY_S = 1.0  # how late a held-back log summary may be written after its interval
_STEPS: dict[str, logs.Trouble] = {}  # each background step's failures, for the log


def _credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's (aiokafka's) form of the deployment's Kafka authentication and encryption."""
    protocol, context = settings.kafka_security_protocol, security.ssl_context(settings)
    if protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context) if context is not None else None


def _broker_url(servers: str) -> list[str]:
    return [f"kafka://{s.strip()}" for s in servers.split(",") if s.strip()]


def create_app(settings: Settings) -> faust.App:
    """The Faust app of one worker: the agents and timers of its role, and the HTTP views."""
    app = _faust_app(settings)
    w = Wiring(app, settings)
    # Before any loop takes the sink: every answer and dead letter is counted on its way out.
    w.sink = metrics.WatchedSink(w.sink, settings)  # type: ignore[assignment]
    if settings.role in ("all", "ingest"):
        _ingestion(app, w)
    if settings.role in ("all", "query"):
        answer = _answerer(w)
        w.loop("requests", settings.topic_requests, settings.requests_group, answer, ordered=False)
    _followers(app, w)
    if settings.role in ("all", "query"):  # an ingest worker's answers would queue behind it
        add_views(app, settings, w.live, w.store)
    add_observability(app, settings, metrics.Observer(settings, w.live, w.loops, w.store), w.store)
    add_health_views(app, settings, w.store, w.loops)  # every role: probes ask every pod
    app.service(_Lifecycle(w))
    return app


def _faust_app(settings: Settings) -> faust.App:
    datadir = settings.home.resolve() / "faust" / settings.faust_app_id
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.faust_app_id,
        broker=_broker_url(settings.kafka_bootstrap_servers),
        broker_credentials=_credentials(settings),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        web_port=settings.web_port,
        # Faust's own scratch space (tables, leader state) lives with the rest of our state,
        # not in whatever folder the worker was started from.
        datadir=str(datadir),
        web_host="127.0.0.1",
        web_bind=settings.web_bind,
        # No Faust tables to show, and its router view would expose the cluster layout.
        **FAUST_BUILTINS_OFF,
        consumer_auto_offset_reset="earliest",
        # Request/response wants small waits; Faust's defaults favour throughput.
        broker_commit_interval=1.0,
        # A crashed worker's partitions move after this long, not Faust's 60 s (consumer.py).
        broker_session_timeout=SESSION_TIMEOUT_S,
        producer_linger=0.001,
        stream_buffer_maxsize=max(settings.batch_max * 2, 1000),
    )


def _ingestion(app: faust.App, w: Wiring) -> None:
    """Events (with their pushes), catalogue and rules agents; the learner and behaviour
    timers, which one worker at a time runs by lease."""
    s = w.settings

    # Resolved once, before anything is consumed: every worker files offsets under one name.
    stream = stream_name(s, s.topic_events)

    async def on_events(st: Store, s: Settings, msgs: list[Message]) -> list[Out]:
        counted = metrics.CountedStore(st)  # counts each event applied or a duplicate
        return await messages.on_event_messages(
            counted,  # type: ignore[arg-type]
            s,
            msgs,
            w.live,
            emit=w.sink.send,
            stream=stream,
        )

    def resume(partitions: list[int]) -> dict[int, int]:
        return resume_at(s, stream, partitions)

    w.loop("events", s.topic_events, s.events_group, on_events, ordered=True, resume=resume)
    w.batch_agent(app.topic(s.topic_catalog), messages.on_catalog_messages, "update_catalog")
    # One partition, compacted: one consumer applies rules updates in order.
    config = app.topic(s.topic_config, partitions=1, compacting=True)
    w.batch_agent(config, messages.on_config_messages, "update_rules")
    # One partition: forget requests are few, each applied once, in order (docs/privacy.md).
    privacy = app.topic(s.topic_privacy, partitions=1)
    w.batch_agent(privacy, messages.on_privacy_messages, "forget")

    @app.timer(interval=s.refresh_s)
    async def learn() -> None:
        with _survived("learn"):  # apart from refresh: neither failure may stop the other
            await w.learner.step(w.store(), budget_s=LEARN_SHARE * s.refresh_s)

    @app.timer(interval=BEHAVIOUR_EVERY_S)
    async def learn_vectors() -> None:
        with _survived("behaviour"):
            st, ttl_ms = w.store(), int(BEHAVIOUR_EVERY_S * 3000)
            if await st.hold_lease("behaviour", w.owner, ttl_ms):
                await behaviour.refresh(st)


def _answerer(w: Wiring) -> Handler:
    """Answers a batch's requests side by side, each sent the moment it is ready: a quick
    answer never waits for the batch's slowest. (A batch redone after a failure may answer a
    request twice; the contract has callers take the first answer per request_id.)"""

    async def answer(st: Store, s: Settings, m: Message) -> None:
        dead = await messages.on_request_message(st, s, m, w.live, emit=w.sink.send)
        if dead is not None:  # answers went out as they were ready; this is a dead letter
            await w.sink.send([dead])

    async def answer_all(st: Store, s: Settings, msgs: list[Message]) -> list[Out]:
        await asyncio.gather(*(answer(st, s, m) for m in msgs))
        return []

    return answer_all


def _followers(app: faust.App, w: Wiring) -> None:
    """Timers every worker runs: reload rules, model and fallback; follow the ANN index."""
    s = w.settings

    @app.timer(interval=LOG_EVERY_S)
    async def write_logs() -> None:
        logs.tick()  # summaries held back are written when their interval ends

    @app.timer(interval=s.refresh_s)
    async def refresh() -> None:
        # A failed refresh keeps the last good rules and model; the next tick tries again.
        with _survived("refresh"):
            await runtime.refresh(w.store(), s, w.live)

    @app.timer(interval=INDEX_EVERY_S)
    async def follow_index() -> None:
        with _survived("index"):
            first = w.live.sync is None
            if w.live.sync is None:
                where = s.home.resolve() / "ann" / f"{s.faust_app_id}-{s.web_port}"
                sync = IndexSync(w.store().vectors, where)
                await asyncio.to_thread(sync.start)
                w.live.sync = sync
                gc.freeze()  # the index's objects are the bulk of what a full collection scans
            before = w.live.sync.index
            await w.live.sync.catch_up()
            if first or w.live.sync.index is not before:  # loaded, or rebuilt from the log
                how = "loaded" if first else "rebuilt from the vector log"
                log.info("item index %s: %d items", how, len(w.live.sync.index))
            if time.monotonic() - w.saved > SNAPSHOT_EVERY_S:
                w.saved = time.monotonic()
                await w.live.sync.save()


class _Lifecycle(mode.Service):
    """Starts and stops with the worker: its topic loops, then its sink."""

    def __init__(self, wiring: Wiring) -> None:
        super().__init__()
        self.wiring = wiring
        self._tasks: list[asyncio.Task[None]] = []

    async def on_start(self) -> None:
        await self.wiring.store().check_format()  # before any event could be mis-applied
        self._tasks = [asyncio.create_task(self._run(loop)) for loop in self.wiring.loops]
        asyncio.get_running_loop().call_later(FREEZE_AFTER_S, gc.freeze)

    async def _run(self, loop: TopicLoop) -> None:
        try:
            await loop.run()
        except Exception as exc:
            # A worker that cannot consume must not look healthy: stop it, loudly.
            log.exception("consuming %s failed", loop.topic)
            await self.crash(exc)

    async def on_stop(self) -> None:
        for loop in self.wiring.loops:
            loop.stop()
        # A batch held by a Redis outage would keep the worker from ever stopping: after a
        # grace period it is cancelled, not stored, and so redone by the next owner.
        _, late = await asyncio.wait(self._tasks, timeout=STOP_GRACE_S) if self._tasks else ((), ())
        for task in late:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.wiring.sink.flush)
        logs.flush()  # what the summaries still hold, before the worker goes quiet


def _survived(step: str) -> AbstractContextManager[None]:
    """A background step that fails is counted and logged (its first failure with a trace,
    then one line per interval, and when it works again); its timer's next tick tries again."""
    trouble = _STEPS.get(step)
    if trouble is None:
        trouble = _STEPS[step] = logs.Trouble(f"background step {step!r}", log=log)
    return survived(step, trouble)


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one Faust worker until Ctrl-C/SIGTERM; several workers share the partitions."""
    from faust.worker import Worker

    app = create_app(settings)
    Worker(app, loglevel=loglevel, redirect_stdouts=False).execute_from_commandline()
