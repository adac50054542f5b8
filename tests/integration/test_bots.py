"""The bot and abuse guard (bots.py, storage/bots.lua) against a real Redis, on a single node and
on a Redis Cluster: flagged sessions teach nothing shared from their flag on, still get answers,
keep the same flags whatever is redelivered (a redelivered event of a flagged session is flagged),
are counted once, credit no experiment, and a machine-pace shilling attack stays out of
shoppers' lists (a human-pace one does not: the documented limit)."""

from __future__ import annotations

import asyncio
import dataclasses
import zlib
from collections import defaultdict
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from stream_reco import bots, pipeline
from stream_reco.config import Settings
from stream_reco.errors import ERRORS
from stream_reco.evaluation.data import read_sessions
from stream_reco.events import Event, decode_event
from stream_reco.experiments.assign import assign, unit
from stream_reco.experiments.store import Shown
from stream_reco.ranking import policy
from stream_reco.runtime import Runtime
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage import apply, connect
from stream_reco.storage.apply import Applied, Position
from stream_reco.storage.keys import Keys
from stream_reco.storage.redis_store import RedisStore
from stream_reco.storage.split import Split, pending
from tests.integration.conftest import clear_store, uid

T = TypeVar("T")
TS = 1_750_000_000_000
CATALOG = make_catalog(150, seed=7)
BATCH = 500
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
# The public data sets with their real event times (the others have synthetic ones).
TIMED = ("rsc15_100k/train.csv", "rsc15_100k/test.csv", "diginetica_sample/events.csv")
SHOPPERS = 1500  # the shop's sessions before a shilling attack
SHILLS = 5  # the attack's fake sessions
SHOPPERS_ASKED = 20  # new shoppers asked for their top 10 after an attack


def decoded(raw: Iterable[dict[str, object]]) -> list[Event]:
    out = [decode_event(orjson.dumps(e)) for e in raw]
    events = [e for e in out if isinstance(e, Event)]
    assert len(events) == len(out)
    return events


def positions(events: Sequence[Event], parts: int = 3) -> list[Position]:
    """Sessions keep their partition, as Kafka's keying does; offsets count per partition."""
    seen: dict[int, int] = defaultdict(int)
    out = []
    for e in events:
        p = zlib.crc32(e.session_id.encode()) % parts
        out.append(Position("events", p, seen[p]))
        seen[p] += 1
    return out


def flag_points(events: Sequence[Event], settings: Settings) -> dict[str, int]:
    """Per session the replica flags, the index (among its events) of the event that flags it."""
    by: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        by[e.session_id].append(e)
    lim = bots.Limits.of(settings)
    out = {}
    for sid, es in by.items():
        w = bots.Watch()
        past: list[tuple[str, str]] = []
        for n, e in enumerate(es):
            new = all(p[0] != e.item_id for p in past)
            same = bool(past) and past[0] == (e.item_id, e.type)
            if w.see(e.ts, new, e.type == "add_to_cart", same, lim):
                out[sid] = n
                break
            past.insert(0, (e.item_id, e.type))
            del past[lim.past :]
    return out


