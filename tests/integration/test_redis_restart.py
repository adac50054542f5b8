"""A Redis back from an older snapshot mid-replay: the worker reads again what it lost."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stream_reco import kafka_io
from stream_reco.bench.fleet import free_port
from stream_reco.config import Settings
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import applied_count, forget_isolated, uid
from tests.integration.replays import (
    EVENTS,
    PACE_PER_S,
    other_store,
    produce,
    replay_cleanly,
    same_as_clean,
    start_ms,
    until_applied,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
DOWN_S = 3.0  # how long Redis stays down


class ThrowawayRedis:
    """A redis-server of the test's own, persisted by snapshots only (no append-only file):
    a crash brings it back as of its last snapshot, the worst a real deployment allows."""

    def __init__(self, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--dbfilename", "dump.rdb",
             "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.ping():
                    break
            except redis.exceptions.BusyLoadingError:
                pass  # still loading its snapshot
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the throwaway redis-server did not start"
            time.sleep(0.05)
        client.close()

    def snapshot(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            client.save()
        finally:
            client.close()

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def throwaway(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_redis_back_from_an_older_snapshot_is_caught_up_from_kafka(
    settings: Settings, throwaway: ThrowawayRedis, tmp_path: Path
) -> None:
    base = dataclasses.replace(
        settings.isolated(uid("redisback")), require_catalog=False, web_port=settings.web_port + 44
    )
    crashed = other_store(base, "crashed", redis_url=throwaway.url)
    clean = other_store(base, "a")
    log = tmp_path / "worker.log"
    at: dict[str, float] = {}
    backlog, go = EVENTS // 5, threading.Event()
    proc = None
    try:
        kafka_io.ensure_topics(base)
        start = start_ms(EVENTS)
        produce(base, backlog, start)
        hold = (EVENTS * 7 // 10, go)
        pacer = threading.Thread(
            target=produce, args=(base, EVENTS, start, backlog, PACE_PER_S, hold)
        )
        proc = start_worker(crashed, log)
        pacer.start()
        try:
            wait_worker_ready(proc, log)
            until_applied(crashed, backlog + EVENTS // 10, 0.01)
            throwaway.snapshot()
            at["snapshot"] = applied_count(crashed)
            until_applied(crashed, at["snapshot"] + EVENTS // 10, 0.01)
            throwaway.crash()  # everything after the snapshot is gone
            at["crash"] = at["snapshot"] + EVENTS // 10  # at least this many were applied
            time.sleep(DOWN_S)
            throwaway.start()
            at["back"] = applied_count(crashed)
            back = time.monotonic()
            go.set()
            until_applied(crashed, int(at["crash"]), 0.05)
            at["caught_up_s"] = round(time.monotonic() - back, 1)
        finally:
            go.set()
            pacer.join()
        until_applied(crashed, EVENTS)
        time.sleep(2)  # anything applied twice would show as more
        assert proc.poll() is None, "the worker died"
        stop_worker(proc)
        text = log.read_text(errors="replace")
        assert text.count("Worker ready") == 1
        assert "reading again from" in text  # it noticed, rather than applying on top
        assert at["back"] <= at["snapshot"] < at["crash"]  # the snapshot came back, no more
        assert applied_count(crashed) == EVENTS
        clean_s = replay_cleanly(clean, tmp_path / "clean.log")
        same_as_clean(clean, crashed, "redis_back", {"applied_at": at, "clean_replay_s": clean_s})
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
        forget_isolated(settings, base)
