"""Pushes after cart additions: one per session and batch, none for a cart that waited too long."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import orjson
import pytest

from stream_reco import messages, pipeline
from stream_reco.config import Settings
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
        _cart(stale, now - s.push_max_lag_ms - 1000),
        _cart(unstamped, None),
    ]

    async def run() -> tuple[list[messages.Out], int]:
        before = pipeline.STALE_PUSHES[0]
        # A new loop per asyncio.run: the store's pool must not outlive it.
        st = RedisStore.connect(s)
        try:
            outs = await messages.on_event_messages(st, s, msgs)
            applied = [(await st.read_session(sid)).events for sid in (fresh, stale, unstamped)]
            assert applied == [1, 1, 1]  # every event is applied, pushed for or not
        finally:
            await st.close()
        return outs, pipeline.STALE_PUSHES[0] - before

    outs, shed = asyncio.run(run())
    pushed = {orjson.loads(o.value)["session_id"] for o in outs if o.topic == s.topic_responses}
    assert pushed == {fresh, unstamped}
    assert shed == 1
