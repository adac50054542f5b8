"""A worker's log tells what changed (rules, model, index) and sums up dead letters and outages,
one line each, without a session or item id."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import re
import socket
import time
import uuid
from pathlib import Path

import orjson
import pytest

from stream_reco import logs
from stream_reco.config import Settings
from stream_reco.errors import StoreError
from stream_reco.kafka_io import ensure_topics
from stream_reco.logs import ManualClock, Trouble
from stream_reco.storage.redis_store import RedisStore
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import Kafka, uid


def _wait_in_log(log: Path, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not logged within {timeout}s"
        time.sleep(0.2)


def _dead_letter_counts(text: str, topic: str) -> int:
    return sum(int(n) for n in re.findall(rf"dead letters from {re.escape(topic)}: (\d+)", text))


def test_the_log_names_rule_changes_and_sums_up_dead_letters_without_ids(
    settings: Settings,
) -> None:
    run = uuid.uuid4().hex[:6]
    own = dataclasses.replace(
        settings.isolated(f"logs{run}"), require_catalog=False, web_port=settings.web_port + 5
    )
    ensure_topics(own)
    log = own.home.resolve() / "logs" / f"logs-{run}.log"
    proc = start_worker(own, log)
    kafka = Kafka(own)
    secrets = [uid("secret-session"), uid("secret-item"), uid("secret-item"), uid("secret-ev")]
    sid, item, other, event_id = secrets
    try:
        wait_worker_ready(proc, log)
        kafka.send(own.topic_config, "cart", {"exclude": [item], "category_cap": 2})
        sent: list[tuple[str, bytes]] = []
        for n in range(3):
            sent.append((own.topic_events, b"{not json " + str(n).encode()))
        for n in range(2):
            wrong = {"event_id": f"{event_id}-{n}", "type": "teleport", "session_id": sid}
            sent.append((own.topic_events, orjson.dumps({**wrong, "item_id": item, "ts": 1})))
        mismatch = {"item_id": other, "title": "Lamp", "category": "lighting"}
        for topic, raw in sent:
            kafka.send(topic, sid, raw)
        kafka.send(own.topic_catalog, item, mismatch)  # its key names another item
        sent.append((own.topic_catalog, orjson.dumps(mismatch)))
        good = {"event_id": event_id, "type": "view", "session_id": sid, "item_id": item}
        kafka.send(own.topic_events, sid, {**good, "ts": int(time.time() * 1000)})
        for topic, raw in sent:
            kafka.wait_for(
                lambda t, d, topic=topic, raw=raw: (
                    t == own.topic_deadletter
                    and d.get("source_topic") == topic
                    and base64.b64decode(d.get("value_b64") or b"") == raw
                ),
                timeout=30,
            )
        _wait_in_log(log, "rules reloaded from Redis")
        _wait_in_log(log, "item index loaded")
    finally:
        kafka.close()
        stop_worker(proc)  # a stopping worker writes the summaries it still holds
    text = log.read_text(errors="replace")

    rules = f"rules update from {own.topic_config} applied: 'cart' sets category_cap, exclude"
    assert rules in text
    assert "rules reloaded from Redis: 'cart' set (category_cap, exclude)" in text
    assert _dead_letter_counts(text, own.topic_events) == 5
    assert _dead_letter_counts(text, own.topic_catalog) == 1
    assert "invalid event: not valid JSON" in text
    assert "invalid event: type must be one of […], got '…'" in text
    assert "does not match item_id '…'" in text
    assert re.search(r"item index loaded: \d+ items", text)
    for secret in secrets:
        assert secret not in text, f"{secret} is in the log"
    assert "teleport" not in text  # a value from the message, even if not an id


def test_a_redis_outage_is_one_warning_and_its_end_one_info(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    redis = Trouble("Redis", clock=clock, log=logging.getLogger("test.worker_logs"))
    monkeypatch.setattr(logs, "REDIS", redis)
    caplog.set_level(logging.INFO, logger="test.worker_logs")
    with socket.socket() as s:  # a port nothing listens on: every connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{port}/0")

    async def count(s: Settings) -> int:
        store = RedisStore.connect(s)
        try:
            return await store.applied_count()
        finally:
            await store.close()

    with pytest.raises(StoreError):
        asyncio.run(count(down))
    lines = [r for r in caplog.records if r.name == "test.worker_logs"]
    assert [r.levelno for r in lines] == [logging.WARNING], "retries are not a line each"
    assert lines[0].getMessage().startswith("Redis trouble: applied failed: ")
    assert redis.failing
    clock.advance(logs.EVERY_S)
    asyncio.run(count(settings))
    lines = [r for r in caplog.records if r.name == "test.worker_logs"]
    assert lines[-1].levelno == logging.INFO
    assert lines[-1].getMessage().startswith("Redis works again after 5 failures")
