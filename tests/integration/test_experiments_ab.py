"""An A/B test end to end through Kafka and a worker: the experiment is started at runtime on
reco-config, simulated shoppers click one variant's answers more often, and `stream-reco
experiments report` finds that variant significantly better, and an equal one not
(docs/experiments.md, "How many sessions")."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from stream_reco.config import Settings
from stream_reco.kafka_io import ensure_topics
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage.redis_store import RedisStore
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import Kafka, _forget_run, run_cli, uid

SESSIONS = 600  # the number docs/experiments.md promises detects a 20 % -> 45 % CTR
CLICKS = {"a": 0.2, "same": 0.2, "better": 0.45}
EXPERIMENT = {
    "salt": "ab-test",
    "variants": [
        {"name": "a", "share": 0.34, "control": True},
        {"name": "same", "share": 0.33, "learned_ranker": False},
        {"name": "better", "share": 0.33, "blend": {"sknn": 0}},
    ],
}


@pytest.fixture
def own(settings: Settings) -> Iterator[tuple[Settings, Kafka]]:
    tag = uid("xab")
    mine = dataclasses.replace(
        settings.isolated(tag), require_catalog=False, web_port=settings.web_port + 57
    )
    ensure_topics(mine)
    log = mine.home.resolve() / "logs" / f"test-{tag}.log"
    proc = start_worker(mine, log)
    kafka = Kafka(mine)
    try:
        wait_worker_ready(proc, log)
        yield mine, kafka
    finally:
        kafka.close()
        stop_worker(proc)
        _forget_run(settings, f"{settings.key_prefix}-{tag}")  # keys and consumer groups


def _applied(settings: Settings) -> int:
    async def read() -> int:
        store = RedisStore.connect(settings)
        try:
            return await store.applied_count()
        finally:
            await store.close()

    return asyncio.run(read())


def _wait_applied(settings: Settings, n: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while _applied(settings) < n:
        assert time.monotonic() < deadline, f"{_applied(settings)} of {n} events applied"
        time.sleep(0.2)


def _wait_report(
    settings: Settings, done: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 30
) -> dict[str, Any]:
    """The experiment's report (--json) once `done` holds for its arms, else the last read."""
    deadline = time.monotonic() + timeout
    while True:
        doc = orjson.loads(run_cli(settings, "experiments", "report", "--json"))
        [exp] = doc["experiments"]
        if done({v["variant"]: v for v in exp["variants"]}) or time.monotonic() > deadline:
            return exp
        time.sleep(0.5)


def test_a_better_variant_is_detected_and_an_equal_one_is_not(
    own: tuple[Settings, Kafka],
) -> None:
    settings, kafka = own
    # A bad experiment is dead-lettered with its reason; the good one starts the test.
    bad = {**EXPERIMENT, "variants": EXPERIMENT["variants"][:2]}  # shares sum to 0.67
    kafka.send(settings.topic_config, "experiment:ab", bad)
    _, dead, _ = kafka.wait_for(lambda t, d: t == settings.topic_deadletter, timeout=30)
    assert "sum to 1" in dead["reason"]
    kafka.send(settings.topic_config, "experiment:ab", EXPERIMENT)

    # Fixed ids: the same sessions, variants and reactions every run (own topics and keys).
    shop = Storefront(make_catalog(60, seed=3), seed=3, run_id="xab", click_prob=CLICKS)
    # Browsing only: no cart additions, so each session gets exactly one answer (no pushes).
    events = [e for e in shop.stream(SESSIONS) if e["type"] in ("view", "click")]
    for e in events:
        kafka.producer.produce(
            settings.topic_events, key=str(e["session_id"]), value=orjson.dumps(e)
        )
    kafka.producer.flush(30)
    _wait_applied(settings, len(events))
    time.sleep(2 * settings.refresh_s)  # every worker has reloaded the experiment by now
    sessions = sorted({str(e["session_id"]) for e in events})
    for sid in sessions:
        request = {"request_id": f"r-{sid}", "session_id": sid, "k": 5}
        kafka.producer.produce(settings.topic_requests, key=sid, value=orjson.dumps(request))
    kafka.producer.flush(30)

    answers: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + 120
    while len(answers) < len(sessions) and time.monotonic() < deadline:
        _, doc, _ = kafka.wait_for(
            lambda t, d: t == settings.topic_responses and d["session_id"] not in answers,
            timeout=60,
        )
        answers[str(doc["session_id"])] = doc
    assert {d["experiment"] for d in answers.values()} == {"ab"}
    # An impression is stored after its answer is sent: a click sent before would find no
    # answer to credit. Wait until every answer with items is counted.
    shown = sum(1 for d in answers.values() if d["items"])
    _wait_report(settings, lambda arms: sum(v["impressions"] for v in arms.values()) >= shown)
    clicks = [c for doc in answers.values() for c in shop.react(doc)]
    for c in clicks:
        kafka.producer.produce(
            settings.topic_events, key=str(c["session_id"]), value=orjson.dumps(c)
        )
    kafka.producer.flush(30)
    _wait_applied(settings, len(events) + len(clicks))

    # Attribution follows application within the same batch.
    exp = _wait_report(
        settings, lambda arms: sum(v["clicks"] for v in arms.values()) >= len(clicks)
    )
    arms = {v["variant"]: v for v in exp["variants"]}
    assert sum(v["impressions"] for v in arms.values()) == shown
    assert sum(v["clicks"] for v in arms.values()) == len(clicks)
    assert sum(v["clicked_impressions"] for v in arms.values()) == len(clicks)  # one per answer
    assert sum(v["sessions"] for v in arms.values()) == len(sessions)
    assert not exp["srm"]["mismatch"]
    assert arms["better"]["ctr"]["p_value"] < 0.01 and arms["better"]["ctr"]["lift"] > 0.5
    assert arms["same"]["ctr"]["p_value"] > 0.05
    a, better = arms["a"]["ctr"], arms["better"]["ctr"]
    assert a["low"] < a["value"] < a["high"] and a["high"] - a["low"] < 0.15  # ~200 answers
    assert better["low"] > a["high"]
    table = run_cli(settings, "experiments", "report", "--name", "ab")
    assert "experiment ab on the whole shop (control: a)" in table and "CTR" in table
