"""`inspect` tells a key prefix that holds nothing from an unknown id, and says how to fix it."""

from __future__ import annotations

import asyncio

from stream_reco.config import Settings
from stream_reco.events import CatalogItem, Event
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import cli, inspect, uid


def write(settings: Settings, events: list[Event], items: list[CatalogItem]) -> None:
    async def run() -> None:
        store = RedisStore.connect(settings)
        try:
            await store.apply_catalog(items)
            await store.apply_events(events)
        finally:
            await store.close()

    asyncio.run(run())


def test_a_prefix_that_holds_nothing_is_named_with_the_fix(own: Settings) -> None:
    for target in (["--session", uid("s")], ["--item", uid("i")]):
        done = inspect(own, *target)
        assert done.returncode == 2, done
        assert done.stdout == ""
        assert f"nothing is stored under key prefix {own.key_prefix!r}" in done.stderr
        assert own.redis_url in done.stderr
        assert "STREAM_RECO_KEY_PREFIX" in done.stderr and "REDIS_URL" in done.stderr


def test_an_unknown_session_in_a_store_with_data_says_so_and_fails(own: Settings) -> None:
    item = CatalogItem(uid("i"), title="Lamp", category="lighting", price=10.0)
    write(own, [], [item])
    ghost = uid("ghost")
    done = inspect(own, "--session", ghost)
    assert done.returncode == 1 and done.stdout == ""
    assert f"no session {ghost!r} under key prefix {own.key_prefix!r}" in done.stderr
    assert "no events yet" in done.stderr

    sid = uid("s")
    write(own, [Event(uid("e"), "view", sid, item.item_id, 1_750_000_000_000)], [])
    done = inspect(own, "--session", ghost)
    assert done.returncode == 1 and done.stdout == ""
    assert "has applied 1 events" in done.stderr and "STREAM_RECO_SESSION_TTL_S" in done.stderr

    state = cli(own, "inspect", "--session", sid)  # a known session: its state, exit 0
    assert state["events"] == 1 and state["recent"][0][0] == item.item_id
    assert cli(own, "inspect", "--item", uid("other"))["known"] is False
