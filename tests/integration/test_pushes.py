"""Pushes after cart additions: one per session and batch, none for a cart that waited too long."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import orjson
import pytest

from stream_reco import messages
from stream_reco.config import Settings
from stream_reco.errors import ERRORS
from stream_reco.messages import Message
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid


@pytest.fixture
def store(settings: Settings) -> Iterator[RedisStore]:
    s = dataclasses.replace(settings, key_prefix=uid("push"), require_catalog=False)
    st = RedisStore.connect(s)
    yield st
    asyncio.run(_cleanup(st))


async def _cleanup(st: RedisStore) -> None:
    await st.clear()
    await st.close()


def _cart(session: str, sent_ms: int | None, n: int = 0) -> Message:
    now = int(time.time() * 1000)
    doc = {"event_id": f"{session}-{n}", "type": "add_to_cart", "session_id": session}
    doc |= {"item_id": f"i{n}", "ts": now}
    return Message("events", 0, n, session.encode(), orjson.dumps(doc), sent_ms)


def test_a_cart_that_waited_too_long_in_kafka_is_applied_without_a_push(
    store: RedisStore,
) -> None:
    s = store.settings
    now = int(time.time() * 1000)
    fresh, stale, unstamped = uid("fresh"), uid("stale"), uid("nostamp")
    msgs = [
        _cart(fresh, now - 10),
        _cart(stale, now - s.answer_max_lag_ms - 1000),
        _cart(unstamped, None),
    ]

    async def run() -> tuple[list[messages.Out], int]:
        before = ERRORS["late_push"]
        # A new loop per asyncio.run: the store's pool must not outlive it.
        st = RedisStore.connect(s)
        try:
            outs = await messages.on_event_messages(st, s, msgs)
            applied = [(await st.read_session(sid)).events for sid in (fresh, stale, unstamped)]
            assert applied == [1, 1, 1]  # every event is applied, pushed for or not
        finally:
            await st.close()
        return outs, ERRORS["late_push"] - before

    outs, shed = asyncio.run(run())
    pushed = {orjson.loads(o.value)["session_id"] for o in outs if o.topic == s.topic_responses}
    assert pushed == {fresh, unstamped}
    assert shed == 1


def test_a_request_that_waited_too_long_is_dead_lettered_not_answered(
    store: RedisStore,
) -> None:
    s = store.settings
    now = int(time.time() * 1000)

    def ask(sent_ms: int) -> Message:
        doc = {"request_id": uid("r"), "session_id": uid("s"), "k": 3}
        return Message("requests", 0, 0, None, orjson.dumps(doc), sent_ms)

    async def run() -> tuple[messages.Out, messages.Out, int]:
        before = ERRORS["late_request"]
        st = RedisStore.connect(s)
        try:
            fresh = await messages.on_request_message(st, s, ask(now - 10))
            late = await messages.on_request_message(st, s, ask(now - s.answer_max_lag_ms - 500))
        finally:
            await st.close()
        return fresh, late, ERRORS["late_request"] - before

    fresh, late, counted = asyncio.run(run())
    assert fresh.topic == s.topic_responses
    assert late.topic == s.topic_deadletter and counted == 1
    reason = orjson.loads(late.value)["reason"]
    assert "STREAM_RECO_ANSWER_MAX_LAG_MS" in reason and "not answered" in reason
