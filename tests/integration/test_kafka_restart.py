"""A Kafka broker restarted mid-replay: the worker waits it out and applies every event once."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_reco import kafka_io, stack
from stream_reco.config import Settings
from stream_reco.stack_servers import Stack
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import applied_count, uid
from tests.integration.replays import (
    EVENTS,
    PACE_PER_S,
    LagWatch,
    Progress,
    other_store,
    own_stack,
    produce,
    replay_cleanly,
    same_as_clean,
    start_ms,
    until_applied,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
DOWN_S = 5.0  # how long the broker stays down


@pytest.fixture
def own(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    with own_stack(settings, tmp_path / "stack") as made:
        yield made


def _restart_kafka(own: Settings) -> None:
    s = Stack(own)
    pid = int(s.pid_file(s.kafka()).read_text())
    os.kill(pid, signal.SIGTERM)  # a clean broker shutdown, as in a rolling restart
    deadline = time.monotonic() + 60
    while stack.status(own)["kafka"]["pid"] is not None:
        assert time.monotonic() < deadline, "the broker did not stop"
        time.sleep(0.2)
    time.sleep(DOWN_S)
    stack.up(own, say=lambda _: None)


def test_a_broker_restart_mid_replay_loses_and_doubles_nothing(
    settings: Settings, own: Settings, tmp_path: Path
) -> None:
    base = dataclasses.replace(
        own.isolated(uid("kafkaback")),
        require_catalog=False,
        web_port=settings.web_port + 46,
    )
    through = other_store(base, "restarted")
    clean = other_store(base, "a")
    log = tmp_path / "worker.log"
    at: dict[str, float] = {}
    backlog, go, sent = EVENTS // 5, threading.Event(), Progress(EVENTS // 5)
    kafka_io.ensure_topics(base)
    start = start_ms(EVENTS)
    produce(base, backlog, start)
    hold = (EVENTS * 7 // 10, go)
    pacer = threading.Thread(
        target=produce, args=(base, EVENTS, start, backlog, PACE_PER_S, hold, sent)
    )
    proc = start_worker(through, log)
    try:
        pacer.start()
        try:
            wait_worker_ready(proc, log)
            until_applied(through, backlog + EVENTS // 10, 0.01)
            at["stop"] = applied_count(through)
            t0 = time.monotonic()
            with LagWatch(through, sent) as lag:
                _restart_kafka(own)
                at["back"] = applied_count(through)
                back, sent_by_then = time.monotonic(), sent.sent
                at["down_s"] = round(back - t0, 1)
                go.set()
                until_applied(through, int(at["back"]) + 1, 0.05)
                at["applying_again_s"] = round(time.monotonic() - back, 1)
                # And past what was sent until the broker's return: the lag has drained.
                until_applied(through, sent_by_then, 0.05)
                at["input_caught_up_s"] = round(time.monotonic() - back, 1)
            at["max_lag_events"] = lag.max_lag
        finally:
            go.set()
            pacer.join()
        until_applied(through, EVENTS)
        time.sleep(2)  # anything applied twice would show as more
        assert proc.poll() is None, "the worker died"
    finally:
        stop_worker(proc)  # also when anything above failed: no worker outlives the test
    assert log.read_text(errors="replace").count("Worker ready") == 1  # never restarted
    assert applied_count(through) == EVENTS
    clean_s = replay_cleanly(clean, tmp_path / "clean.log")
    figures = {"applied_at": at, "clean_replay_s": round(clean_s, 1)}
    same_as_clean(clean, through, "kafka_back", figures)
