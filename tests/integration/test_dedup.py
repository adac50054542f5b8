"""Exactly-once effects against a real redis-server: by Kafka position, by a session's ids."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator, Sequence

import pytest
import redis

from stream_reco.config import Settings
from stream_reco.errors import StoreRewound
from stream_reco.events import Event
from stream_reco.storage.apply import Position, resume_at
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid

TS = 1_700_000_000_000
STREAM = "reco-events:topicid1"


def ev(n: int, session: str, item: str, kind: str = "view") -> Event:
    return Event(f"{session}-e{n}", kind, session, item, TS + n * 1000)


def at(first: int, count: int, partition: int = 0, stream: str = STREAM) -> list[Position]:
    return [Position(stream, partition, first + n) for n in range(count)]


@pytest.fixture
def store(settings: Settings) -> Iterator[tuple[RedisStore, asyncio.AbstractEventLoop]]:
    loop = asyncio.new_event_loop()
    s = dataclasses.replace(settings, key_prefix=uid("dedup"), session_max_events=4)
    st = RedisStore.connect(s)
    yield st, loop
    loop.run_until_complete(st.clear())
    loop.run_until_complete(st.close())
    loop.close()


def apply(
    st: RedisStore,
    loop: asyncio.AbstractEventLoop,
    events: Sequence[Event],
    positions: Sequence[Position | None] | None = None,
) -> list[bool]:
    return loop.run_until_complete(st.apply_events(events, positions=positions))


def applied(st: RedisStore, loop: asyncio.AbstractEventLoop) -> int:
    return loop.run_until_complete(st.applied_count())


def keys(st: RedisStore) -> list[str]:
    client = redis.Redis.from_url(st.settings.redis_url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match=f"{st.settings.key_prefix}:*", count=1000))
    finally:
        client.close()


def expire_sessions(st: RedisStore) -> None:
    """What every session lifetime running out does: each key in a session's slot is gone."""
    client = redis.Redis.from_url(st.settings.redis_url)
    try:
        gone = [k for k in keys(st) if not k.startswith(f"{st.settings.key_prefix}:i:")]
        gone = [k for k in gone if ":g:" not in k]
        if gone:
            client.delete(*gone)
    finally:
        client.close()


