"""Waiting for the store within a time budget, without cancelling the call that runs late."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from stream_reco.errors import ERRORS

T = TypeVar("T")
# Late steps left running at once, at most: each holds a pooled Redis connection (64 per
# worker), and under a long overload answers still wanted must find one free.
MAX_LATE = 32
_late: set[asyncio.Future[object]] = set()


async def within(step: Awaitable[T], seconds: float | None, kind: str) -> T:
    """`step`'s result if it is ready within `seconds` (None: no limit), else TimeoutError.

    Unlike `asyncio.timeout`, a late step is not cancelled but left to finish on its own: a
    Redis command cancelled between request and reply makes redis-py close its connection
    (the reply would otherwise be read by the next command), so under load every late answer
    cost a reconnect, which made the next ones later still. Past MAX_LATE such steps a late
    one is cancelled after all (counted as `late_cancelled`). What a late step raises in the
    end is counted under `kind`."""
    if seconds is None:
        return await step
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait((task,), timeout=seconds)
    except asyncio.CancelledError:  # our caller gave up: nobody wants the step any more
        task.cancel()
        raise
    if done:
        return task.result()
    if len(_late) >= MAX_LATE:
        ERRORS["late_cancelled"] += 1
        task.cancel()
        raise TimeoutError
    _late.add(task)
    task.add_done_callback(lambda t: _settled(t, kind))
    raise TimeoutError


def _settled(task: asyncio.Future[object], kind: str) -> None:
    """A late step's outcome, read so that nothing is left unretrieved, counted if it failed."""
    _late.discard(task)
    if not task.cancelled() and task.exception() is not None:
        ERRORS[kind] += 1
