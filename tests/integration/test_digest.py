"""`stream-reco digest`: the same events in another interleaving and batching agree; one event
dropped or applied twice does not."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stream_reco import digest
from stream_reco.config import Settings
from stream_reco.errors import ConfigError
from stream_reco.events import Event, decode_event
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import run_cli, uid

TS = 1_750_000_000_000


def _events(n: int) -> list[Event]:
    shop = Storefront(make_catalog(60, seed=2), seed=3, run_id="dig", start_ms=TS)
    stream = itertools.islice(shop.stream(concurrency=40), n)
    decoded = [decode_event(orjson.dumps(e)) for e in stream]
    return [e for e in decoded if isinstance(e, Event)]


def _interleaved(events: list[Event], seed: int) -> list[Event]:
    """Sessions interleaved differently, each in its own order: as partitions arrive."""
    queues: dict[str, list[Event]] = {}
    for e in events:
        queues.setdefault(e.session_id, []).append(e)
    rng, out = random.Random(seed), []
    while queues:
        sid = rng.choice(sorted(queues))
        out.append(queues[sid].pop(0))
        if not queues[sid]:
            del queues[sid]
    return out


@pytest.fixture
def replay(settings: Settings):  # type: ignore[no-untyped-def]
    """Apply events to a store of their own (in batches of `size`); its digest."""
    loop = asyncio.new_event_loop()
    made: list[RedisStore] = []

    def run(events: list[Event], size: int) -> dict[str, object]:
        # Small caps, so trimming (the order-dependent part) really happens.
        s = dataclasses.replace(settings.isolated(uid("dig")), neighbours_max=30, popular_max=100)
        st = RedisStore.connect(s)
        made.append(st)
        for n in range(0, len(events), size):
            loop.run_until_complete(st.apply_events(events[n : n + size]))
        return digest.take(s)

    yield run
    for st in made:
        loop.run_until_complete(st.clear())
        loop.run_until_complete(st.close())
    loop.close()


def test_replays_in_another_order_agree_and_a_lost_or_doubled_event_does_not(replay) -> None:  # type: ignore[no-untyped-def]
    events = _events(3000)
    a = replay(events, 500)
    b = replay(_interleaved(events, 1), 7)
    same = digest.compare(a, b, 0.9)
    assert same["passed"], digest.table(same)
    assert {"s:recent", "s:info", "s:ids", "i:co", "g:pop"} <= set(same["kinds"])
    assert any(not k.get("exact") for k in same["kinds"].values())  # both kinds are compared

    lost = replay([e for n, e in enumerate(events) if n != 1234], 500)
    dropped = digest.compare(a, lost, 0.9)
    assert not dropped["passed"]
    assert not dropped["kinds"]["s:ids"]["agree"] and not dropped["kinds"]["s:info"]["agree"]

    twice = events[:]
    twice.insert(2000, dataclasses.replace(events[1999], event_id="again"))  # applied twice
    doubled = digest.compare(a, replay(twice, 500), 0.9)
    assert not doubled["passed"] and not doubled["kinds"]["s:recent"]["agree"]


def test_the_command_writes_and_compares_digests(settings: Settings, tmp_path: Path) -> None:
    own = settings.isolated(uid("digcli"))
    loop = asyncio.new_event_loop()
    st = RedisStore.connect(own)
    try:
        loop.run_until_complete(st.apply_events(_events(300)))
        first, second = tmp_path / "a.json", tmp_path / "b.json"
        out = run_cli(own, "digest", "--json", str(first))
        assert "s:recent" in out
        run_cli(own, "digest", "--json", str(second))
        assert "digests agree" in run_cli(own, "digest", "--compare", str(first), str(second))
        loop.run_until_complete(st.apply_events([Event("extra", "view", "new", "i1", TS)]))
        run_cli(own, "digest", "--json", str(second))
        differ = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream_reco.cli",
                "digest",
                "--compare",
                str(first),
                str(second),
            ],
            env={**os.environ, **own.to_env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert differ.returncode == 1 and "DIFFER" in differ.stdout
    finally:
        loop.run_until_complete(st.clear())
        loop.run_until_complete(st.close())
        loop.close()


def test_an_empty_or_mistyped_prefix_is_no_digest(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="nothing to digest"):
        digest.take(settings.isolated(uid("nothing")))
    with pytest.raises(ConfigError, match="no state"):
        digest.compare(
            {"format": digest.FORMAT, "kinds": {}}, {"format": digest.FORMAT, "kinds": {}}, 0.98
        )
