"""/metrics on a worker's web port: it parses with prometheus-client's own parser, and its
counters equal what the worker was given (events by outcome, dead letters, answers, pushes)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import faust
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stream_reco import metrics, web
from stream_reco.config import Settings
from stream_reco.consumer import TopicLoop
from stream_reco.errors import ERRORS
from stream_reco.kafka_io import Sink, ensure_topics, producer
from stream_reco.messages import Message, Out
from stream_reco.runtime import Runtime
from stream_reco.storage.redis_store import RedisStore
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import Kafka, clear_store, forget_isolated, uid
from tests.integration.test_end_to_end import event

Series = list[tuple[str, dict[str, str], float]]


@pytest.fixture(scope="module")
def observed(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kafka]:
    """A worker of this module's own: its counters start from zero."""
    own = dataclasses.replace(
        settings.isolated(uid("metrics")), require_catalog=False, web_port=settings.web_port + 52
    )
    log = tmp_path_factory.mktemp("metrics") / "worker.log"
    ensure_topics(own)
    proc = start_worker(own, log)
    kafka = Kafka(own)
    try:
        wait_worker_ready(proc, log)
        yield kafka
    finally:
        kafka.close()
        stop_worker(proc)
        forget_isolated(settings, own)


def scrape(s: Settings, path: str = "/metrics") -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{s.web_port}{path}", timeout=10) as r:
        return r.read().decode(), r.headers.get("Content-Type", "")


def series(text: str) -> Series:
    """Every sample, through prometheus-client's parser (which raises on a malformed line)."""
    return [
        (s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples
    ]


def total(samples: Series, name: str, **labels: str) -> float:
    return sum(
        v for n, got, v in samples if n == name and all(got.get(k) == w for k, w in labels.items())
    )


def one(samples: Series, name: str, **labels: str) -> float:
    """The value of the one series `name` with `labels`: missing or ambiguous fails."""
    found = [
        v for n, got, v in samples if n == name and all(got.get(k) == w for k, w in labels.items())
    ]
    assert len(found) == 1, f"{name}{labels}: {len(found)} series"
    return found[0]


def until(s: Settings, done: Callable[[Series], bool], what: str, timeout: float = 30.0) -> Series:
    deadline = time.monotonic() + timeout
    while True:
        samples = series(scrape(s)[0])
        if done(samples):
            return samples
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def http_get(s: Settings, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{s.web_port}{path}", timeout=10) as r:
        return r.status


def test_metrics_count_what_the_worker_did(observed: Kafka) -> None:
    s = observed.settings
    text, ctype = scrape(s)
    assert ctype.startswith("text/plain")
    assert total(series(text), "stream_reco_events_total") == 0  # a fresh worker

    sessions = [uid("shop") for _ in range(4)]
    valid: list[dict[str, Any]] = []
    for n, sid in enumerate(sessions):
        kinds = ["view", "view", "click", "add_to_cart"] if n % 2 else ["view", "click"]
        valid += [event(sid, f"it-{n}-{k}", kind) for k, kind in enumerate(kinds)]
    invalid: list[object] = [
        b"not json",
        b"[1, 2]",
        {"type": "teleport", "session_id": sessions[0], "item_id": "x", "ts": 1},
        {"type": "click", "session_id": sessions[0]},  # no event_id, item_id nor ts
        {**event(sessions[1], "x"), "ts": "yesterday"},
    ]
    for e in valid:
        observed.send(s.topic_events, e["session_id"], e)
    for bad in invalid:
        observed.send(s.topic_events, sessions[0], bad)
    outcomes = len(valid) + len(invalid)

    def all_events(n: int) -> Callable[[Series], bool]:
        return lambda got: total(got, "stream_reco_events_total") >= n

    until(s, all_events(outcomes), "the first events' outcomes")
    duplicates = valid[:3]
    for e in duplicates:  # the same event ids again: a redelivery changes nothing
        observed.send(s.topic_events, e["session_id"], e)
    until(s, all_events(outcomes + len(duplicates)), "the duplicates' outcomes")

    requests = 5
    for n in range(requests):
        observed.send(
            s.topic_requests,
            sessions[n % 4],
            {"request_id": uid("r"), "session_id": sessions[n % 4]},
        )
    over_http = 3
    for n in range(over_http):
        assert http_get(s, f"/recommendations?session_id={sessions[n]}") == 200
    got = until(
        s,
        lambda got: total(got, "stream_reco_request_latency_seconds_count") >= requests + over_http,
        "the requests' answers",
    )
    pushes = [d for d in observed.responses() if d["trigger"] == "add_to_cart"]
    time.sleep(1.5)  # anything counted twice, or lag not yet measured, would show by now
    got = series(scrape(s)[0])

    by_type = Counter(e["type"] for e in valid)
    for kind, n in by_type.items():
        assert total(got, "stream_reco_events_total", type=kind, outcome="applied") == n, kind
    assert total(got, "stream_reco_events_total", outcome="applied") == len(valid)
    assert total(got, "stream_reco_events_total", outcome="duplicate") == len(duplicates)
    assert total(got, "stream_reco_events_total", outcome="rejected") == len(invalid)
    # A rejected event counts under the type it claimed when that is one of ours.
    assert total(got, "stream_reco_events_total", outcome="rejected", type="click") == 1
    assert total(got, "stream_reco_dead_letters_total", topic=s.topic_events) == len(invalid)
    reasons = {lb["reason"] for n, lb, _ in got if n == "stream_reco_dead_letters_total"}
    assert len(reasons) >= 3 and not any("teleport" in r for r in reasons)  # values masked

    assert total(got, "stream_reco_request_latency_seconds_count", via="kafka") == requests
    assert total(got, "stream_reco_request_latency_seconds_count", via="http") == over_http
    assert len(pushes) >= 1
    assert total(got, "stream_reco_push_latency_seconds_count") == len(pushes)
    assert total(got, "stream_reco_answers_total", trigger="add_to_cart") == len(pushes)
    # Every answer falls in some bucket: the +Inf bucket equals the count.
    inf = total(got, "stream_reco_request_latency_seconds_bucket", le="+Inf")
    assert inf == requests + over_http

    consumed = len(valid) + len(invalid) + len(duplicates)
    assert total(got, "stream_reco_consumed_total", loop="events") == consumed
    assert total(got, "stream_reco_consumed_total", loop="requests") == requests
    lags = [(lb, v) for n, lb, v in got if n == "stream_reco_consumer_lag"]
    assert {lb["loop"] for lb, _ in lags} == {"events", "requests"}
    assert all(v == 0 for _, v in lags), lags  # everything handled and stored
    # A fresh worker has seen too few examples for the model: the blend ranks.
    examples = one(got, "stream_reco_model_examples")
    assert 0 <= examples < s.model_min_examples
    assert one(got, "stream_reco_ranker", ranker="blend") == 1
    assert one(got, "stream_reco_ranker", ranker="model") == 0
    version = one(got, "stream_reco_model_version")
    assert version >= 0 and version == int(version)
    # The experiments' summary is read at each scrape (none running here), without failing:
    # its families are there (empty), and no failure of that kind was counted.
    families = {f.name for f in text_string_to_metric_families(scrape(s)[0])}
    assert "stream_reco_experiment_sessions" in families, sorted(families)
    failures = {lb["kind"]: v for n, lb, v in got if n == "stream_reco_failures_total"}
    assert failures.get("experiments_summary", 0) == 0, failures


def test_a_scrape_is_quick_and_the_failure_counts_are_exposed(observed: Kafka) -> None:
    s = observed.settings
    timings = []
    for _ in range(10):
        started = time.perf_counter()
        text, _ = scrape(s)
        timings.append(time.perf_counter() - started)
    assert sorted(timings)[5] < 0.2, timings  # a whole HTTP round trip, on a loaded machine
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"stream_reco_failures", "stream_reco_consumer_lag", "stream_reco_ranker"} <= names


def test_the_explorer_refuses_a_bad_session_id(observed: Kafka) -> None:
    s = observed.settings
    for query in ("", "?session_id=a%00b", "?session_id=x&session_id=y", "?sid=x"):
        url = f"http://127.0.0.1:{s.web_port}/dashboard/session{query}"
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=10)
        assert err.value.code == 400, query
        assert b"error" in err.value.read()