class On:
    """A store of the test's own on one backend, driven from plain test code."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.stores: list[RedisStore] = []

    def __call__(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def store(self, tag: str, **changes: Any) -> RedisStore:
        prefix = f"{self.settings.key_prefix}-{tag}"
        mine = dataclasses.replace(self.settings, key_prefix=prefix, **changes)
        self.stores.append(RedisStore.connect(mine))
        return self.stores[-1]

    def apply(
        self,
        store: RedisStore,
        events: Sequence[Event],
        at: Sequence[Position | None] | None = None,
        cuts: int = BATCH,
        learn: bool = True,
    ) -> Applied:
        where = at if at is not None else [None] * len(events)
        got: list[bool] = []
        flags: list[str] = []
        self.newly: list[str] = []  # the reasons of the sessions this call flagged
        for n in range(0, len(events), cuts):
            part = self(
                store.apply_events(events[n : n + cuts], positions=where[n : n + cuts], learn=learn)
            )
            got += part
            flags += part.flags
            self.newly += part.newly
        return Applied(got, flags)

    def shared(self, store: RedisStore) -> dict[str, list[tuple[bytes, float]]]:
        """Everything shared the events teach: popularity, item lists, session-kNN's lists."""
        client = connect.sync_client(store.settings)
        keys = Keys(store.settings.key_prefix)
        try:
            names = [keys.global_("pop")]
            for key in client.scan_iter(match=f"{keys.prefix}:i:*", count=1000):
                text = key.decode()
                if text.rsplit(":", 1)[1] in ("co", "next", "sessions"):
                    names.append(text)
            cut = len(keys.prefix)
            return {k[cut:]: client.zrange(k, 0, -1, withscores=True) for k in sorted(names)}
        finally:
            client.close()

    def bot_states(self, store: RedisStore, sessions: Iterable[str]) -> dict[str, bytes | None]:
        client = connect.sync_client(store.settings)
        keys = Keys(store.settings.key_prefix)
        try:
            names = sorted(set(sessions))
            return {s: client.hget(keys.session(s, "info"), "bot") for s in names}
        finally:
            client.close()

    def close(self) -> None:
        for st in self.stores:
            clear_store(st.settings)
            self(st.close())
        self.loop.close()


@pytest.fixture(params=["node", "cluster"])
def on(request: pytest.FixtureRequest, settings: Settings) -> Iterator[On]:
    base = settings if request.param == "node" else request.getfixturevalue("cluster")
    mine = On(dataclasses.replace(base, key_prefix=uid(f"{settings.key_prefix}-bots")))
    yield mine
    mine.close()


def _flag_of(state: bytes | None) -> str:
    """The sticky flag of a session's detector state (bots.lua)."""
    return bots.state(state)[1]


def _reasons(on: On, store: RedisStore, sessions: Iterable[str]) -> list[str]:
    """The flags of the flagged ones among `sessions`, as stored."""
    return [f for s in on.bot_states(store, sessions).values() if (f := _flag_of(s))]


def _mixed(seed: int, sessions: int, share: float) -> tuple[list[Event], Storefront]:
    shop = Storefront(CATALOG, seed=seed, run_id=f"m{seed}", start_ms=TS, bot_share=share)
    return decoded(shop.stream(sessions, concurrency=20)), shop


def test_a_flagged_session_teaches_nothing_shared_from_its_flag_on(on: On) -> None:
    events, shop = _mixed(seed=11, sessions=160, share=0.15)
    flagged_at = flag_points(events, on.settings)
    assert set(flagged_at) == set(shop.bots)  # every bot, and no shopper
    assert all(n <= on.settings.bot_max_new_items_per_min for n in flagged_at.values())
    # What the store must have learned: the shoppers' events and each bot's events before its
    # flag, exactly; nothing of what the bots sent after it.
    count: dict[str, int] = defaultdict(int)
    keep = []
    for e in events:
        n = count[e.session_id]
        count[e.session_id] += 1
        if e.session_id not in flagged_at or n < flagged_at[e.session_id]:
            keep.append(e)
    assert len(keep) < len(events) * 0.6  # the bots sent most of the traffic

    everything = on.store("all", require_catalog=False)
    expected = on.store("expected")
    got = on.apply(everything, events)
    newly = on.newly
    on.apply(expected, keep)
    assert on.shared(everything) == on.shared(expected)

    # The flags as the store reports them, the replica's: from the flagging event on.
    seen: dict[str, int] = defaultdict(int)
    for e, new, flag in zip(events, got, got.flags, strict=True):
        n = seen[e.session_id]
        seen[e.session_id] += 1
        assert new
        assert bool(flag) == (e.session_id in flagged_at and n >= flagged_at[e.session_id])
    assert len(newly) == len(flagged_at) and set(newly) <= set(bots.REASONS)

    # A bot still gets answers, from its own session state, and keeps it.
    sid = next(iter(shop.bots))
    answer = on(pipeline.recommend(everything, everything.settings, sid, 10))
    assert len(answer.picks) == 10
    assert on(everything.read_session(sid)).events > flagged_at[sid]


