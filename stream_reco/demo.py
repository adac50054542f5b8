"""The demo: local stack, a worker and a simulated storefront, with live pushed recommendations."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
import uuid
from collections import deque

import orjson

from stream_reco import kafka_io, stack
from stream_reco.config import Settings
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready

STATUS_EVERY_S = 2.0
EXPERIMENT = "demo"  # the experiment the demo runs (reco-config key experiment:demo)
# The learned ranker against the blend without session-kNN, and a holdout shown popular items.
EXPERIMENT_DEFINITION = {
    "salt": "demo-1",
    "variants": [
        {"name": "learned", "share": 0.45, "control": True},
        {"name": "no-sknn", "share": 0.45, "learned_ranker": False, "blend": {"sknn": 0}},
    ],
    "holdout": {"share": 0.1, "serve": "popular"},
}
# How often the demo's shoppers click an answer, by variant: one is made better on purpose,
# so the report has something to find.
CLICK_PROB = {"learned": 0.3, "no-sknn": 0.2, "holdout": 0.1, "default": 0.2}


class Board:
    """What the demo prints: pushed recommendations as they come and a running status line."""

    def __init__(self, titles: dict[str, str]) -> None:
        self.titles = titles
        self.sent = 0
        self.pushes = 0
        self.rejected = 0
        self.carted: dict[str, tuple[str, float]] = {}  # session -> (item, when published)
        self.e2e_ms: deque[float] = deque(maxlen=2000)
        self.engine_ms: deque[float] = deque(maxlen=2000)
        self.started = time.monotonic()
        self.window = (time.monotonic(), 0)

    def on_response(self, doc: dict[str, object]) -> None:
        self.pushes += 1
        session = str(doc["session_id"])
        item, when = self.carted.pop(session, ("?", time.monotonic()))
        self.e2e_ms.append((time.monotonic() - when) * 1000)
        self.engine_ms.append(float(doc["latency_ms"]))  # type: ignore[arg-type]
        items = doc["items"]
        assert isinstance(items, list)
        arm = f"  [{doc['experiment']}: {doc['variant']}]" if doc.get("experiment") else ""
        print(f"\n🛒 {session} added {self.titles.get(item, item)} → recommendations:{arm}")
        for n, rec in enumerate(items[:3], 1):
            print(f"   {n}. {self.titles.get(rec['item_id'], rec['item_id'])}  — {rec['reason']}")

    def on_dead_letter(self, doc: dict[str, object]) -> None:
        self.rejected += 1
        if self.rejected <= 3:  # enough to see why, not a flood
            print(f"\n⚠ dead-lettered: {doc['reason']}", flush=True)

    def status(self) -> None:
        now = time.monotonic()
        t0, n0 = self.window
        rate = (self.sent - n0) / max(now - t0, 1e-9)
        self.window = (now, self.sent)
        print(
            f"\n[{now - self.started:6.1f}s] {rate:7.1f} events/s sent | {self.sent} events, "
            f"{self.pushes} pushes, {self.rejected} dead-lettered | "
            f"cart→push p50 {_pct(self.e2e_ms, 50)} p99 {_pct(self.e2e_ms, 99)} | "
            f"engine p50 {_pct(self.engine_ms, 50)} p99 {_pct(self.engine_ms, 99)}",
            flush=True,
        )


def _pct(values: deque[float], q: int) -> str:
    if len(values) < 2:
        return "  n/a"
    return f"{statistics.quantiles(values, n=100)[q - 1]:5.1f} ms"


def run_demo(
    settings: Settings,
    duration: float | None,
    rate: float,
    start_stack: bool = True,
    items: int = 300,
    seed: int = 7,
    experiment: bool = True,
) -> int:
    """Run until `duration` seconds pass or Ctrl-C; the stack is left running for the next run.
    With `experiment`, an A/B test runs (EXPERIMENT_DEFINITION) and the shoppers click its
    answers (CLICK_PROB); without, the demo's experiment is ended."""
    if start_stack:
        stack.up(settings)
    kafka_io.ensure_topics(settings)
    log_path = settings.home.resolve() / "logs" / "demo-worker.log"
    since = log_path.stat().st_size if log_path.exists() else 0
    print(f"starting a worker (log: {log_path}) ...", flush=True)
    worker = start_worker(settings, log_path)
    try:
        wait_worker_ready(worker, log_path, since)
        _announce(settings, experiment)
        return _storefront(settings, duration, rate, items, seed, worker)
    except KeyboardInterrupt:
        return 0
    finally:
        stop_worker(worker)
        print("\nworker stopped; the stack keeps running (`stream-reco stack down` stops it)")
        if experiment:
            print(f"experiment {EXPERIMENT!r}: `stream-reco experiments report` shows its figures")