def test_lag_rises_while_a_batch_holds_the_loop(settings: Settings) -> None:
    """An ordered loop fetches nothing while a batch is in hand (a Redis outage waited out):
    messages produced meanwhile still show as lag within a couple of seconds."""
    own = settings.isolated(uid("lag"))
    ensure_topics(own)
    more = 20

    async def run() -> tuple[int, int]:
        gate, started = asyncio.Event(), asyncio.Event()

        async def handle(batch: list[Message]) -> list[Out]:
            started.set()
            await gate.wait()
            return []

        sink = Sink(own, ERRORS)
        loop = TopicLoop(own, "events", own.topic_events, f"{own.app_id}-events", handle, sink)
        task = asyncio.create_task(loop.run())
        send = producer(own)
        try:
            send.produce(own.topic_events, key=b"s", value=b"{}")
            send.flush(10)
            await asyncio.wait_for(started.wait(), 30)  # the first batch is held
            await asyncio.sleep(0.5)  # the loop has fetched again and now waits for the batch
            before = sum(loop.lag.values())
            for _ in range(more):
                send.produce(own.topic_events, key=b"s", value=b"{}")
            send.flush(10)
            produced = time.monotonic()
            while sum(loop.lag.values()) < more and time.monotonic() - produced < 2.5:
                await asyncio.sleep(0.1)
            return before, sum(loop.lag.values())
        finally:
            gate.set()
            loop.stop()
            await task
            sink.flush(5)

    try:
        before, after = asyncio.run(run())
    finally:
        forget_isolated(settings, own)
    assert before < more
    assert after >= more, (before, after)


def test_a_counting_bug_never_costs_an_http_answer(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metrics.answered failing (a bug, injected here) is counted, and the answers still go
    out: GET /recommendations and POST /rank on a real Faust web server and Redis."""
    own = settings.isolated(uid("counting"))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = int(free.getsockname()[1])

    def broken(doc: Any, via: str) -> None:
        raise ValueError("a counting bug")

    monkeypatch.setattr(metrics, "answered", broken)

    async def run() -> list[int]:
        app = faust.App(
            own.app_id, web_port=port, web_bind="127.0.0.1", web_host="127.0.0.1",
            **web.FAUST_BUILTINS_OFF,
        )  # fmt: skip
        store = RedisStore.connect(own)
        web.add_views(app, own, Runtime(), lambda: store)
        await app.web.start()
        try:
            async with aiohttp.ClientSession() as http:
                base = f"http://127.0.0.1:{port}"
                async with http.get(f"{base}/recommendations?session_id=s1") as r:
                    statuses = [r.status]
                body = {"session_id": "s1", "items": ["a", "b"]}
                async with http.post(f"{base}/rank", json=body) as r:
                    statuses.append(r.status)
                return statuses
        finally:
            await app.web.stop()
            await store.close()

    before = ERRORS["metrics"]
    try:
        assert asyncio.run(run()) == [200, 200]
    finally:
        clear_store(own)  # it made no topic nor group: its keys are all
    assert ERRORS["metrics"] == before + 2
