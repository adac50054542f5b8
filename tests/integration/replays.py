"""Replays through Kafka for the fault tests: one simulated shop's events, and workers."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import redis

from stream_reco import digest, kafka_io, stack
from stream_reco.bench import machine
from stream_reco.bench.fleet import free_port
from stream_reco.client import RecoClient
from stream_reco.config import Settings
from stream_reco.errors import StackError
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.stack_servers import OVERRIDES, Stack
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import applied_count

# The documented run replays 200,000 (STREAM_RECO_FAULT_EVENTS=200000); CI a share.
EVENTS = int(os.environ.get("STREAM_RECO_FAULT_EVENTS", "60000"))
DONE_S = 300.0
# Events a second once a paced replay's backlog is in: slower than one worker applies them,
# so the replay is still running while the fault happens.
PACE_PER_S = 2000.0
REPO = Path(__file__).resolve().parents[2]


def start_ms(n: int) -> int:
    # Far enough back that the last of n events is still in the past (the simulator spans
    # about 35,000 events an hour here), and within any replay window.
    return int(time.time() * 1000) - (n // 20_000 + 1) * 3600_000


@dataclasses.dataclass
class Progress:
    """How many of a replay's events have been produced so far (for its lag)."""

    sent: int = 0


def produce(
    s: Settings,
    n: int,
    start: int,
    first: int = 0,
    per_s: float | None = None,
    hold: tuple[int, threading.Event] | None = None,
    progress: Progress | None = None,
) -> None:
    """Events `first` to `n` of one simulated shop beginning at `start` (the same events on
    every call), as fast as they go or `per_s` a second; with `hold` (k, go), the events
    from k on wait until `go` is set, so a fault can be placed before the replay ends."""
    shop = Storefront(make_catalog(500, seed=5), seed=6, run_id="faults", start_ms=start)
    producer = kafka_io.producer(s, **{"linger.ms": 5, "queue.buffering.max.messages": 500_000})
    t0 = time.monotonic()
    for n_, ev in enumerate(shop.stream(concurrency=300)):
        if n_ >= n:
            break
        if n_ < first:
            continue
        if hold is not None and n_ == hold[0]:
            producer.flush(60)
            assert hold[1].wait(DONE_S), "the held-back events were never released"
            t0 = time.monotonic() - (n_ - first) / (per_s or 1.0)
        producer.produce(s.topic_events, key=str(ev["session_id"]), value=orjson.dumps(ev))
        if progress is not None:
            progress.sent = n_ + 1
        if per_s is not None and n_ % 100 == 0:
            producer.poll(0)
            time.sleep(max(0.0, t0 + (n_ - first) / per_s - time.monotonic()))
        elif n_ % 10_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


class LagWatch:
    """The most events produced but not yet applied while it watches (a fault's lag)."""

    def __init__(self, s: Settings, progress: Progress, every_s: float = 0.1) -> None:
        self.s, self.progress, self.every_s = s, progress, every_s
        self.max_lag, self._stop = 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> LagWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(redis.ConnectionError):  # Redis may be down: its fault
                lag = self.progress.sent - applied_count(self.s)
                self.max_lag = max(self.max_lag, lag)


