"""Kills, stalls, joins and leaves of workers mid-replay leave a clean replay's state."""

from __future__ import annotations

import dataclasses
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_reco import kafka_io
from stream_reco.config import Settings
from stream_reco.consumer import SESSION_TIMEOUT_S
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import applied_count, forget_isolated, uid
from tests.integration.replays import (
    EVENTS,
    PACE_PER_S,
    LagWatch,
    Progress,
    other_store,
    produce,
    replay_cleanly,
    same_as_clean,
    start_ms,
    until_applied,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1200)]
KILLS = 5


@dataclasses.dataclass(frozen=True)
class Replayed:
    """Events on a topic of their own, and a store one worker replayed them into cleanly."""

    base: Settings
    clean: Settings
    clean_s: float
    log_dir: Path


@pytest.fixture(scope="module")
def replayed(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    tag = uid("faults")
    # A web port of its own: the session's worker holds the default one.
    base = dataclasses.replace(
        settings.isolated(tag), require_catalog=False, web_port=settings.web_port + 40
    )
    log_dir = tmp_path_factory.mktemp("faults")
    try:
        kafka_io.ensure_topics(base)
        produce(base, EVENTS, start_ms(EVENTS))
        clean = other_store(base, "a")
        clean_s = replay_cleanly(clean, log_dir / "clean.log")
        yield Replayed(base, clean, clean_s, log_dir)
    finally:
        forget_isolated(settings, base)


def test_kill_9_during_a_replay_loses_and_doubles_nothing(replayed: Replayed) -> None:
    killed = other_store(replayed.base, "b")
    # Kill when the store has applied a random share of the events, so every kill lands
    # mid-replay however fast this machine is.
    rng, at_kill, ready_s = random.Random(9), [], []
    targets = sorted(int(rng.uniform(0.05, 0.8) * EVENTS) for _ in range(KILLS))
    log = replayed.log_dir / "killed.log"
    t0 = time.monotonic()
    proc = None
    try:
        for target in targets:
            since = log.stat().st_size if log.exists() else 0
            started = time.monotonic()
            proc = start_worker(killed, log)
            wait_worker_ready(proc, log, since)
            ready_s.append(round(time.monotonic() - started, 1))
            # Some progress past the last kill, so each kill interrupts new work.
            until_applied(killed, max(target, (at_kill or [0])[-1] + EVENTS // 50), 0.01)
            at_kill.append(applied_count(killed))
            proc.kill()  # SIGKILL: no shutdown, no commit, a batch perhaps half applied
            proc.wait(30)
        proc = start_worker(killed, log)
        wait_worker_ready(proc, log, log.stat().st_size)
        until_applied(killed, EVENTS)
        time.sleep(2)  # anything redelivered after the last apply would show as more
        stop_worker(proc)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert all(0 < a < EVENTS for a in at_kill), f"kills at applied counts {at_kill}"
    assert at_kill == sorted(set(at_kill)), f"each kill after more was applied: {at_kill}"
    assert applied_count(killed) == applied_count(replayed.clean) == EVENTS

    figures = {
        "applied_at_each_kill": at_kill,
        "restart_to_ready_s": ready_s,
        "clean_replay_s": round(replayed.clean_s, 1),
        "killed_replay_s": round(time.monotonic() - t0, 1),
    }
    same_as_clean(replayed.clean, killed, "kill", figures)


def every_partition(s: Settings) -> str:
    """The log line of a worker taking every partition of the events topic (its requests
    loop logs one of its own)."""
    return f"events partitions assigned: {list(range(s.partitions))} of {s.topic_events}"


def took_every_partition(log: Path, every: str, deadline: float) -> float:
    """When the worker logging to `log` next logged `every` (monotonic)."""
    before = log.read_text(errors="replace").count(every)
    while (now := time.monotonic()) < deadline:
        if log.read_text(errors="replace").count(every) > before:
            return now
        time.sleep(0.1)
    raise AssertionError(f"the second worker did not take every partition: {log}")


def test_workers_joining_stalling_and_leaving_mid_replay_lose_and_double_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """1 -> 2 workers; then the first stalls (SIGSTOP) past its group session, so the second
    takes its partitions while the first still holds a batch it goes on applying when it
    wakes (SIGCONT): two owners at once; then the first leaves (2 -> 1). Events arrive at a
    steady pace after a backlog, and the last ones are held back until the first has woken,
    so every move happens mid-replay."""
    base = dataclasses.replace(
        settings.isolated(uid("rebalance")), require_catalog=False, web_port=settings.web_port + 42
    )
    moved = other_store(base, "moved")
    second = dataclasses.replace(moved, web_port=base.web_port + 1)
    clean = other_store(base, "a")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    procs: list[subprocess.Popen[bytes]] = []
    at: dict[str, float] = {}
    backlog, go, sent = EVENTS // 5, threading.Event(), Progress(EVENTS // 5)
    try:
        kafka_io.ensure_topics(base)
        start = start_ms(EVENTS)
        produce(base, backlog, start)
        t0 = time.monotonic()
        procs.append(start_worker(moved, logs[0]))
        hold = (EVENTS * 7 // 10, go)
        pacer = threading.Thread(
            target=produce, args=(base, EVENTS, start, backlog, PACE_PER_S, hold, sent)
        )
        pacer.start()
        try:
            wait_worker_ready(procs[0], logs[0])
            until_applied(moved, backlog + EVENTS // 20, 0.01)
            at["second_joins"] = applied_count(moved)
            procs.append(start_worker(second, logs[1]))
            wait_worker_ready(procs[1], logs[1])
            at["second_ready"] = applied_count(moved)
            until_applied(moved, min(at["second_ready"] + EVENTS // 20, hold[0]), 0.01)
            with LagWatch(moved, sent) as lag:
                procs[0].send_signal(signal.SIGSTOP)  # mid-batch, as likely as not
                stalled = time.monotonic()
                at["first_stalls"] = applied_count(moved)
                # The group gives the stalled worker's partitions away: when the second
                # worker holds them all is the stall's recovery time.
                taken = took_every_partition(
                    logs[1], every_partition(base), stalled + SESSION_TIMEOUT_S + 30
                )
                at["takeover_s"] = round(taken - stalled, 1)
                time.sleep(max(0.0, stalled + SESSION_TIMEOUT_S + 5 - time.monotonic()))
                at["first_wakes"] = applied_count(moved)
                procs[0].send_signal(signal.SIGCONT)
                go.set()
                until_applied(moved, at["first_wakes"] + EVENTS // 20, 0.01)
                at["first_leaves"] = applied_count(moved)
                stop_worker(procs[0])  # a graceful leave: its partitions move at once
                until_applied(moved, at["first_leaves"] + EVENTS // 20, 0.01)
        finally:
            go.set()
            pacer.join()
        at["max_lag_events"] = lag.max_lag
        until_applied(moved, EVENTS)
        time.sleep(2)  # anything redelivered after the last apply would show as more
        for p in procs:
            stop_worker(p)
        assert at["first_stalls"] <= at["first_wakes"] < at["first_leaves"] < EVENTS, at
        # The second worker took every partition: while the first stalled, and when it left.
        assert logs[1].read_text(errors="replace").count(every_partition(base)) >= 2
        assert applied_count(moved) == EVENTS
        clean_s = replay_cleanly(clean, tmp_path / "clean.log")
        figures = {
            "applied_at": at,
            "replay_s": round(time.monotonic() - t0, 1),
            "paced_at_events_per_s": PACE_PER_S,
            "clean_replay_s": round(clean_s, 1),
        }
        same_as_clean(clean, moved, "rebalance", figures)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait(30)
        forget_isolated(settings, base)  # every other store and group is named from it