def test_flags_are_the_same_after_redelivery_and_replay(on: On) -> None:
    events, shop = _mixed(seed=12, sessions=60, share=0.2)
    at = positions(events)
    first = on.store("first")
    got = on.apply(first, events, at, cuts=300)
    states = on.bot_states(first, (e.session_id for e in events))
    shared = on.shared(first)
    applied = on(first.applied_count())
    assert sum(1 for s in states.values() if _flag_of(s)) == len(shop.bots)

    again = on.apply(first, events, at, cuts=170)  # redelivered, cut otherwise
    assert not any(again) and on.newly == []
    # Every event of a flagged session answers its sticky flag, those before the flag too.
    flags = {sid: _flag_of(s) for sid, s in states.items()}
    assert list(again.flags) == [flags[e.session_id] for e in events]
    assert all(f == again.flags[n] for n, f in enumerate(got.flags) if f)
    assert on.bot_states(first, states) == states
    assert on.shared(first) == shared
    assert on(first.applied_count()) == applied

    # The same events from the start on another store, cut otherwise: the same flags.
    replayed = on.store("replayed")
    other = on.apply(replayed, events, at, cuts=97)
    assert other.flags == got.flags
    assert on.bot_states(replayed, states) == states
    assert on.shared(replayed) == shared


def _burst(sid: str, start: int, n: int, gap_ms: int = 50) -> list[Event]:
    """A session clicking `n` new items `gap_ms` apart (past the second's limit: flagged)."""
    return [Event(f"{sid}/{start + k}", "view", sid, f"b{k}", TS + k * gap_ms) for k in range(n)]


def test_a_lost_delivery_comes_back_with_the_same_flags(on: On) -> None:
    """The first delivery of a batch applied, then lost (a crash before its offsets were
    committed to Kafka): the redelivery is seen before, and its events of flagged sessions
    stay flagged, so nothing after the apply (learner, profiles, attribution) learns from them."""
    store = on.store("lost")
    limit = on.settings.bot_max_events_per_s
    early = _burst("bot", 0, limit + 1)  # flagged by its last event
    human = [Event(f"h/{k}", "view", "h", f"i{k}", TS + k * 3000) for k in range(3)]
    later = [Event(f"bot/x{k}", "view", "bot", f"b{k}", TS + 5000 + k) for k in range(3)]
    mixed = _burst("bot2", 100, limit + 3)  # flagged within this batch
    batch = [*human[:2], *later, human[2], *mixed]
    at = [Position("events", 0, n) for n in range(len(early) + len(batch))]
    assert on.apply(store, early, at[: len(early)]).flags[-1] == "burst"
    first = on.apply(store, batch, at[len(early) :])
    assert list(first) == [True] * len(batch) and on.newly == ["burst"]
    second = on.apply(store, batch, at[len(early) :])  # the same positions again
    assert not any(second) and on.newly == []
    # The session flagged before the batch: exactly the same events flagged, for the same reason.
    assert second.flags[:6] == first.flags[:6] == ("", "", "burst", "burst", "burst", "")
    # The one flagged within it: its events before the flag too (its sticky flag).
    assert "" in first.flags[6:] and second.flags[6:] == ("burst",) * len(mixed)
    assert all(f == second.flags[n] for n, f in enumerate(first.flags) if f)
    assert [second.flagged(n) for n in range(len(batch))] == [False] * 2 + [True] * 3 + [False] + [
        True
    ] * len(mixed)


