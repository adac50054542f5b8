"""--via-kafka: train events travel the real topics into a real worker, end to end."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence

import orjson
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from stream_reco.config import Settings
from stream_reco.errors import StackError
from stream_reco.kafka_io import QUIET, ensure_topics, producer
from stream_reco.security import kafka_options
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready

Tick = Callable[[int], None]
DRAIN_TIMEOUT_S = 600.0


def run_settings(store_settings: Settings) -> Settings:
    """Topics and consumer group of this replay alone, writing into the evaluation's key space."""
    own = store_settings.isolated(f"kafka{uuid.uuid4().hex[:8]}", keys=False)
    return dataclasses.replace(own, web_port=store_settings.web_port + 50)


def ingest(store_settings: Settings, events: Sequence[dict[str, object]], tick: Tick) -> float:
    """Publish `events` (wire format, time order) to a fresh topic, let a worker apply them,
    and wait until its consumer group has committed everything; returns events per second."""
    s = run_settings(store_settings)
    ensure_topics(s)
    log_path = s.home.resolve() / "logs" / f"{s.app_id}-worker.log"
    worker = start_worker(s, log_path)
    try:
        wait_worker_ready(worker, log_path)
        started = time.perf_counter()
        out = producer(s)
        for ev in events:
            out.produce(s.topic_events, key=str(ev["session_id"]), value=orjson.dumps(ev))
            out.poll(0)
            tick(1)
        out.flush(60)
        _wait_drained(s, worker.poll)
        return len(events) / max(time.perf_counter() - started, 1e-9)
    finally:
        stop_worker(worker)
        AdminClient({**kafka_options(s), **QUIET}).delete_topics(list(s.topics))


def _wait_drained(s: Settings, exited: Callable[[], int | None]) -> None:
    """Until the worker's committed offsets reach the end of every events partition."""
    probe = Consumer(
        {
            **kafka_options(s),
            "group.id": s.events_group,
            "enable.auto.commit": False,
            **QUIET,
        }
    )
    try:
        parts = probe.list_topics(s.topic_events, timeout=10).topics[s.topic_events].partitions
        tps = [TopicPartition(s.topic_events, p) for p in parts]
        ends = {tp.partition: probe.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            done = {tp.partition: tp.offset for tp in probe.committed(tps, timeout=10)}
            if all(done[p] >= end for p, end in ends.items()):
                return
            if exited() is not None:
                raise StackError("the replay worker exited; see its log")
            time.sleep(0.5)
        raise StackError(f"the worker did not drain the events topic in {DRAIN_TIMEOUT_S:.0f} s")
    finally:
        probe.close()
