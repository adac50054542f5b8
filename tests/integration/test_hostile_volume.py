"""10,000 hostile messages through a running worker cost nothing but their dead letters."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_reco import digest, kafka_io
from stream_reco.config import Settings
from stream_reco.events import Event, Rejected, decode_event
from stream_reco.messages import Message, Out, on_event_messages
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage.redis_store import RedisStore
from stream_reco.workers import start_worker, stop_worker, wait_worker_ready
from tests.integration.conftest import applied_count, forget_isolated, uid

pytestmark = [pytest.mark.faults, pytest.mark.timeout(900)]
HOSTILE = int(os.environ.get("STREAM_RECO_HOSTILE_MESSAGES", "10000"))
GOOD = 10_000
DONE_S = 300.0
Doc = dict[str, Any]


def _valid(rng: random.Random) -> Doc:
    return {
        "event_id": f"h{rng.getrandbits(64):x}",
        "type": "view",
        "session_id": f"hs{rng.randrange(1000)}",
        "item_id": f"hi{rng.randrange(500)}",
        "ts": int(time.time() * 1000) - 60_000,
    }


def _junk(rng: random.Random) -> Any:
    return rng.choice(
        [None, True, -1, 2**70, 1.5, float("nan"), "", "x" * 300, [], [1, "a"], {"a": {}}]
    )


def _wrong_field(rng: random.Random) -> bytes:
    doc = _valid(rng)
    field = rng.choice(sorted(doc))
    doc[field] = _junk(rng)
    return json.dumps(doc).encode()  # not orjson: it refuses the integers too big for JSON's peers


def _hostile_kinds() -> dict[str, Callable[[random.Random], bytes | None]]:
    """Each kind of bad message a careless or malicious producer sends."""

    def missing(rng: random.Random) -> bytes:
        doc = _valid(rng)
        del doc[rng.choice(sorted(doc))]
        return json.dumps(doc).encode()

    def bad_id(rng: random.Random) -> bytes:
        doc = _valid(rng)
        doc[rng.choice(["event_id", "session_id", "item_id"])] = rng.choice(
            ["a{b}", "tab\there", "x" * 129, "nul\x00", "{"]
        )
        return json.dumps(doc).encode()

    def bad_time(rng: random.Random) -> bytes:
        doc = _valid(rng)
        doc["ts"] = rng.choice([-1, 10**16, "2026-01-01", 1.5e12, 2**63])
        return json.dumps(doc).encode()

    def not_an_object(rng: random.Random) -> bytes:
        return json.dumps(rng.choice([[], [1, 2], "event", 42, None, True])).encode()

    def random_bytes(rng: random.Random) -> bytes:
        return rng.randbytes(rng.randrange(1, 300))

    def broken_json(rng: random.Random) -> bytes:
        text = orjson.dumps(_valid(rng)).decode()
        return text[: rng.randrange(1, len(text) - 1)].encode()

    def nested(rng: random.Random) -> bytes:
        depth = rng.choice([300, 3000])
        return b'{"event_id":' + b"[" * depth + b"]" * depth + b"}"

    def unknown_type(rng: random.Random) -> bytes:
        doc = _valid(rng)
        doc["type"] = rng.choice(["hover", "VIEW", "", "purchase ", "delete"])
        return json.dumps(doc).encode()

    def bad_quantity(rng: random.Random) -> bytes:
        doc = {**_valid(rng), "type": "add_to_cart"}
        doc["quantity"] = rng.choice([0, -3, 10**9, 1.5, "2"])
        return json.dumps(doc).encode()

    def huge(rng: random.Random) -> bytes:
        doc = _valid(rng)
        doc["note"] = "z" * (70 * 1024)  # past the contract's 64 KiB per value
        return json.dumps(doc).encode()

    def empty(rng: random.Random) -> bytes:
        return b""

    return {
        "missing": missing,
        "wrong_field": _wrong_field,
        "bad_id": bad_id,
        "bad_time": bad_time,
        "not_an_object": not_an_object,
        "random_bytes": random_bytes,
        "broken_json": broken_json,
        "nested": nested,
        "unknown_type": unknown_type,
        "bad_quantity": bad_quantity,
        "huge": huge,
        "empty": empty,
    }


def _mixed(n_good: int, n_bad: int, seed: int) -> Iterator[tuple[bytes | None, bytes, bool]]:
    """(key, value, good) in a random interleaving; every bad value is checked to be bad."""
    rng = random.Random(seed)
    start = int(time.time() * 1000) - 3 * 3600_000
    shop = Storefront(make_catalog(300, seed=2), seed=3, run_id="hostile", start_ms=start)
    good = shop.stream(concurrency=200)
    kinds = _hostile_kinds()
    names = sorted(kinds)
    left_good, left_bad = n_good, n_bad
    while left_good or left_bad:
        if rng.random() < left_good / (left_good + left_bad):
            ev = next(good)
            left_good -= 1
            yield str(ev["session_id"]).encode(), orjson.dumps(ev), True
            continue
        left_bad -= 1
        name = names[left_bad % len(names)] if left_bad < len(names) else rng.choice(names)
        value = kinds[name](rng) or b""
        assert isinstance(decode_event(value), Rejected), (name, value[:200])
        key_kind = rng.random()
        key = None if key_kind < 0.2 else rng.randbytes(8) if key_kind < 0.4 else b"hs1"
        yield key, value, False


def _produce(s: Settings, n_good: int, n_bad: int) -> tuple[list[Event], set[tuple[int, int]]]:
    """The good events in the order produced, and (partition, offset) of every bad message."""
    bad_at: set[tuple[int, int]] = set()
    failed: list[str] = []
    producer = kafka_io.producer(s, **{"linger.ms": 5, "queue.buffering.max.messages": 200_000})
    good: list[Event] = []

    def delivered(bad: bool) -> Callable[[Any, Any], None]:
        def report(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(str(err))
            elif bad:
                bad_at.add((msg.partition(), msg.offset()))

        return report

    for n, (key, value, ok) in enumerate(_mixed(n_good, n_bad, seed=11)):
        if ok:
            decoded = decode_event(value)
            assert isinstance(decoded, Event)
            good.append(decoded)
        producer.produce(s.topic_events, key=key, value=value, on_delivery=delivered(not ok))
        if n % 2_000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0 and not failed, failed[:3]
    return good, bad_at


def _dead_letters(s: Settings, want: int) -> list[Doc]:
    consumer = kafka_io.consumer(s, [s.topic_deadletter], f"{s.app_id}-dlq", from_beginning=True)
    got: list[Doc] = []
    deadline = time.monotonic() + DONE_S
    try:
        while len(got) < want and time.monotonic() < deadline:
            for m in consumer.consume(1000, 1.0):
                if m.error() is None:
                    got.append(orjson.loads(m.value()))
    finally:
        consumer.close()
    return got


def _alone(s: Settings, good: list[Event]) -> dict[str, Any]:
    """The digest of the good events applied on their own, in one partition order each."""

    async def run() -> None:
        st = RedisStore.connect(s)
        try:
            for n in range(0, len(good), 500):
                await st.apply_events(good[n : n + 500])
        finally:
            await st.close()

    asyncio.run(run())
    return digest.take(s)


def test_ten_thousand_hostile_messages_cost_nothing_but_their_dead_letters(
    settings: Settings, tmp_path: Path
) -> None:
    base = dataclasses.replace(
        settings.isolated(uid("hostile")), require_catalog=False, web_port=settings.web_port + 41
    )
    alone = dataclasses.replace(base, key_prefix=f"{base.key_prefix}-alone")
    log = tmp_path / "worker.log"
    try:
        kafka_io.ensure_topics(base)
        good, bad_at = _produce(base, GOOD, HOSTILE)
        assert len(bad_at) == HOSTILE
        proc = start_worker(base, log)
        try:
            wait_worker_ready(proc, log)
            deadline = time.monotonic() + DONE_S
            while applied_count(base) < len(good):
                assert proc.poll() is None, "the worker died"
                assert time.monotonic() < deadline, f"{applied_count(base)} of {len(good)} applied"
                time.sleep(0.2)
            letters = _dead_letters(base, HOSTILE)
            time.sleep(1)  # anything applied twice would show as more
            assert proc.poll() is None, "the worker died"
        finally:
            stop_worker(proc)
        text = log.read_text(errors="replace")
        assert text.count("Worker ready") == 1  # never restarted

        assert applied_count(base) == len(good)
        assert len(letters) == HOSTILE
        assert {(d["partition"], d["offset"]) for d in letters} == bad_at
        assert all(d["reason"] and d["source_topic"] == base.topic_events for d in letters)
        # Each dead letter keeps its original (cut at 64 KiB) so it can be replayed once fixed.
        for d in letters[:500]:
            raw = base64.b64decode(d["value_b64"] or "")
            assert len(raw) == min(d["value_size"], 64 * 1024)
        assert all(d["reason"].startswith("invalid event: ") for d in letters)
        assert len({d["reason"] for d in letters}) >= 20  # each says what was wrong

        result = digest.compare(_alone(alone, good), digest.take(base), digest.DEFAULT_AGREEMENT)
        assert result["passed"], digest.table(result)
    finally:
        forget_isolated(settings, base, alone.key_prefix)


def test_the_generator_makes_every_kind_and_only_bad_ones() -> None:
    kinds = _hostile_kinds()
    rng = random.Random(1)
    for name, make in kinds.items():
        for _ in range(20):
            assert isinstance(decode_event(make(rng) or b""), Rejected), name


def test_a_dead_letter_keeps_its_own_original_when_event_ids_repeat(settings: Settings) -> None:
    """Issue 12's finding: with two messages of one batch sharing an `event_id`, the dead
    letter carried the other one's bytes. Each dead letter is made from its own message."""
    s = dataclasses.replace(settings.isolated(uid("dlorig")), require_catalog=False)
    good = json.dumps({**_valid(random.Random(1)), "event_id": "dup"}).encode()
    bad = json.dumps({**_valid(random.Random(2)), "event_id": "dup", "type": "hover"}).encode()
    msgs = [Message(s.topic_events, 0, n, b"k", v) for n, v in enumerate((good, bad, good))]

    async def run() -> list[Out]:
        st = RedisStore.connect(s)
        try:
            return await on_event_messages(st, s, msgs)
        finally:
            await st.clear()
            await st.close()

    dead = [o for o in asyncio.run(run()) if o.topic == s.topic_deadletter]
    assert len(dead) == 1
    letter = orjson.loads(dead[0].value)
    assert (letter["partition"], letter["offset"]) == (0, 1)
    assert base64.b64decode(letter["value_b64"]) == bad