def test_on_a_cluster_a_crash_between_the_steps_keeps_the_flags(on: On) -> None:
    if not on.settings.redis_cluster:
        pytest.skip("the steps are a cluster's")
    events, shop = _mixed(seed=13, sessions=60, share=0.2)
    at = positions(events)
    clean = on.store("clean")
    on.apply(clean, events, at, cuts=400)
    crashed = on.store("crashed")
    on.apply(crashed, events[:400], at[:400], cuts=400)

    async def first_step_only() -> None:
        split = crashed._split
        assert isinstance(split, Split)
        await split.load()
        rows = [
            orjson.loads(r)
            for r in apply.rows(crashed.settings, events[400:800], at[400:800], True)
        ]
        todo = pending(at[400:800], await split.watermark(at[400:800]))
        await split.sessions(rows, todo, {})

    counted = list(on.newly)
    # Some sessions are flagged by an event of the crashed try (its outbox keeps the '!').
    nth: dict[str, int] = defaultdict(int)
    flagged_at = flag_points(events, on.settings)
    flagging = []
    for n, e in enumerate(events):
        if flagged_at.get(e.session_id) == nth[e.session_id]:
            flagging.append(n)
        nth[e.session_id] += 1
    assert any(400 <= n < 800 for n in flagging)
    on(first_step_only())
    flagged_before = ERRORS["bot_session_flagged"]
    retried = on.apply(crashed, events[400:], at[400:], cuts=400)  # the redelivery after the crash
    counted += on.newly
    sessions = {e.session_id for e in events}
    assert on.bot_states(crashed, sessions) == on.bot_states(clean, sessions)
    assert on.shared(crashed) == on.shared(clean)
    assert on(crashed.applied_count()) == on(clean.applied_count()) == len(events)
    # Each bot session counted once: the crashed try counted nothing, the retry what it
    # committed, a later redelivery nothing again (its events keep their flags).
    assert sorted(counted) == sorted(_reasons(on, crashed, sessions))
    assert len(counted) == len(shop.bots)
    assert ERRORS["bot_session_flagged"] - flagged_before == len(on.newly)
    again = on.apply(crashed, events[400:], at[400:], cuts=250)
    assert on.newly == [] and not any(again)
    assert all(f == again.flags[n] for n, f in enumerate(retried.flags) if f)
    sticky = {s: _flag_of(v) for s, v in on.bot_states(crashed, sessions).items()}
    assert list(again.flags) == [sticky[e.session_id] for e in events[400:]]


def test_a_flagged_sessions_clicks_credit_no_variant(on: On) -> None:
    """Attribution skips a bot's events (pipeline.handle_events): its click on an answer it was
    shown counts for no arm, where a shopper's identical click does."""
    store = on.store("ab", require_catalog=False)
    arms = [{"name": "a", "share": 0.5, "control": True}, {"name": "b", "share": 0.5}]
    exp_doc = {"variants": arms, "salt": "bots"}
    live = Runtime(rules=policy.from_dict({"experiments": {"ab": exp_doc}}))
    exp = live.rules.experiments.for_placement(None)
    assert exp is not None
    limit = on.settings.bot_max_events_per_s
    bot, human = _burst("abbot", 0, limit + 1), [Event("abh/0", "view", "abh", "b0", TS)]
    on(pipeline.handle_events(store, store.settings, [*bot, *human], live))
    for sid in ("abbot", "abh"):
        arm = assign(exp, unit(None, sid)).name
        on(store.experiments.record(Shown("ab", arm, sid, f"r-{sid}", ("b1", "b2"), TS + 1000)))
    clicks = [
        Event(f"{sid}/c", "click", sid, "b1", TS + 2000, recommendation_id=f"r-{sid}")
        for sid in ("abbot", "abh")
    ]
    at = [Position("ab", 0, n) for n in range(len(clicks))]
    on(pipeline.handle_events(store, store.settings, clicks, live, positions=at))

    def total(what: str) -> float:
        return sum(arm[what] for arm in on(store.experiments.counters(exp)).values())

    assert (total("impressions"), total("clicks"), total("click_sessions")) == (2, 1, 1)
    # Redelivered, the bot's click is still skipped (its session's flag sticks).
    on(pipeline.handle_events(store, store.settings, clicks, live, positions=at))
    assert total("clicks") == 1


