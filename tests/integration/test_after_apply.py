"""Once events are applied, a failing push or feedback write costs only itself: counted and
logged, never the batch (which would be redone as duplicates, or dead-lettered)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from stream_reco import pipeline
from stream_reco.app import _survived
from stream_reco.config import Settings
from stream_reco.errors import ERRORS
from stream_reco.events import Event
from stream_reco.guard import guarded
from stream_reco.messages import Message, Out, on_event_messages, rejected
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid

TS = 1_700_000_000_000


def cart(session: str, item: str, n: int) -> Event:
    return Event(f"{session}-c{n}", "add_to_cart", session, item, TS + n)


def test_a_failing_push_costs_only_itself(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    st = RedisStore.connect(settings.isolated(uid("after")))
    loop = asyncio.new_event_loop()
    sent: list[str] = []

    async def on_push(doc: dict[str, Any]) -> None:
        if doc["session_id"] == "bad":
            raise RuntimeError("producer queue full")
        sent.append(str(doc["session_id"]))

    before = ERRORS["push_failed"]
    try:
        events = [cart("bad", "A", 1), cart("good", "B", 2)]
        with caplog.at_level(logging.WARNING, logger="stream_reco"):
            pushes = loop.run_until_complete(
                pipeline.handle_events(st, st.settings, events, on_push=on_push)
            )
        assert pushes == [] and sent == ["good"]  # the other session's push still went out
        assert ERRORS["push_failed"] == before + 1
        assert "producer queue full" in caplog.text
        # Both events are applied (once): a redelivery finds them done.
        assert loop.run_until_complete(st.apply_events(events)) == [False, False]
    finally:
        loop.run_until_complete(st.clear())
        loop.run_until_complete(st.close())
        loop.close()


def test_an_applied_event_whose_push_fails_is_not_dead_lettered(settings: Settings) -> None:
    s = settings.isolated(uid("after"))
    st = RedisStore.connect(s)
    loop = asyncio.new_event_loop()

    async def emit(outs: Any) -> None:
        raise RuntimeError("broker gone")

    async def work(msgs: list[Message]) -> list[Out]:
        return await on_event_messages(st, s, msgs, emit=emit)

    value = (
        b'{"event_id":"e1","type":"add_to_cart","session_id":"s1","item_id":"A","ts":'
        + str(TS).encode()
        + b"}"
    )
    try:
        outs = loop.run_until_complete(
            guarded(
                [Message(s.topic_events, 0, 0, b"s1", value)],
                work,
                lambda m, why: rejected(s, m, why),
                pause=0,
            )
        )
        assert [o for o in outs if o.topic == s.topic_deadletter] == []
        assert loop.run_until_complete(st.read_session("s1")).cart == {"A": 1}
    finally:
        loop.run_until_complete(st.clear())
        loop.run_until_complete(st.close())
        loop.close()


def test_a_background_step_that_fails_is_counted_and_goes_no_further() -> None:
    before = ERRORS["tests_step"]
    with _survived("tests_step"):
        raise ValueError("boom")
    assert ERRORS["tests_step"] == before + 1
