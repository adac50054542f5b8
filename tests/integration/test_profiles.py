"""Returning users' profiles (storage/profiles.py) on a single Redis node and on the 3-primary
Redis Cluster: joined exactly once, bounded, read by a returning user's first answer, never
written by frozen evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from stream_reco import effects, pipeline, simulator
from stream_reco.config import Settings
from stream_reco.events import Event, Rejected, decode_event
from stream_reco.runtime import Runtime
from stream_reco.storage import connect
from stream_reco.storage.apply import Position
from stream_reco.storage.keys import Keys
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid
from tests.integration.own_store import OwnStore, own_store

TS = 1_750_000_000_000


class On(OwnStore):
    def dump(self, user_id: str) -> dict[str, Any]:
        """Every key of a user, as raw Redis data (scores exactly as stored)."""
        client = connect.sync_client(self.settings)
        k = Keys(self.settings.key_prefix)
        try:
            return {
                "profile": client.zrange(k.user(user_id, "profile"), 0, -1, withscores=True),
                "sessions": client.zrange(k.user(user_id, "sessions"), 0, -1, withscores=True),
                "marks": client.hgetall(k.user(user_id, "marks")),
            }
        finally:
            client.close()


@pytest.fixture(params=["node", "cluster"])
def on(request: pytest.FixtureRequest, settings: Settings) -> Iterator[On]:
    # No catalogue: the items are known by behaviour only.
    with own_store(request, settings, "profiles", On, require_catalog=False) as mine:
        yield mine


def _session(sid: str, items: str, user: str | None, start: int = 0) -> list[Event]:
    return [
        Event(f"{sid}/{n}", "view", sid, item, TS + (start + n) * 1000, user_id=user)
        for n, item in enumerate(items, start)
    ]


def _batch(on: On, events: list[Event], at: list[Position | None] | None = None) -> None:
    on(pipeline.handle_events(on.store, on.settings, events, Runtime(), positions=at))


def test_a_login_joins_the_history_once_under_redelivery(on: On) -> None:
    # Anonymous first, then the login: the session's earlier items join the profile too.
    first = _session("s1", "AB", None)
    login = _session("s1", "CA", "u1", start=2)
    other = _session("s2", "D", "u1")  # interleaved with s1 in the same partition
    batch = [login[0], other[0], login[1]]
    _batch(on, first, [Position("ev", 0, n) for n in range(2)])
    at: list[Position | None] = [Position("ev", 0, n) for n in range(2, 5)]
    _batch(on, batch, at)
    once = on.dump("u1")
    assert {m.decode() for m, _ in once["profile"]} == set("ABCD")
    assert {m.decode() for m, _ in once["sessions"]} == {"s1", "s2"}
    _batch(on, batch, at)  # the same batch again, at the same positions
    assert on.dump("u1") == once
    # Re-sent with new offsets: known by the event ids.
    _batch(on, batch, [Position("ev", 0, n) for n in range(10, 13)])
    again = on.dump("u1")
    assert (again["profile"], again["sessions"]) == (once["profile"], once["sessions"])
    # Anonymous sessions write no user keys.
    assert on.dump("") == {"profile": [], "sessions": [], "marks": {}}


def test_later_events_of_a_signed_in_session_add_once(on: On) -> None:
    _batch(on, _session("s3", "AB", "u2"), [Position("ev", 1, n) for n in range(2)])
    later = _session("s3", "EE", "u2", start=2)
    at: list[Position | None] = [Position("ev", 1, n) for n in range(2, 4)]
    _batch(on, later, at)
    got = on.dump("u2")
    assert {m.decode() for m, _ in got["profile"]} == set("ABE")
    _batch(on, later, at)
    assert on.dump("u2") == got
    # Two views of E add up (log-space decayed sum), one of A does not reach it.
    scores = {m.decode(): s for m, s in got["profile"]}
    assert scores["E"] > scores["A"]
    # A batch whose events of the session carry no user id joins nothing (no read per
    # anonymous session and batch: a signed-in storefront sends it with every event).
    _batch(on, _session("s3", "Q", None, start=4), [Position("ev", 1, 4)])
    assert on.dump("u2")["profile"] == got["profile"]


def test_a_session_pushed_out_of_the_bound_and_back_counts_its_history_once(on: On) -> None:
    settings = dataclasses.replace(on.settings, profile_max_sessions=2)
    store = RedisStore.connect(settings)
    try:
        on(pipeline.handle_events(store, settings, _session("back", "X", "u7")))
        before = dict(on.dump("u7")["profile"])
        for n, item in enumerate("YZ"):  # two newer sessions push `back` out of the bound
            on(pipeline.handle_events(store, settings, _session(f"o{n}", item, "u7", 10 + n)))
        assert {m.decode() for m, _ in on.dump("u7")["sessions"]} == {"o0", "o1"}
        on(pipeline.handle_events(store, settings, _session("back", "W", "u7", start=20)))
        after = dict(on.dump("u7")["profile"])
    finally:
        on(store.close())
    # X counted once: its history (X, W) did not join a second time; W added itself.
    assert after[b"X"] == before[b"X"]
    assert b"W" in after
    assert b"back" in {m for m, _ in on.dump("u7")["sessions"]}


def test_a_bot_session_with_a_user_id_feeds_no_profile(on: On) -> None:
    settings = dataclasses.replace(on.settings, bot_max_repeats=3)
    store = RedisStore.connect(settings)
    try:
        spam = [
            Event(f"bot/{n}", "view", "bot", "S", TS + n * 1000, user_id=None) for n in range(6)
        ]
        applied = on(store.apply_events(spam))
        assert applied.flagged(5), "the guard flags the repeated views"
        login = Event("bot/6", "view", "bot", "T", TS + 6000, user_id="u8")
        on(store.apply_events([login]))
        # Even given to the profile step as if it were learnable (a redelivery the guard's
        # answer did not flag): the flagged session's history joins nobody.
        on(store.profiles.update([login], [None]))
        on(effects.remember_users(store, [login], None))
    finally:
        on(store.close())
    assert on.dump("u8") == {"profile": [], "sessions": [], "marks": {}}


def test_the_profile_is_bounded(on: On) -> None:
    settings = dataclasses.replace(on.settings, profile_max_items=5, profile_max_sessions=3)
    store = RedisStore.connect(settings)
    try:
        for n in range(6):
            events = _session(f"b{n}", f"{n}abcdefgh", "u3", start=10 * n)
            on(pipeline.handle_events(store, settings, [
                dataclasses.replace(e, item_id=f"{e.item_id}{n}") for e in events
            ]))  # fmt: skip
        profile, sessions = on(store.profiles.read("u3"))
    finally:
        on(store.close())
    assert len(profile) == 5
    assert sessions == ["b5", "b4", "b3"]  # the newest sessions stay, newest first
    # The newest items weigh most (decayed): the last session's lead the profile.
    assert all(item.endswith("5") for item, _ in profile)


def test_a_returning_users_first_answer_starts_from_the_profile(on: On) -> None:
    # What goes with what: X with Y, P with Q (other shoppers, anonymous).
    trained = []
    for n in range(5):
        trained += _session(f"t{n}", "XY", None, start=10 * n)
        trained += _session(f"p{n}", "PQ", None, start=10 * n + 5)
    for n in range(10):  # the most popular pair, which anonymous short sessions are shown
        trained += _session(f"z{n}", "ZW", None, start=10 * n + 7)
    _batch(on, trained)
    _batch(on, _session("old", "X", "u4"))  # the user's first visit: X only
    live = Runtime()
    # What goes with the profile's items counts too (the default blend leaves it out).
    on.settings = dataclasses.replace(on.settings, blend="profile_co=0.2")
    asked = on(pipeline.recommend(on.store, on.settings, "new1", 10, live=live, user_id="u4"))
    anon = on(pipeline.recommend(on.store, on.settings, "new2", 10, live=live))
    mine = [p.item_id for p in asked.picks]
    assert set(mine[:2]) == {"X", "Y"}
    assert [p.item_id for p in anon.picks][:2] == ["W", "Z"]
    # The session's own stored user works as well as the request's, while it is short: after
    # what goes with P, the profile's items come before the popular ones.
    _batch(on, _session("new3", "P", "u4"))
    _batch(on, _session("new4", "P", None))
    stored = on(pipeline.recommend(on.store, on.settings, "new3", 10, live=live))
    plain = on(pipeline.recommend(on.store, on.settings, "new4", 10, live=live))
    assert [p.item_id for p in stored.picks][:3] == ["Q", "X", "Y"]
    assert [p.item_id for p in plain.picks][:3] == ["Q", "W", "Z"]
    reasons = {p.item_id: p.reason for p in stored.picks}
    assert reasons["Y"] == "often chosen with X you viewed"


def test_frozen_ingestion_writes_no_profile(on: On) -> None:
    events = _session("f1", "AB", "u5")
    on(pipeline.ingest(on.store, events, learn=False))
    on(effects.remember_users(on.store, events, None, learn=False))
    assert on.dump("u5") == {"profile": [], "sessions": [], "marks": {}}
    # ... while the session still knows its user (session state).
    assert on(on.store.read_session("f1")).user_id == "u5"


def test_the_cluster_gathers_the_profile_as_one_node_does(
    settings: Settings, cluster: Settings
) -> None:
    events: list[Event] = []
    for n in range(6):
        events += _session(f"g{n}", "ABCD"[n % 4] + "EFG"[n % 3], None, start=10 * n)
    events += _session("visit1", "ABE", "u6", start=100) + _session("visit2", "CF", "u6", 200)
    events += _session("short", "G", "u6", start=300)
    got = []
    for base in (settings, cluster):
        prefix = uid(f"{settings.key_prefix}-profiles-eq")
        one = On(dataclasses.replace(base, key_prefix=prefix, require_catalog=False))
        try:
            _batch(one, events)
            read = [
                one(
                    one.store.gather(
                        sid, 30, 3, 3, True, True, user_id=user, profile=20, profile_sources=3
                    )
                )
                for sid, user in (("short", None), ("fresh", "u6"), ("fresh", None))
            ]
            got.append(read)
        finally:
            one(one.store.clear())
            one(one.store.close())
            one.loop.close()
    node, on_cluster = got
    assert node == on_cluster
    short, fresh, anonymous = node
    # The session's stored user: its profile (this visit's own item too), the first three
    # items' co-occurrence lists.
    assert {i for i, _ in short.profile} == set("ABCEFG")
    assert list(short.profile_co) == [i for i, _ in short.profile][:3]
    assert {i for i, _ in fresh.profile} == set("ABCEFG")
    assert anonymous.profile == [] and anonymous.profile_co == {}


def test_the_simulated_shop_end_to_end(on: On) -> None:
    """Storefront users come back: a user's next visit starts from what their first one did
    (its items and what goes with them), an anonymous visit from what is popular."""
    shop = simulator.Storefront(simulator.make_catalog(200, seed=1), seed=7, run_id="ret")
    raw = list(shop.stream(n_sessions=400))
    events = [e for e in map(_decoded, raw) if isinstance(e, Event)]
    for n in range(0, len(events), 200):
        _batch(on, events[n : n + 200])
    visits: dict[str, set[str]] = {}
    for e in events:
        if e.user_id:
            visits.setdefault(e.user_id, set()).add(e.session_id)
    user = min(u for u, s in visits.items() if len(s) == 1)  # one earlier visit, seeded
    mine, _ = on(on.store.profiles.read(user))
    assert mine, "the signed-in visit joined its user's profile"
    tops = [i for i, _ in mine[:3]]
    near = on(on.store.read_neighbours(tops, 30))
    related = {i for i, _ in mine} | {i for row in near.values() for i, _ in row}
    live = Runtime()
    back = on(pipeline.recommend(on.store, on.settings, "back", 5, live=live, user_id=user))
    anon = on(pipeline.recommend(on.store, on.settings, "anon", 5, live=live))
    assert {p.item_id for p in back.picks} <= related
    popular = [i for i, _ in on(on.store.read_popular(5))]
    assert [p.item_id for p in anon.picks] == popular
    assert [p.item_id for p in back.picks] != popular


def _decoded(doc: dict[str, object]) -> Event | Rejected:
    return decode_event(orjson.dumps(doc))
