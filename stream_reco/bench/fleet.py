"""The bench's own world on the shared stack: topics, key prefix, workers, and their removal."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from stream_reco import kafka_io
from stream_reco.bench.interrupt import Hold, no_hold
from stream_reco.bench.memory import rss_mb
from stream_reco.bench.topology import (
    ANSWERING,
    LATENCY_ROLES,
    check_roles,
    ingest_role,
    needs,
    unsettled,
)
from stream_reco.config import Settings
from stream_reco.errors import StackError
from stream_reco.security import kafka_options
from stream_reco.storage import connect
from stream_reco.storage.redis_store import RedisStore
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready

log = logging.getLogger(__name__)
T = TypeVar("T")
ASSIGN_TIMEOUT_S = 90.0
CATALOG_TIMEOUT_S = 60.0
GROUP_DELETE_TRIES = 20


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    web_port: int
    role: str
    number: int  # in order of start, over the whole run
    topology: str
    start_mb: float | None = None  # RSS once ready

    def rss(self, end_mb: float | None) -> dict[str, Any]:
        return {
            "worker": self.number,
            "role": self.role,
            "topology": self.topology,
            "start_mb": self.start_mb,
            "end_mb": end_mb,
        }


class StoreProbe:
    """The store's async reads from plain code: one private event loop, one connection pool."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = RedisStore.connect(settings)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def applied(self) -> int:
        return self.run(self.store.applied_count())

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Fleet:
    """Topics, consumer groups and key prefix of this run alone (`tag` in every name), the
    workers on them (of one topology at a time), and `close()`, which stops the workers and
    deletes all of it."""

    def __init__(self, base: Settings, tag: str) -> None:
        self.tag = tag
        self.settings = base.isolated(tag)
        self.admin = AdminClient({**kafka_options(self.settings), **kafka_io.QUIET})
        self.workers: list[Worker] = []
        self.topology: str | None = None  # what runs now (deploy)
        self.started = 0  # workers started so far: the next one's number
        self.retired: list[dict[str, Any]] = []  # RSS figures of workers already stopped
        self.leftover_groups = 0
        # Closed first by close(), again if an interrupt cut their own close short.
        self.closers: list[Callable[[], None]] = []
        self.failed = False
        self.hold: Hold = no_hold  # a block a stop signal may not cut short (the run sets it)

    def open(self) -> None:
        kafka_io.ensure_topics(self.settings)

    def scratch_topics(self, *names: str) -> list[str]:
        """Extra topics for this run (the floor's), with the run's partition count."""
        from confluent_kafka.admin import NewTopic

        topics = [f"{self.settings.topic_requests}-{n}" for n in names]
        new = [NewTopic(t, num_partitions=self.settings.partitions) for t in topics]
        for fut in self.admin.create_topics(new, operation_timeout=30).values():
            fut.result()
        return topics

    def deploy(self, topology: str) -> None:
        """Stop every worker, start `topology`'s latency workers and wait until they are
        settled in their consumer groups."""
        self.stop_workers()
        self.topology = topology
        # Every worker that answers shares one requests group: the next topology's workers
        # go on from the offsets the last one committed, with no request answered twice.
        self.add_workers(topology, LATENCY_ROLES[topology])
        self.wait_ready()

    def answering(self) -> Worker:
        """The running worker that answers requests (its web port serves the HTTP window)."""
        return next(w for w in self.workers if w.role in ANSWERING)

    def scale_ingest(self, topology: str, n: int) -> None:
        """`n` workers of `topology`'s ingest role (never fewer than now), settled."""
        role = ingest_role(topology)
        missing = n - sum(w.role == role for w in self.workers)
        self.add_workers(topology, [role] * missing)
        self.wait_ready()

    def add_workers(self, topology: str, roles: Sequence[str]) -> list[Worker]:
        """`stream-reco worker`s of `roles` on the run's topics, each with its own web port,
        started together and ready (not yet settled in their groups: `wait_ready`)."""
        check_roles([*(w.role for w in self.workers), *roles])
        home = self.settings.home.resolve()
        started: list[Worker] = []
        for role in roles:
            port = free_port()
            own = dataclasses.replace(self.settings, web_port=port, role=role).validate()
            number = self.started
            self.started += 1
            log = home / "logs" / f"{self.settings.app_id}-w{number}-{role}.log"
            with self.hold():  # a started worker is always listed, for close() to stop
                worker = Worker(start_worker(own, log), log, port, role, number, topology)
                self.workers.append(worker)
            started.append(worker)
        for worker in started:
            wait_worker_ready(worker.proc, worker.log)
            worker.start_mb = rss_mb(worker.proc.pid)
        return started

    def stop_workers(self) -> None:
        """Stop every worker, noting its RSS first (for the report's memory figures)."""
        while self.workers:
            self._retire(self.workers[-1])

    def _retire(self, worker: Worker) -> None:
        end_mb = rss_mb(worker.proc.pid)
        stop_worker(worker.proc)
        # Unlisted only once stopped: a stop signal before leaves it to close() to stop.
        self.workers.remove(worker)
        self.retired.append(worker.rss(end_mb))
        if not self.failed:
            worker.log.unlink(missing_ok=True)

    def rss_figures(self) -> list[dict[str, Any]]:
        """Every worker's RSS once ready and at its end (now, for those still running)."""
        live = [w.rss(rss_mb(w.proc.pid)) for w in self.workers]
        return sorted([*self.retired, *live], key=lambda r: int(r["worker"]))

    def wait_ready(self) -> None:
        """Until every consumer group the running workers' roles use is stable and owns
        every partition it must (topology.needs), or fail with what each group looks like."""
        wanted = needs(self.settings, [w.role for w in self.workers])
        deadline = time.monotonic() + ASSIGN_TIMEOUT_S
        while True:
            for w in self.workers:
                if w.proc.poll() is not None:
                    raise StackError(f"a bench worker exited; see its log {w.log}")
            waiting = unsettled(self.admin, self.settings.partitions, wanted)
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"the bench's workers did not settle in their consumer groups within "
                    f"{ASSIGN_TIMEOUT_S:.0f} s ({waiting}); see the logs in "
                    f"{self.settings.home.resolve() / 'logs'}"
                )
            time.sleep(0.2)

    def _own_groups(self) -> list[str]:
        """The run's consumer groups (every one has the run's tag in its name)."""
        listed = self.admin.list_consumer_groups().result().valid
        return sorted({g.group_id for g in listed if self.tag in g.group_id})

    def publish_catalog(self, catalog: list[dict[str, object]], probe: StoreProbe) -> None:
        """Publish the catalogue and wait until the worker has stored every item, so answers
        are built on a complete catalogue from the first request."""
        out = kafka_io.producer(self.settings)
        for record in catalog:
            out.produce(
                self.settings.topic_catalog, key=str(record["item_id"]), value=orjson.dumps(record)
            )
        out.flush(30)
        ids = [str(r["item_id"]) for r in catalog]
        deadline = time.monotonic() + CATALOG_TIMEOUT_S
        while len(probe.run(probe.store.read_items(ids))) < len(ids):
            if time.monotonic() > deadline:
                raise StackError(
                    f"the worker did not store the {len(ids)}-item catalogue within "
                    f"{CATALOG_TIMEOUT_S:.0f} s; see {self.workers[0].log}"
                )
            time.sleep(0.2)

    def close(self, *, raise_errors: bool = True) -> None:
        """Stop the workers and delete the run's topics, groups, keys and files (also after a
        failure or Ctrl-C); worker logs are kept only when the run failed. Every step runs
        even when an earlier one fails; failures are logged and, with `raise_errors` (no
        earlier error of the run on its way, which a new one must not hide), raised as one."""
        steps: list[tuple[str, Callable[[], None]]] = [
            (f"closing {getattr(c, '__qualname__', c)}", c) for c in reversed(self.closers)
        ]
        workers = reversed(self.workers)  # in stop_workers' order
        steps += [(f"stopping worker {w.number}", partial(self._retire, w)) for w in workers]
        steps += [
            ("deleting topics", self._delete_topics),
            ("deleting consumer groups", self._delete_groups),
            ("deleting Redis keys", self._delete_keys),
            ("deleting files", self._delete_files),
        ]
        failed: list[str] = []
        for what, step in steps:
            try:
                step()
            except Exception as exc:  # every step gets its turn, whatever the last one did
                log.warning("bench cleanup: %s failed: %s", what, exc, exc_info=True)
                failed.append(f"{what}: {exc}")
        if failed and raise_errors:
            raise StackError(
                f"the bench could not remove all of run {self.tag} ({'; '.join(failed)}); "
                f"delete what is left by hand: topics, groups and keys containing {self.tag!r}"
            )

    def _delete_files(self) -> None:
        home = self.settings.home.resolve()
        # Faust's data and the ANN index snapshots are named after the app id (and role).
        for folder in ("faust", "ann"):
            for path in (home / folder).glob(f"{self.settings.app_id}*"):
                shutil.rmtree(path, ignore_errors=True)

    def _delete_topics(self) -> None:
        mine = [t for t in self.admin.list_topics(timeout=10).topics if self.tag in t]
        if not mine:
            return
        failed = []
        for topic, fut in self.admin.delete_topics(mine, operation_timeout=30).items():
            try:
                fut.result()
            except KafkaException as exc:
                failed.append(f"{topic}: {exc}")
        if failed:
            raise StackError(f"could not delete topics: {'; '.join(failed)}")

    def _delete_groups(self) -> None:
        # A group whose last member has only just left may refuse for a moment: retry a bit.
        for _ in range(GROUP_DELETE_TRIES):
            mine = self._own_groups()
            if not mine:
                return
            for fut in self.admin.delete_consumer_groups(mine).values():
                try:
                    fut.result()
                except KafkaException:
                    pass  # still emptying: the next try sees it
            time.sleep(0.5)
        self.leftover_groups = len(self._own_groups())

    def _delete_keys(self) -> None:
        client = connect.sync_client(self.settings)
        try:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.settings.key_prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
        finally:
            client.close()