def _announce(settings: Settings, experiment: bool) -> None:
    """Start (or end) the demo's experiment on reco-config; say where to watch it."""
    producer = kafka_io.producer(settings)
    value = orjson.dumps(EXPERIMENT_DEFINITION) if experiment else None
    producer.produce(settings.topic_config, key=f"experiment:{EXPERIMENT}", value=value)
    producer.flush(10)
    if experiment:
        print(
            f"experiment {EXPERIMENT!r}: variants learned (control) and no-sknn, 10 % holdout; "
            "report: `stream-reco experiments report`",
            flush=True,
        )
    print(f"dashboard: http://127.0.0.1:{settings.web_port}/dashboard", flush=True)


def _storefront(
    settings: Settings,
    duration: float | None,
    rate: float,
    items: int,
    seed: int,
    worker: subprocess.Popen[bytes],
) -> int:
    catalog = make_catalog(n_items=items, seed=seed)
    board = Board({str(c["item_id"]): str(c["title"]) for c in catalog})
    producer = kafka_io.producer(settings)
    for record in catalog:
        producer.produce(
            settings.topic_catalog, key=str(record["item_id"]), value=orjson.dumps(record)
        )
    producer.flush(10)
    consumer = kafka_io.consumer(
        settings,
        [settings.topic_responses, settings.topic_deadletter],
        group=f"demo-{uuid.uuid4().hex[:8]}",
    )
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.1)  # join the group first, or the first pushes would be missed
    front = Storefront(
        catalog,
        seed=seed,
        run_id=f"demo{uuid.uuid4().hex[:6]}",
        start_ms=int(time.time() * 1000),
        click_prob=CLICK_PROB,
    )
    shop = front.stream()
    print(
        f"storefront: {len(catalog)} items, publishing ~{rate:.0f} events/s "
        f"({'Ctrl-C' if duration is None else f'{duration:.0f} s'} to stop)",
        flush=True,
    )
    end = None if duration is None else time.monotonic() + duration
    next_send = last_status = time.monotonic()
    try:
        while end is None or time.monotonic() < end:
            if worker.poll() is not None:
                print("the worker exited; see its log", file=sys.stderr)
                return 1
            while next_send <= time.monotonic():
                ev = next(shop)
                # A live shop stamps events now; the simulator's own clock runs much faster.
                ev["ts"] = int(time.time() * 1000)
                producer.produce(
                    settings.topic_events, key=str(ev["session_id"]), value=orjson.dumps(ev)
                )
                board.sent += 1
                if ev["type"] == "add_to_cart":
                    board.carted[str(ev["session_id"])] = (str(ev["item_id"]), time.monotonic())
                next_send += 1.0 / rate
            producer.poll(0)
            msg = consumer.poll(max(0.0, min(0.05, next_send - time.monotonic())))
            if msg is not None and not msg.error():
                if msg.topic() == settings.topic_deadletter:
                    board.on_dead_letter(orjson.loads(msg.value()))
                else:
                    doc = orjson.loads(msg.value())
                    board.on_response(doc)
                    for click in front.react(doc):  # a shopper acting on what it was shown
                        click["ts"] = int(time.time() * 1000)
                        key = str(click["session_id"])
                        producer.produce(settings.topic_events, key=key, value=orjson.dumps(click))
                        board.sent += 1
            if time.monotonic() - last_status >= STATUS_EVERY_S:
                board.status()
                last_status = time.monotonic()
    finally:
        producer.flush(5)
        consumer.close()
    board.status()
    return 0
