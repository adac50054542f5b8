"""A Redis back from an older snapshot mid-replay: the worker reads again what it lost."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_reco import kafka_io
from stream_reco.config import Settings
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import applied_count, forget_isolated, uid
from tests.integration.replays import (
    EVENTS,
    PACE_PER_S,
    LagWatch,
    Progress,
    ThrowawayRedis,
    other_store,
    produce,
    replay_cleanly,
    same_as_clean,
    start_ms,
    until_applied,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
DOWN_S = 3.0  # how long Redis stays down


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("persistence", ["snapshot", "aof"])
def test_a_redis_killed_mid_replay_comes_back_and_is_caught_up_from_kafka(
    settings: Settings, persistence: str, tmp_path: Path
) -> None:
    """`snapshot`: Redis persisted by snapshots only comes back as of its last one, behind what
    it acknowledged. `aof`: with an append-only file synced every second, a killed process
    usually loses nothing it acknowledged. Either way the worker waits it out and ends exact."""
    aof = ("--appendonly", "yes", "--appendfsync", "everysec")
    throwaway = ThrowawayRedis(tmp_path, *(aof if persistence == "aof" else ()))
    throwaway.start()
    base = dataclasses.replace(
        settings.isolated(uid("redisback")), require_catalog=False, web_port=settings.web_port + 44
    )
    crashed = other_store(base, "crashed", redis_url=throwaway.url)
    clean = other_store(base, "a")
    log = tmp_path / "worker.log"
    at: dict[str, float] = {}
    backlog, go, sent = EVENTS // 5, threading.Event(), Progress(EVENTS // 5)
    proc = None
    try:
        kafka_io.ensure_topics(base)
        start = start_ms(EVENTS)
        produce(base, backlog, start)
        hold = (EVENTS * 7 // 10, go)
        pacer = threading.Thread(
            target=produce, args=(base, EVENTS, start, backlog, PACE_PER_S, hold, sent)
        )
        proc = start_worker(crashed, log)
        pacer.start()
        try:
            wait_worker_ready(proc, log)
            until_applied(crashed, backlog + EVENTS // 10, 0.01)
            if persistence == "snapshot":
                throwaway.snapshot()
            at["snapshot"] = applied_count(crashed)
            until_applied(crashed, at["snapshot"] + EVENTS // 10, 0.01)
            with LagWatch(crashed, sent) as lag:
                # Writes held a moment, so the count read is exactly what Redis had applied
                # when it is killed.
                at["crash"] = throwaway.hold_writes_and_count(crashed.key_prefix)
                throwaway.crash()  # SIGKILL
                time.sleep(DOWN_S)
                throwaway.start()
                at["back"] = applied_count(crashed)
                back, sent_by_then = time.monotonic(), sent.sent
                go.set()
                until_applied(crashed, int(at["crash"]), 0.05)
                at["caught_up_s"] = round(time.monotonic() - back, 1)
                # And past what arrived while Redis was down: the lag has drained.
                until_applied(crashed, sent_by_then, 0.05)
                at["input_caught_up_s"] = round(time.monotonic() - back, 1)
            at["max_lag_events"] = lag.max_lag
        finally:
            go.set()
            pacer.join()
        until_applied(crashed, EVENTS)
        time.sleep(2)  # anything applied twice would show as more
        assert proc.poll() is None, "the worker died"
        stop_worker(proc)
        text = log.read_text(errors="replace")
        assert text.count("Worker ready") == 1
        if persistence == "snapshot":
            assert "reading from the store's offsets" in text  # noticed, not applied on top
            assert at["back"] < at["crash"]  # the snapshot came back, not what followed it
        # With the append-only file, usually nothing acknowledged is lost (the file is in the
        # page cache); a slow disk can delay its writes, and then the offsets recover it.
        assert applied_count(crashed) == EVENTS
        clean_s = replay_cleanly(clean, tmp_path / "clean.log")
        figures = {"applied_at": at, "clean_replay_s": round(clean_s, 1)}
        same_as_clean(clean, crashed, f"redis_back_{persistence}", figures)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        throwaway.stop()
        forget_isolated(settings, base)


def test_a_worker_started_on_a_restored_store_resumes_from_its_offsets(
    settings: Settings, throwaway: ThrowawayRedis, tmp_path: Path
) -> None:
    """Redis restored from an older snapshot while no worker runs: the group's commit is
    ahead of the store; a worker starting reads from the store's offsets, not the commit."""
    base = dataclasses.replace(
        settings.isolated(uid("restored")), require_catalog=False, web_port=settings.web_port + 47
    )
    restored = other_store(base, "restored", redis_url=throwaway.url)
    clean = other_store(base, "a")
    n = EVENTS // 2
    at: dict[str, float] = {}
    procs = []
    try:
        kafka_io.ensure_topics(base)
        start = start_ms(n)
        produce(base, n * 3 // 10, start)
        procs.append(start_worker(restored, tmp_path / "first.log"))
        wait_worker_ready(procs[0], tmp_path / "first.log")
        until_applied(restored, n * 3 // 10)
        throwaway.snapshot()
        at["snapshot"] = applied_count(restored)
        produce(base, n * 6 // 10, start, first=n * 3 // 10)
        until_applied(restored, n * 6 // 10)
        stop_worker(procs[0])  # commits the group's offsets past everything applied
        throwaway.crash()
        throwaway.start()
        at["restored"] = applied_count(restored)
        produce(base, n, start, first=n * 6 // 10)
        log = tmp_path / "second.log"
        started = time.monotonic()
        procs.append(start_worker(restored, log))
        wait_worker_ready(procs[1], log)
        until_applied(restored, n)
        # Everything after the snapshot waited for this worker: the lag it started with.
        at["lag_at_start_events"] = n - at["restored"]
        at["start_to_caught_up_s"] = round(time.monotonic() - started, 1)
        time.sleep(2)  # anything applied twice would show as more
        stop_worker(procs[1])
        assert at["restored"] == at["snapshot"] < n * 6 // 10
        assert applied_count(restored) == n
        assert "offsets unavailable" not in log.read_text(errors="replace")
        clean_s = replay_cleanly(clean, tmp_path / "clean.log", n)
        figures = {"applied_at": at, "clean_replay_s": round(clean_s, 1)}
        same_as_clean(clean, restored, "redis_restored", figures, n)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
        forget_isolated(settings, base)
