"""A store of a test's own on one backend (a single node or the Redis Cluster), driven from
plain test code: its own key prefix and event loop, cleared and closed after the test."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

from stream_reco.config import Settings
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid

T = TypeVar("T")
S = TypeVar("S", bound="OwnStore")


class OwnStore:
    """`store` on `settings`, and `run` (or calling it) to drive a coroutine to its end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.store = RedisStore.connect(settings)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    __call__ = run


@contextlib.contextmanager
def own_store(
    request: pytest.FixtureRequest,
    settings: Settings,
    tag: str,
    make: Callable[[Settings], S] = OwnStore,  # type: ignore[assignment]
    **changes: Any,
) -> Iterator[S]:
    """For a fixture with params ["node", "cluster"]: the backend its param names, on a fresh
    prefix (`tag` in it) with `changes` to the settings."""
    base = settings if request.param == "node" else request.getfixturevalue("cluster")
    prefix = uid(f"{settings.key_prefix}-{tag}")
    mine = make(dataclasses.replace(base, key_prefix=prefix, **changes))
    try:
        yield mine
    finally:
        mine.run(mine.store.clear())
        mine.run(mine.store.close())
        mine.loop.close()
