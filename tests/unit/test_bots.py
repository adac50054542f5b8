"""The bot guard's rules (bots.py, the Python replica of storage/bots.lua), the simulator's bots
and shilling attack, and the apply path's per-event learn flags and flagged replies."""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import pytest

from stream_reco import bots
from stream_reco.config import Settings
from stream_reco.errors import ConfigError
from stream_reco.simulator import BOT_KINDS, Storefront, make_catalog
from stream_reco.storage import apply

TS = 1_750_000_020_000  # 20 s into a minute
LIMITS = bots.Limits.of(Settings())


def _flag(items: list[str], gaps_ms: int, types: str = "view", lim: bots.Limits = LIMITS) -> str:
    ts = [TS + n * gaps_ms for n in range(len(items))]
    return bots.replay(items, ts, [types] * len(items), lim).flag


def test_each_rule_flags_just_past_its_limit() -> None:
    s = Settings()
    # One event a second ahead of the limit: a burst no hand can click.
    assert _flag([f"i{n}" for n in range(s.bot_max_events_per_s)], 100) == ""
    assert _flag([f"i{n}" for n in range(s.bot_max_events_per_s + 1)], 100) == "burst"
    # New items a minute, two a second: the items rule comes before the rate one.
    assert _flag([f"i{n}" for n in range(s.bot_max_new_items_per_min)], 500) == ""
    assert _flag([f"i{n}" for n in range(s.bot_max_new_items_per_min + 1)], 500) == "items"
    # Few items, many events: the rate.
    looped = [f"i{n % 3}" for n in range(s.bot_max_events_per_min + 1)]
    assert _flag(looped[:-1], 400) == ""
    assert _flag(looped, 400) == "rate"
    # The same event again and again, slowly.
    assert _flag(["a"] * s.bot_max_repeats, 2000) == ""
    assert _flag(["a"] * (s.bot_max_repeats + 1), 2000) == "repeats"
    carts = [f"i{n}" for n in range(s.bot_max_carts_per_min + 1)]
    assert _flag(carts, 1500, "add_to_cart") == "carts"
    assert _flag(carts[:-1], 1500, "add_to_cart") == ""


def test_the_window_slides_over_the_previous_minute() -> None:
    w = bots.Watch()
    lim = dataclasses.replace(LIMITS, events_per_min=10, events_per_s=0)
    start = 1_750_000_000_000 - 1_750_000_000_000 % 60_000  # a minute's first ms
    for n in range(10):  # the last 10 s of one minute
        assert w.see(start + 50_000 + n * 1000, True, False, False, lim) == ""
    # Half a minute later, half the previous minute is still within the window: 10 * 0.5 + 1.
    assert w.see(start + 60_000 + 30_000, True, False, False, lim) == ""
    # Just after the turn of the minute nearly all of it is: 10 * ~1 + 1 > 10.
    w3 = bots.Watch()
    for n in range(10):
        w3.see(start + 50_000 + n * 1000, True, False, False, lim)
    assert w3.see(start + 60_001, True, False, False, lim) == "rate"
    # A late event (before its bucket's start) counts the whole previous minute too.
    w4 = bots.Watch()
    for n in range(10):
        w4.see(start + 50_000 + n * 1000, True, False, False, lim)
    w4.see(start + 60_000 + 59_000, True, False, False, lim)  # moves to the next minute
    assert w4.see(start + 1_000, True, False, False, lim) == "rate"
    # However late in its own minute: the window is measured from its bucket's start, not from
    # the event's own minute (which would weigh the previous minute at nearly nothing).
    w5 = bots.Watch()
    for n in range(10):
        w5.see(start + 50_000 + n * 1000, True, False, False, lim)
    w5.see(start + 60_000 + 59_000, True, False, False, lim)
    assert w5.see(start + 59_500, True, False, False, lim) == "rate"


def test_the_flag_sticks_and_a_switched_off_guard_flags_nothing() -> None:
    lim = bots.Limits.of(Settings(bot_guard=False))
    assert not any(lim.values) and lim.script_config()["bot_on"] is False
    assert _flag([f"i{n}" for n in range(500)], 10, lim=lim) == ""
    w = bots.Watch()
    for n in range(LIMITS.events_per_s + 1):
        w.see(TS + n, True, False, False, LIMITS)
    assert w.see(TS + 3_600_000, True, False, False, LIMITS) == "burst"  # an hour later still


def test_limits_must_not_be_negative() -> None:
    for name in ("BOT_MAX_EVENTS_PER_MIN", "BOT_MAX_EVENTS_PER_S", "BOT_MAX_REPEATS"):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({f"STREAM_RECO_{name}": "-1"})
    assert Settings.from_env({"STREAM_RECO_BOT_MAX_REPEATS": "0"}).bot_max_repeats == 0


def _by_session(events: list[dict[str, object]]) -> dict[str, list[dict[str, object]]]:
    out: dict[str, list[dict[str, object]]] = defaultdict(list)
    for e in events:
        out[str(e["session_id"])].append(e)
    return out


def _replayed(events: list[dict[str, object]]) -> str:
    items = [str(e["item_id"]) for e in events]
    ts = [int(str(e["ts"])) for e in events]
    return bots.replay(items, ts, [str(e["type"]) for e in events], LIMITS).flag


def test_simulated_bots_are_flagged_and_shoppers_are_not() -> None:
    shop = Storefront(make_catalog(200, seed=1), seed=2, bot_share=0.2)
    sessions = _by_session(list(shop.stream(300)))
    assert set(shop.bots.values()) == set(BOT_KINDS)
    for sid, events in sessions.items():
        assert bool(_replayed(events)) == (sid in shop.bots), sid
    attack = _by_session(shop.shilling("item-0001", "item-0002", n_sessions=4, rounds=30))
    assert len(attack) == 4 and all(_replayed(events) for events in attack.values())


def test_a_stream_without_bots_is_what_it_always_was() -> None:
    catalog = make_catalog(100, seed=3)
    plain = list(Storefront(catalog, seed=4).stream(50))
    assert list(Storefront(catalog, seed=4, bot_share=0.0).stream(50)) == plain
    with pytest.raises(ValueError, match="bot_share"):
        Storefront(catalog, bot_share=1.5)


def test_learn_flags_per_event_and_the_scripts_reply() -> None:
    assert apply.learn_flags(True, 3) == [1, 1, 1]
    assert apply.learn_flags([True, False], 2) == [1, 0]
    with pytest.raises(ValueError, match="one per event"):
        apply.learn_flags([True], 2)
    got = apply.reply([1, 0, b"!burst", b"burst", b"=rate"])
    assert got == [True, False, True, True, False]
    assert got.flags == ("", "", "burst", "burst", "rate") and got.newly == ("burst",)
    # Seen before, its session flagged: flagged (its sticky flag), not applied.
    assert [got.flagged(n) for n in range(5)] == [False, False, True, True, True]


def test_a_flagging_is_counted_only_where_this_call_committed_its_event() -> None:
    # A '!' on an event not applied now (no `committed` given) is not counted again.
    assert apply.Applied([False, True], ["!rate", "!items"]).newly == ("items",)
    # A cluster's retry commits what an unfinished try applied (status 2): counted there.
    got = apply.Applied([False, False], ["!rate", "rate"], [True, False])
    assert got.newly == ("rate",) and got.flags == ("rate", "rate")