def until_applied(s: Settings, n: int, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + DONE_S
    while (got := applied_count(s)) < n:
        assert time.monotonic() < deadline, f"{got} of {n} events applied"
        time.sleep(poll_s)


def applies_and_answers(s: Settings, proc: subprocess.Popen[bytes], log: Path, n: int) -> None:
    """A started worker gets ready, applies `n` events of the simulated shop and answers a
    request: it works end to end with whatever connections `s` describes."""
    wait_worker_ready(proc, log)
    produce(s, n, start_ms(n))
    until_applied(s, n)
    with RecoClient.from_settings(s) as client:
        assert client.recommend("a-session", 5, timeout=10)["items"]


def replay_cleanly(s: Settings, log: Path, n: int = EVENTS) -> float:
    """One worker applies the whole topic into the store of `s`; how long it took."""
    t0 = time.monotonic()
    proc = start_worker(s, log)
    try:
        wait_worker_ready(proc, log)
        until_applied(s, n)
    finally:
        stop_worker(proc)
    return time.monotonic() - t0


def other_store(base: Settings, tag: str, **changes: object) -> Settings:
    """Settings for another replay of the same topic: its own consumer group and keys."""
    return dataclasses.replace(
        base, app_id=f"{base.app_id}-{tag}", key_prefix=f"{base.key_prefix}-{tag}", **changes
    )


def same_as_clean(
    clean: Settings, other: Settings, name: str, figures: dict[str, object], events: int = EVENTS
) -> None:
    """`digest --compare` of the clean replay and `other`; the figures of a documented run
    are written to the folder STREAM_RECO_FAULT_REPORT names, if any."""
    result = digest.compare(digest.take(clean), digest.take(other), digest.DEFAULT_AGREEMENT)
    folder = os.environ.get("STREAM_RECO_FAULT_REPORT")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        report = {"events": events, **figures, "digest": result, "run": _run_facts(clean)}
        (Path(folder) / f"{name}.json").write_bytes(orjson.dumps(report))
    assert result["passed"], digest.table(result)


def _run_facts(s: Settings) -> dict[str, object]:
    """When, on which commit and on what machine a documented run ran."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, cwd=REPO).stdout
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": head + ("+changes" if dirty.strip() else ""),
        "machine": machine.machine(s, {"fault_events": EVENTS}),
    }


class ThrowawayRedis:
    """A redis-server of the test's own, persisted by snapshots only unless `extra` says
    otherwise: a crash brings it back as of its last snapshot, the worst a deployment allows."""

    def __init__(self, folder: Path, *extra: str, tls: tuple[Path, Path] | None = None) -> None:
        """`tls`: (CA file, server key and certificate file): TLS only, with a password."""
        self.port, self.folder, self.extra, self.tls = free_port(), folder, extra, tls
        self.password = secrets.token_urlsafe(16) if tls else None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"rediss://:{self.password}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls[0]}"

    def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            ca, pem = self.tls
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(pem),
                      "--tls-key-file", str(pem), "--tls-ca-cert-file", str(ca),
                      "--tls-auth-clients", "no", "--requirepass", str(self.password)]  # fmt: skip
        self.proc = subprocess.Popen(
            ["redis-server", *listen, "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder), "--dbfilename", "dump.rdb",
             "--maxmemory-policy", "noeviction", *self.extra],
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

    def hold_writes_and_count(self, prefix: str) -> int:
        """Hold every write for a few seconds (a crash must come before they resume) and
        read how many events the store under `prefix` has applied."""
        client = redis.Redis.from_url(self.url)
        try:
            client.execute_command("CLIENT", "PAUSE", 5000, "WRITE")
            return int(client.get(f"{prefix}:g:{{g}}:applied") or 0)
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


START_ATTEMPTS = 3


@contextlib.contextmanager
def own_stack(
    settings: Settings, home: Path, overrides: Callable[[Settings], dict[str, str]] | None = None
) -> Iterator[Settings]:
    """A Kafka and a Redis of the test's own on free ports (the session's stack is never
    restarted or reconfigured), with the session stack's Kafka jars; `overrides` gives broker
    settings for the stack's overrides file (called again for every start). A start that fails
    is tried again on fresh ports and a fresh home: a port found free can be taken by another
    process's connection before the broker binds it, which would fail a test for nothing."""
    for attempt in range(1, START_ATTEMPTS + 1):
        own = _own_settings(settings, home / f"start{attempt}", overrides)
        try:
            stack.up(own, say=lambda _: None)
        except BaseException as exc:  # a timeout or ^C mid-start too: nothing left running
            stack.down(own, say=lambda _: None)
            if not isinstance(exc, StackError) or attempt == START_ATTEMPTS:
                raise
            # Said, so a start that needed another try shows in the test's output.
            warnings.warn(f"own stack: start {attempt} failed, trying again: {exc}", stacklevel=1)
            continue
        try:
            yield own
        finally:
            stack.down(own, say=lambda _: None)
        return


def _own_settings(
    settings: Settings, home: Path, overrides: Callable[[Settings], dict[str, str]] | None
) -> Settings:
    (home / "kafka").mkdir(parents=True)
    (home / "kafka" / "libs").symlink_to(Stack(settings).libs)
    own = dataclasses.replace(
        settings,
        home=home,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        kafka_sasl_port=free_port(),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        kafka_heap_opts="-Xms128m -Xmx512m",
    )
    if overrides is not None:
        lines = "".join(f"{k}={v}\n" for k, v in overrides(own).items())
        (home / "kafka" / OVERRIDES).write_text(lines)
    return own
