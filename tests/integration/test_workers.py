"""Several workers share the partitions: each gets a share, and survivors take over a leaver's."""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from pathlib import Path

from stream_reco.config import Settings
from stream_reco.kafka_io import ensure_topics
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import Kafka, uid


def _assigned(log: Path, topic: str) -> list[int]:
    """The events partitions of the worker's latest assignment ([] if none)."""
    found = re.findall(
        rf"events partitions assigned: \[([0-9, ]*)\] of {re.escape(topic)}\b",
        log.read_text(errors="replace"),
    )
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else []


def _carts(kafka: Kafka, n: int) -> None:
    """n sessions add to cart; every one of them must get its push."""
    s = kafka.settings
    sessions = [uid("w") for _ in range(n)]
    for n_, sid in enumerate(sessions):
        kafka.send(
            s.topic_events,
            sid,
            {
                "event_id": uid("e"),
                "type": "add_to_cart",
                "session_id": sid,
                "item_id": f"i{n_ % 7}",
                "ts": 1_750_000_000_000 + n_,
            },
        )
    for sid in sessions:
        kafka.wait_for(lambda t, d, sid=sid: d.get("session_id") == sid, timeout=30)


def test_two_workers_share_partitions_and_one_survives_the_other(settings: Settings) -> None:
    run = uuid.uuid4().hex[:6]
    own = dataclasses.replace(settings.isolated(f"pair{run}"), require_catalog=False)
    ensure_topics(own)
    logs = [own.home.resolve() / "logs" / f"pair-{run}-{n}.log" for n in (1, 2)]
    procs = []
    kafka = Kafka(own)
    try:
        for n, log in enumerate(logs):
            procs.append(start_worker(dataclasses.replace(own, web_port=own.web_port + 1 + n), log))
        for proc, log in zip(procs, logs, strict=True):
            wait_worker_ready(proc, log)
        _carts(kafka, 30)
        deadline = time.monotonic() + 30  # the second member's join may still be settling
        while not all(shares := [_assigned(log, own.topic_events) for log in logs]):
            assert time.monotonic() < deadline, f"each should own a share: {shares}"
            time.sleep(0.2)
        assert not set(shares[0]) & set(shares[1]), f"shares overlap: {shares}"
        _carts(kafka, 30)  # answered with the work split between the two
        stop_worker(procs[0])
        _carts(kafka, 30)  # all of them answered by the survivor after the rebalance
        assert procs[1].poll() is None
        assert _assigned(logs[1], own.topic_events) == list(range(own.partitions))
    finally:
        kafka.close()
        for proc in procs:
            stop_worker(proc)
