"""The error policy: outages are waited out, only the failing message is dead-lettered."""

from __future__ import annotations

import asyncio

import pytest

from stream_reco import guard
from stream_reco.errors import StoreError
from stream_reco.guard import ERRORS, guarded
from stream_reco.messages import Message, Out


def msg(n: int, value: bytes) -> Message:
    return Message("t", 0, n, None, value)


def reject(m: Message, why: str) -> Out:
    return Out("dead", None, f"{m.offset}:{why}".encode())


def test_one_bad_message_is_dead_lettered_and_the_rest_processed() -> None:
    seen: list[int] = []

    async def work(batch: list[Message]) -> list[Out]:
        if any(m.value == b"boom" for m in batch):
            raise ValueError("cannot handle boom")
        seen.extend(m.offset or 0 for m in batch)
        return [Out("ok", None, str(m.offset).encode()) for m in batch]

    batch = [msg(1, b"a"), msg(2, b"boom"), msg(3, b"c")]
    outs = asyncio.run(guarded(batch, work, reject, pause=0))
    assert [o.topic for o in outs] == ["ok", "dead", "ok"]
    assert outs[1].value.startswith(b"2:internal error: ValueError: cannot handle boom")
    assert seen == [1, 3]


def test_store_outage_is_waited_out_without_losing_or_rejecting() -> None:
    calls = 0
    before = ERRORS["store"]

    async def work(batch: list[Message]) -> list[Out]:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise StoreError("redis down")
        return [Out("ok", None, m.value or b"") for m in batch]

    outs = asyncio.run(guarded([msg(1, b"x"), msg(2, b"y")], work, reject, pause=0))
    assert [o.value for o in outs] == [b"x", b"y"]
    assert calls == 4 and ERRORS["store"] == before + 3


def test_an_outage_is_retried_with_growing_pauses_up_to_a_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(guard.asyncio, "sleep", sleep)
    calls = 0

    async def work(batch: list[Message]) -> list[Out]:
        nonlocal calls
        calls += 1
        if calls <= 10:
            raise StoreError("redis down")
        return []

    asyncio.run(guarded([msg(1, b"x")], work, reject, pause=0.25))
    assert pauses[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(pauses) == guard.MAX_PAUSE_S and len(pauses) == 10
