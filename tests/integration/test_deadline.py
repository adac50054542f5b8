"""A late store call is not cancelled: its connection survives and its failure is counted."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from stream_reco import deadline
from stream_reco.config import Settings
from stream_reco.deadline import within
from stream_reco.errors import ERRORS


def _one_connection(settings: Settings) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=1)
    return aioredis.Redis(connection_pool=pool)


def test_a_late_call_keeps_its_connection(settings: Settings) -> None:
    async def go() -> tuple[int, int, int]:
        r = _one_connection(settings)
        try:
            before = await r.client_id()
            with pytest.raises(TimeoutError):  # BLPOP waits 0.2 s for a list nobody fills
                await within(r.blpop(["deadline-test:none"], timeout=0.2), 0.02, "late_test")
            after = await r.client_id()  # waits for the late call, then reuses its connection
            r2 = _one_connection(settings)
            try:  # the control: asyncio.timeout cancels the call and redis-py reconnects
                first = await r2.client_id()
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await r2.blpop(["deadline-test:none"], timeout=0.2)
                again = await r2.client_id()
            finally:
                await r2.aclose()
            return before, after, int(first != again)
        finally:
            await r.aclose()

    before, after, control_reconnected = asyncio.run(go())
    assert after == before
    assert control_reconnected == 1


def test_in_time_and_late_failures() -> None:
    async def fails_late() -> None:
        await asyncio.sleep(0.05)
        raise ConnectionError("gone")

    async def go() -> int:
        assert await within(asyncio.sleep(0, result=7), 1.0, "late_test_failed") == 7
        assert await within(asyncio.sleep(0, result=8), None, "late_test_failed") == 8
        before = ERRORS["late_test_failed"]
        with pytest.raises(TimeoutError):
            await within(fails_late(), 0.01, "late_test_failed")
        await asyncio.sleep(0.1)  # the late step finishes on its own and its failure is counted
        return ERRORS["late_test_failed"] - before

    assert asyncio.run(go()) == 1


def test_a_cancelled_caller_cancels_the_step() -> None:
    started = asyncio.Event()
    cancelled = []

    async def step() -> None:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def go() -> None:
        caller = asyncio.ensure_future(within(step(), 5.0, "late_test"))
        await started.wait()
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await asyncio.sleep(0)

    asyncio.run(go())
    assert cancelled == [True]


def test_late_steps_are_bounded() -> None:
    async def go() -> tuple[int, int]:
        before = ERRORS["late_cancelled"]
        slow = [asyncio.ensure_future(asyncio.sleep(0.3)) for _ in range(deadline.MAX_LATE + 3)]
        for s in slow:
            with pytest.raises(TimeoutError):
                await within(asyncio.shield(s), 0.001, "late_test")
        at_most = len(deadline._late)
        await asyncio.gather(*slow)
        await asyncio.sleep(0.01)
        return at_most, ERRORS["late_cancelled"] - before

    at_most, cancelled = asyncio.run(go())
    assert at_most == deadline.MAX_LATE
    assert cancelled == 3
    assert not deadline._late  # every late step is forgotten once it is done