def _shop(on: On, tag: str, guard: bool) -> tuple[RedisStore, str, str, int]:
    """A shop's traffic; the most popular item (the lure), a middling one (the target) and
    the time the traffic ends."""
    store = on.store(tag, bot_guard=guard, require_catalog=False)
    shop = Storefront(CATALOG, seed=14, run_id="shop", start_ms=TS)
    normal = decoded(shop.stream(SHOPPERS, concurrency=30))
    on.apply(store, normal)
    popular = on(store.read_popular(150))
    return store, popular[0][0], popular[len(popular) // 2][0], max(e.ts for e in normal)


def _probe(on: On, store: RedisStore, lure: str, target: str, at: int, tag: str) -> int:
    """New shoppers viewing the popular item at `at`: how many get the target in their top 10
    (of SHOPPERS_ASKED)."""
    hits = 0
    for n in range(SHOPPERS_ASKED):
        sid = f"shopper{tag}-{n}"
        view = Event(f"{sid}/0", "view", sid, lure, at + n * 1000)
        on(pipeline.ingest(store, [view], learn=False))
        answer = on(pipeline.recommend(store, store.settings, sid, 10))
        hits += target in [p.item_id for p in answer.picks]
    return hits


def _shoppers_see(on: On, guard: bool) -> tuple[int, int]:
    """A shilling attack at machine pace pairing the target with the lure, then new shoppers
    viewing the lure: how many of them get the target in their top 10."""
    store, lure, target, end = _shop(on, f"shill-{guard}", guard)
    shop = Storefront(CATALOG, seed=14, run_id="shop", start_ms=TS)
    attack = decoded(shop.shilling(target, lure, SHILLS, rounds=200, start_ms=end + 1000))
    on.apply(store, attack)
    return _probe(on, store, lure, target, end + 300_000, "fast"), SHOPPERS_ASKED


def test_a_shilling_attack_stays_out_of_shoppers_top_10(on: On) -> None:
    if on.settings.redis_cluster:
        pytest.skip("the learning is the same on both (test_split.py): once is enough")
    hits, asked = _shoppers_see(on, guard=True)
    assert hits == 0
    # The control: the same attack with the guard off does reach the shoppers.
    hits_off, _ = _shoppers_see(on, guard=False)
    assert hits_off >= asked * 0.8


def test_a_shilling_attack_at_human_pace_is_not_caught(on: On) -> None:
    """The documented limit (docs/reliability.md, "Limits"): fake sessions clicking the lure and
    the target a few seconds apart break no rule, so the guard does not stop them. Sessions of
    20 such views: 2 do not reach the shoppers' top 10 against the shop's own traffic, 3 do."""
    if on.settings.redis_cluster:
        pytest.skip("the learning is the same on both (test_split.py): once is enough")
    store, lure, target, end = _shop(on, "shill-slow", guard=True)
    at, hits = end + 1000, []
    for step, sessions in enumerate((2, 1)):  # 2 fake sessions, then a third
        shop = Storefront(CATALOG, seed=20 + step, run_id=f"slow{step}", start_ms=at)
        raw = shop.shilling(target, lure, sessions, rounds=10, start_ms=at, gap_ms=(2000, 5000))
        attack = decoded(raw)
        got = on.apply(store, attack)
        assert not any(got.flags) and on.newly == []  # human pace: no rule broken
        at = max(e.ts for e in attack) + 60_000
        hits.append(_probe(on, store, lure, target, at, f"slow{step}"))
        at += 60_000
    assert hits[0] == 0
    assert hits[1] >= SHOPPERS_ASKED * 0.8


def test_shoppers_of_the_public_data_sets_are_not_flagged(settings: Settings) -> None:
    """Real sessions replayed with their real event times: no false positive (the figures and
    the distributions they come from are in docs/reliability.md)."""
    if not all((DATA / name).exists() for name in TIMED):
        pytest.skip(f"the public data sets are not in {DATA}")
    on = On(dataclasses.replace(settings, key_prefix=uid(f"{settings.key_prefix}-humans")))
    try:
        store = on.store("timed")
        sessions = 0
        for name in TIMED:
            logs = read_sessions(DATA / name)
            sessions += len(logs)
            events = sorted(
                (
                    Event(f"{s.session_id}/{n}", kind, s.session_id, item, ts)
                    for s in logs
                    for n, (item, ts, kind) in enumerate(zip(s.items, s.ts, s.types, strict=True))
                ),
                key=lambda e: e.ts,
            )
            got = on.apply(store, events, cuts=2000, learn=False)
            assert on.newly == [] and not any(got.flags), name
        assert sessions > 24_000
    finally:
        on.close()
