"""The Redis store against a real redis-server: idempotency, caps, frozen mode, determinism."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from stream_reco import pipeline
from stream_reco.bench.fleet import free_port
from stream_reco.config import Settings
from stream_reco.decay import add, log_weight, value_at
from stream_reco.errors import ERRORS, StoreFormatError
from stream_reco.events import CatalogItem, Event, Tombstone, decode_event
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage.redis_store import RedisStore, item_ttl_s
from stream_reco.storage.shared import EXAMPLE_MAX_BYTES
from tests.integration.conftest import inspect, uid

TS = 1_700_000_000_000


def ev(n: int, session: str, item: str, kind: str = "view", ts: int | None = None) -> Event:
    return Event(f"{session}-e{n}", kind, session, item, TS + n * 1000 if ts is None else ts)


@pytest.fixture
def store(settings: Settings) -> Iterator[tuple[RedisStore, asyncio.AbstractEventLoop]]:
    """A store on its own key prefix, cleared afterwards."""
    loop = asyncio.new_event_loop()
    s = dataclasses.replace(
        settings,
        key_prefix=uid("store"),
        neighbours_max=5,
        popular_max=8,
        session_max_events=4,
        session_max_items=4,
        require_catalog=False,
    )
    st = RedisStore.connect(s)
    yield st, loop
    loop.run_until_complete(st.clear())
    loop.run_until_complete(st.close())
    loop.close()


def test_replayed_batch_changes_nothing(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    batch = [ev(0, "s", "A"), ev(1, "s", "B", "add_to_cart"), ev(2, "s", "C", "purchase")]
    assert loop.run_until_complete(st.apply_events(batch)) == [True, True, True]
    before = loop.run_until_complete(st.inspect_item("A"))
    session = loop.run_until_complete(st.read_session("s"))
    assert loop.run_until_complete(st.apply_events(batch)) == [False, False, False]
    assert loop.run_until_complete(st.inspect_item("A")) == before
    assert loop.run_until_complete(st.read_session("s")) == session
    assert session.events == 3 and session.cart == {"B": 1} and session.purchased == {"C"}


def test_cart_follows_add_remove_purchase(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    events = [
        dataclasses.replace(ev(0, "c", "A", "add_to_cart"), quantity=3),
        dataclasses.replace(ev(1, "c", "A", "remove_from_cart"), quantity=1),
        ev(2, "c", "B", "add_to_cart"),
        dataclasses.replace(ev(3, "c", "B", "remove_from_cart"), quantity=5),
        ev(4, "c", "D", "add_to_cart"),
        ev(5, "c", "D", "purchase"),
    ]
    loop.run_until_complete(st.apply_events(events))
    session = loop.run_until_complete(st.read_session("c"))
    assert session.cart == {"A": 2}
    assert session.purchased == {"D"}


def test_memory_is_bounded(store: tuple[RedisStore, asyncio.AbstractEventLoop]) -> None:
    st, loop = store
    s = st.settings
    events = [ev(n, "long", f"I{n}") for n in range(30)]
    loop.run_until_complete(st.apply_events(events))
    session = loop.run_until_complete(st.read_session("long"))
    assert len(session.recent) == s.session_max_events
    assert session.recent[0].item_id == "I29"  # newest kept
    assert len(loop.run_until_complete(st.read_popular(100))) == s.popular_max
    many = [ev(100 + n, f"hub{n}", "HUB") for n in range(20)]
    many += [ev(200 + n, f"hub{n}", f"N{n}") for n in range(20)]
    loop.run_until_complete(st.apply_events(many))
    assert len(loop.run_until_complete(st.read_neighbours(["HUB"], 100))["HUB"]) == s.neighbours_max


def test_frozen_mode_updates_the_session_only(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    loop.run_until_complete(st.apply_events([ev(0, "warm", "A"), ev(1, "warm", "B")]))
    before_pop = loop.run_until_complete(st.read_popular(100))
    before_nb = loop.run_until_complete(st.read_neighbours(["A", "B", "X"], 100))
    frozen = [ev(2, "f", "A"), ev(3, "f", "X", "add_to_cart"), ev(4, "f", "B", "purchase")]
    new = loop.run_until_complete(pipeline.ingest(st, frozen, learn=False))
    assert len(new) == 3
    assert loop.run_until_complete(st.read_popular(100)) == before_pop
    assert loop.run_until_complete(st.read_neighbours(["A", "B", "X"], 100)) == before_nb
    session = loop.run_until_complete(st.read_session("f"))
    assert session.cart == {"X": 1} and session.purchased == {"B"} and session.events == 3


def test_heavier_event_types_weigh_more(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    events = [ev(0, "w1", "A"), ev(1, "w1", "V"), ev(2, "w2", "A"), ev(3, "w2", "P", "purchase")]
    loop.run_until_complete(st.apply_events(events))
    row = dict(loop.run_until_complete(st.read_neighbours(["A"], 10))["A"])
    assert row["P"] > row["V"] * 4


def test_replay_is_deterministic(settings: Settings) -> None:
    """The same events in two fresh stores give identical models: event time drives decay."""
    catalog = make_catalog(n_items=60, seed=3)
    events = []
    for raw in Storefront(catalog, seed=3, run_id="det").stream(n_sessions=80):
        events.append(
            Event(
                str(raw["event_id"]),
                str(raw["type"]),
                str(raw["session_id"]),
                str(raw["item_id"]),
                int(raw["ts"]),
                quantity=int(raw.get("quantity", 1)),
            )
        )

    async def replay(prefix: str, batch: int) -> list[object]:
        st = RedisStore.connect(dataclasses.replace(settings, key_prefix=prefix))
        try:
            for n in range(0, len(events), batch):
                await st.apply_events(events[n : n + batch])
            return [await st.inspect_item(str(c["item_id"])) for c in catalog]
        finally:
            await st.clear()
            await st.close()

    one = asyncio.run(replay(uid("det1"), 37))
    two = asyncio.run(replay(uid("det2"), 1))  # batch boundaries must not matter
    assert one == two
    assert any(doc["neighbours"] for doc in one)  # type: ignore[index]


def test_recommend_filters_and_explains(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    s = dataclasses.replace(st.settings, require_catalog=True)
    st.settings = s
    loop.run_until_complete(
        st.apply_catalog(
            [
                CatalogItem("A", "Mug"),
                CatalogItem("B", "Pot"),
                CatalogItem("C", "Cup", in_stock=False),
                CatalogItem("D", "Tray"),
            ]
        )
    )
    history = [ev(n, f"h{n}", "A") for n in range(3)] + [
        ev(10 + n, f"h{n}", x, "add_to_cart") for n, x in enumerate("BCD")
    ]
    loop.run_until_complete(st.apply_events(history))
    loop.run_until_complete(st.apply_catalog([Tombstone("D")]))
    loop.run_until_complete(st.apply_events([ev(50, "me", "A", "add_to_cart")]))
    picks = loop.run_until_complete(pipeline.recommend(st, s, "me", 10)).picks
    assert [p.item_id for p in picks] == ["B"]
    assert "Mug (A)" in picks[0].reason and "cart" in picks[0].reason


def test_sequence_reason_names_its_source_by_title(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    # One co-occurrence source only (the cart item), so the viewed item is a sequence source alone.
    s = dataclasses.replace(st.settings, require_catalog=True, cooc_window=1)
    loop.run_until_complete(
        st.apply_catalog(
            [
                CatalogItem("V", "Lamp"),
                CatalogItem("X", "Bulb"),
                CatalogItem("C", "Desk"),
            ]
        )
    )
    history = [ev(n, f"q{n}", "V") for n in range(3)] + [ev(10 + n, f"q{n}", "X") for n in range(3)]
    loop.run_until_complete(st.apply_events(history))
    mine = [ev(50, "me2", "C", "add_to_cart"), ev(51, "me2", "V")]
    loop.run_until_complete(st.apply_events(mine, learn=False))
    # Excluding V keeps it out of the candidate list, so only the reason needs its title.
    picks = loop.run_until_complete(pipeline.recommend(st, s, "me2", 5, exclude=["V"])).picks
    assert picks[0].item_id == "X"
    assert "next after Lamp (V)" in picks[0].reason


def test_an_event_years_old_first_never_freezes_ingestion(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    # Issue 12: the first event once fixed a decay landmark, and one dated years back made
    # every current event dead-letter ("half-lives past the decay landmark") for good.
    st, loop = store
    ten_years = 10 * 365 * 86_400_000
    assert loop.run_until_complete(st.apply_events([ev(0, "old", "OLD", ts=TS - ten_years)]))
    now = [ev(n, f"s{n % 3}", f"NEW{n % 4}", ts=TS + n) for n in range(1, 13)]
    assert loop.run_until_complete(st.apply_events(now)) == [True] * 12
    far = [ev(20, "later", "LATER", ts=TS + ten_years), ev(21, "later", "NEW0", ts=TS + 1)]
    assert loop.run_until_complete(st.apply_events(far)) == [True, True]
    popular = [i for i, _ in loop.run_until_complete(st.read_popular(10))]
    assert popular[0] == "LATER" and popular[-1] == "OLD"  # newest weighs most
    seen = loop.run_until_complete(st.inspect_item("LATER"))
    assert seen["popularity"] == pytest.approx(st.settings.weight("view"))  # at its own time
    assert loop.run_until_complete(st.inspect_item("OLD"))["popularity"] == 0.0


def test_the_same_events_in_any_order_and_batching_give_the_same_scores(settings: Settings) -> None:
    catalog = make_catalog(30, seed=4)
    shop = Storefront(catalog, seed=5, run_id="order", start_ms=TS).stream(concurrency=20)
    decoded = [decode_event(orjson.dumps(e)) for e in itertools.islice(shop, 400)]
    events = [e for e in decoded if isinstance(e, Event)]
    # Sessions interleaved otherwise, each in its own order: as partitions may arrive.
    queues: dict[str, list[Event]] = {}
    for e in events:
        queues.setdefault(e.session_id, []).append(e)
    rng, shuffled = random.Random(6), []
    while queues:
        sid = rng.choice(sorted(queues))
        shuffled.append(queues[sid].pop(0))
        if not queues[sid]:
            del queues[sid]
    loop = asyncio.new_event_loop()
    stores = [RedisStore.connect(settings.isolated(uid(f"order{n}"))) for n in range(2)]
    try:
        read = []
        for st, stream, size in ((stores[0], events, 400), (stores[1], shuffled, 7)):
            for n in range(0, len(stream), size):
                loop.run_until_complete(st.apply_events(stream[n : n + size]))
            items = [c["item_id"] for c in catalog]
            read.append(
                (
                    loop.run_until_complete(st.read_popular(100)),
                    loop.run_until_complete(st.read_neighbours(items, 100)),
                    loop.run_until_complete(st.read_neighbours(items, 100, kind="next")),
                )
            )
        (pop_a, co_a, next_a), (pop_b, co_b, next_b) = read
        assert len(pop_a) > 10

        def same(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> None:
            assert dict(a) == pytest.approx(dict(b), rel=1e-9)

        same(pop_a, pop_b)
        for item in co_a:
            same(co_a[item], co_b[item])
            same(next_a[item], next_b[item])
    finally:
        for st in stores:
            loop.run_until_complete(st.clear())
            loop.run_until_complete(st.close())
        loop.close()


def test_a_store_written_with_a_decay_landmark_is_refused(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    loop.run_until_complete(st.check_format())  # a fresh store is fine
    loop.run_until_complete(st.client.set(st.keys.legacy_global("landmark"), TS))
    with pytest.raises(StoreFormatError, match="fresh store"):
        loop.run_until_complete(st.check_format())


def test_the_worker_and_inspect_refuse_a_store_of_the_old_format(own: Settings) -> None:
    client = redis.Redis.from_url(own.redis_url)
    try:
        client.set(f"{own.key_prefix}:g:landmark", TS)  # what an older version wrote
        client.set(f"{own.key_prefix}:g:applied", 1)
    finally:
        client.close()
    worker = _start_worker(own)
    assert worker.returncode == 2 and "fresh store" in worker.stderr, worker.stderr[-2000:]
    looked = inspect(own, "--item", "A")
    assert looked.returncode == 2 and "fresh store" in looked.stderr


def test_the_apply_script_adds_as_decay_py_says(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    s, day = st.settings, 86_400_000
    times = [TS - 3 * day, TS - day // 3, TS, TS - 2 * day]  # out of order on purpose
    events = [ev(n, f"v{n}", "A", ts=t) for n, t in enumerate(times)]
    events.append(dataclasses.replace(ev(9, "v9", "A", "add_to_cart", ts=TS), quantity=2))
    loop.run_until_complete(st.apply_events(events))
    expected: float | None = None
    for e in events:
        lw = log_weight(s.weight(e.type), e.ts, s.pop_half_life_s)
        assert lw is not None
        expected = add(expected, lw)
    assert expected is not None
    seen = loop.run_until_complete(st.inspect_item("A"))
    assert seen["event_clock_ts"] == TS
    assert seen["popularity"] == pytest.approx(value_at(expected, TS, s.pop_half_life_s), abs=1e-6)
    by_hand = sum(
        s.weight(e.type) * 2 ** ((e.ts - TS) / (s.pop_half_life_s * 1000)) for e in events
    )
    assert seen["popularity"] == pytest.approx(by_hand, abs=1e-6)  # inspect rounds to 6 places


def test_cart_and_purchases_are_capped_and_item_lists_expire(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    cap = st.settings.session_max_items
    adds = [ev(n, "hoarder", f"I{n}", "add_to_cart") for n in range(cap + 6)]
    buys = [ev(100 + n, "hoarder", f"B{n}", "purchase") for n in range(cap + 6)]
    assert all(loop.run_until_complete(st.apply_events(adds + buys)))
    session = loop.run_until_complete(st.read_session("hoarder"))
    assert len(session.cart) == cap and len(session.purchased) == cap
    more = [ev(300, "hoarder", "I0", "add_to_cart")]  # an item already in it still counts up
    loop.run_until_complete(st.apply_events(more))
    assert loop.run_until_complete(st.read_session("hoarder")).cart.get("I0") == 2
    loop.run_until_complete(st.apply_events([ev(400, "pair", "X"), ev(401, "pair", "Y")]))
    for name in ("co", "sessions"):
        ttl = loop.run_until_complete(st.client.ttl(st.keys.item("Y", name)))
        assert 0 < ttl <= item_ttl_s(st.settings), name
    made_by_partner = loop.run_until_complete(st.client.ttl(st.keys.item("X", "next")))
    assert 0 < made_by_partner <= item_ttl_s(st.settings)  # written on Y's event, still expires


def test_the_learners_queue_is_bounded_in_bytes_as_well_as_count(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    st, loop = store
    before = ERRORS["example_too_big"]
    huge, fine = b"x" * (EXAMPLE_MAX_BYTES + 1), b'{"ok": 1}'
    loop.run_until_complete(st.push_examples([huge, fine, fine, fine], cap=2))
    assert ERRORS["example_too_big"] == before + 1
    queued = loop.run_until_complete(st.pop_examples(10))
    assert queued == [fine, fine]  # the cap by count, without the oversized one


def test_the_worker_refuses_a_redis_that_may_evict_keys(own: Settings, tmp_path: Path) -> None:
    # A Redis of its own: the shared one's policy is never touched.
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--maxmemory-policy", "volatile-lru"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                assert time.monotonic() < deadline, "the throwaway redis-server did not start"
                time.sleep(0.05)
        client.close()
        worker = _start_worker(dataclasses.replace(own, redis_url=f"redis://127.0.0.1:{port}/0"))
    finally:
        server.terminate()
        server.wait(10)
    assert worker.returncode == 2, worker.stderr[-2000:]
    assert "maxmemory-policy volatile-lru" in worker.stderr and "noeviction" in worker.stderr


def _start_worker(settings: Settings) -> subprocess.CompletedProcess[str]:
    """`stream-reco worker` run to its end: for the checks that refuse to start it."""
    return subprocess.run(
        [sys.executable, "-m", "stream_reco.cli", "worker"],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "reply",
    [
        "OOM command not allowed when used memory > 'maxmemory'.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist",
        "BUSY Redis is busy running a script.",
    ],
)
def test_a_full_or_busy_redis_is_waited_out_even_inside_a_pipeline(
    store: tuple[RedisStore, asyncio.AbstractEventLoop], reply: str
) -> None:
    # redis-py makes OOM an OutOfMemoryError without the word, and a pipeline wraps the text:
    # both must still read as "wait", or a full Redis would dead-letter every event.
    st, loop = store
    script = "return redis.error_reply(ARGV[1])"
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        pipe = st.client.pipeline(transaction=False)
        pipe.eval(script, 0, reply if calls < 3 else "")
        if calls < 3:
            await pipe.execute()
        return "applied"

    assert loop.run_until_complete(st._retry("test", call)) == "applied"
    assert calls == 3
    with pytest.raises(redis.exceptions.ResponseError):  # a real error is not retried
        loop.run_until_complete(st._retry("test", lambda: st.client.eval(script, 0, "ERR no")))