def test_a_redelivery_after_its_session_expired_changes_nothing(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    """A group reset to `earliest` replays days of the topic: long after the sessions (and any
    per-event mark with a lifetime) expired, the offsets still say what was applied."""
    st, loop = store
    batch = [ev(0, "s", "A"), ev(1, "s", "B", "add_to_cart"), ev(2, "t", "A")]
    assert apply(st, loop, batch, at(0, 3)) == [True, True, True]
    expire_sessions(st)
    assert apply(st, loop, batch, at(0, 3)) == [False, False, False]
    assert applied(st, loop) == 3
    assert loop.run_until_complete(st.read_session("s")).events == 0  # not brought back
    # The next offsets are new events.
    assert apply(st, loop, [ev(3, "s", "C")], at(3, 1)) == [True]


def test_a_resent_event_is_known_by_its_id_at_a_new_offset(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    """A storefront that re-sends an event gives it a new offset: its session's ids know it."""
    st, loop = store
    first = [ev(0, "s", "A"), ev(1, "s", "B")]
    assert apply(st, loop, first, at(0, 2)) == [True, True]
    again = [ev(1, "s", "B"), ev(2, "s", "C"), ev(0, "s", "A")]
    assert apply(st, loop, again, at(2, 3)) == [False, True, False]
    # Events from outside Kafka (the evaluator, tests) have only the ids.
    assert apply(st, loop, [ev(2, "s", "C"), ev(3, "s", "D")]) == [False, True]
    assert loop.run_until_complete(st.read_session("s")).events == 4
    assert applied(st, loop) == 4


def test_memory_is_bounded_by_the_state_not_the_traffic(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    """No key per event: a session's ids are capped like its events and expire with it."""
    st, loop = store
    items = [f"I{n % 3}" for n in range(400)]
    apply(st, loop, [ev(n, "s", items[n]) for n in range(10)], at(0, 10))
    after_ten = keys(st)
    apply(st, loop, [ev(n, "s", items[n]) for n in range(10, 400)], at(10, 390))
    assert keys(st) == after_ten
    client = redis.Redis.from_url(st.settings.redis_url, decode_responses=True)
    try:
        ids = st.keys.session("s", "ids")
        assert client.lrange(ids, 0, -1) == [f"s-e{n}" for n in range(399, 395, -1)]
        assert 0 < client.ttl(ids) <= st.settings.session_ttl_s
        offsets = client.hgetall(st.keys.global_("offsets"))
    finally:
        client.close()
    assert offsets == {f"{STREAM}:0": "399"}


def test_two_owners_of_a_partition_apply_each_offset_once(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    """During a rebalance the old owner may still apply a batch the new owner also fetched
    (from the last committed offset): overlapping runs apply each event once, in order."""
    st, loop = store
    # Three sessions: most redone events are older than their session's id memory (4), so
    # only the offsets can tell.
    events = [ev(n, f"s{n % 3}", f"I{n % 7}") for n in range(120)]
    positions = at(0, 120)
    old, new = slice(0, 50), slice(20, 90)
    got_old = apply(st, loop, events[old], positions[old])
    got_new = apply(st, loop, events[new], positions[new])
    got_rest = apply(st, loop, events[40:], positions[40:])
    assert sum(got_old) + sum(got_new) + sum(got_rest) == 120 == applied(st, loop)
    assert got_new[:30] == [False] * 30 and got_rest[:50] == [False] * 50
    counts = [loop.run_until_complete(st.read_session(f"s{k}")).events for k in range(3)]
    assert counts == [40] * 3


def test_partitions_and_topics_keep_their_own_offsets(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    """Offset 5 of partition 1 says nothing about offset 5 of partition 0, nor a topic deleted
    and made again under the same name (another id) about the old one."""
    st, loop = store
    assert apply(st, loop, [ev(n, "p0", "A") for n in range(6)], at(0, 6)) == [True] * 6
    assert apply(st, loop, [ev(n, "p1", "A") for n in range(6)], at(0, 6, 1)) == [True] * 6
    expire_sessions(st)
    remade = at(0, 6, 0, "reco-events:topicid2")
    assert apply(st, loop, [ev(n, "p0", "B") for n in range(6)], remade) == [True] * 6
    assert applied(st, loop) == 18


def test_a_session_can_reuse_an_id_once_it_left_the_memory(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    """What the ids cannot do, said plainly: outside Kafka, an id older than the session's last
    `session_max_events` events is new again (the contract asks ids unique per session)."""
    st, loop = store
    apply(st, loop, [ev(n, "s", "A") for n in range(5)])  # the memory holds 4
    assert apply(st, loop, [ev(0, "s", "A"), ev(4, "s", "A")]) == [True, False]


def test_a_failed_call_stops_the_calls_after_it_in_the_same_batch(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    """Redis runs every script call of a pipeline even when one fails: the calls after a
    failed one must not move the partition's offset past the events it never applied, or
    retrying them one at a time (guard.py) would find them 'applied' and lose them."""
    st, loop = store
    events = [ev(n, f"s{n}", f"I{n % 5}") for n in range(100)]  # two script calls
    client = redis.Redis.from_url(st.settings.redis_url)
    try:
        client.set(st.keys.session("s10", "recent"), "not a list")  # the 11th event fails
    finally:
        client.close()
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        apply(st, loop, events, at(0, 100))
    assert applied(st, loop) == 10
    # The failed call still wrote how far its partition got: the ten before the broken one.
    assert resume_at(st.settings, STREAM, [0]) == {0: 10}
    for n, e in enumerate(events):  # what the guard does next: one message at a time
        if n == 10:  # fails again, so the guard dead-letters it: never taken for applied
            with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
                apply(st, loop, [e], at(n, 1))
        else:
            apply(st, loop, [e], at(n, 1))
    # Every event but the broken one applied, each once.
    assert applied(st, loop) == 99
    assert [loop.run_until_complete(st.read_session(f"s{n}")).events for n in (9, 11, 64, 99)] == [
        1
    ] * 4


def test_a_store_that_lost_acknowledged_writes_is_caught_up_from_its_own_offsets(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    """A Redis restarted from an older snapshot is behind what this worker applied: applying
    newer events on top would leave a hole for ever. The store refuses until its partitions
    are read again from where it says it got to (what a consumer taking them over does)."""
    st, loop = store
    events = [ev(n, f"s{n % 7}", f"I{n % 5}") for n in range(120)]
    apply(st, loop, events[:50], at(0, 50))
    client = redis.Redis.from_url(st.settings.redis_url)
    try:
        snapshot = {k: client.dump(k) for k in keys(st)}  # the store as of 50 events
        apply(st, loop, events[50:100], at(50, 50))
        assert resume_at(st.settings, STREAM, [0, 1]) == {0: 100}
        client.delete(*keys(st))
        for k, dumped in snapshot.items():  # restarted from the snapshot
            client.restore(k, 0, dumped)
    finally:
        client.close()
    with pytest.raises(StoreRewound, match=f"acknowledged: {STREAM}:0: at 49, had reached 99$"):
        apply(st, loop, events[100:], at(100, 20))
    assert applied(st, loop) == 50  # nothing applied on top of the hole
    start = resume_at(st.settings, STREAM, [0])[0]
    assert start == 50
    apply(st, loop, events[start:], at(start, 120 - start))
    assert applied(st, loop) == 120
    sessions = [loop.run_until_complete(st.read_session(f"s{k}")).events for k in range(7)]
    assert sessions == [len(range(k, 120, 7)) for k in range(7)]


def test_each_partition_is_checked_against_what_was_applied_wherever_it_starts(
    store: tuple[RedisStore, asyncio.AbstractEventLoop],
) -> None:
    """A partition whose events first appear in a later script call of a batch is checked
    too: a store behind on it refuses, instead of applying on top of the hole."""
    st, loop = store
    p0 = [ev(n, f"a{n % 5}", "A") for n in range(200)]
    p1 = [ev(n, f"b{n % 5}", "B") for n in range(200)]
    apply(st, loop, p1[:100], at(0, 100, 1))
    client = redis.Redis.from_url(st.settings.redis_url)
    try:
        client.hset(st.keys.global_("offsets"), f"{STREAM}:1", "49")  # partition 1 went back
    finally:
        client.close()
    batch = p0[:70] + p1[100:110]  # partition 1 only in the second call of 64
    with pytest.raises(StoreRewound, match=f"{STREAM}:1: at 49, had reached 99"):
        apply(st, loop, batch, at(0, 70) + at(100, 10, 1))
