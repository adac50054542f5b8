"""Tests for session state as a request reads it: strongest interactions and stored parsing."""

from __future__ import annotations

from stream_reco.state import Interaction, SessionView, entry, parse_session


def test_strongest_dedups_newest_first() -> None:
    s = SessionView(
        "s",
        recent=(
            Interaction("b", "view", 300),
            Interaction("a", "view", 200),
            Interaction("b", "view", 100),
            Interaction("c", "view", 50),
        ),
    )
    assert s.strongest() == [
        Interaction("b", "view", 300),
        Interaction("a", "view", 200),
        Interaction("c", "view", 50),
    ]


def test_strongest_keeps_strongest_type_at_newest_time() -> None:
    s = SessionView(
        "s",
        recent=(
            Interaction("a", "view", 400),
            Interaction("b", "click", 300),
            Interaction("a", "purchase", 200),
            Interaction("b", "view", 150),
            Interaction("a", "add_to_cart", 100),
        ),
    )
    assert s.strongest() == [Interaction("a", "purchase", 400), Interaction("b", "click", 300)]


def test_weaker_older_interactions_do_not_downgrade() -> None:
    s = SessionView(
        "s",
        recent=(Interaction("a", "add_to_cart", 200), Interaction("a", "view", 100)),
        cart={"a": 1},
    )
    assert s.strongest() == [Interaction("a", "add_to_cart", 200)]


def test_an_item_taken_out_of_the_cart_reads_as_viewed() -> None:
    # The cart is the truth: added then removed, the item is no stronger than a view, whatever
    # else the session did with it (docs/contract.md: "you viewed").
    s = SessionView(
        "s",
        recent=(
            Interaction("r", "remove_from_cart", 400),
            Interaction("v", "click", 300),
            Interaction("r", "add_to_cart", 200),
            Interaction("r", "click", 100),
        ),
        last_ts=400,
    )
    assert s.strongest() == [Interaction("r", "view", 400), Interaction("v", "click", 300)]


def test_an_item_in_the_cart_reads_as_carted_whatever_came_after() -> None:
    # Two added, one taken out: still in the cart. Viewed after adding: still in the cart.
    s = SessionView(
        "s",
        recent=(
            Interaction("r", "remove_from_cart", 400),
            Interaction("c", "view", 300),
            Interaction("r", "add_to_cart", 200),
        ),
        cart={"r": 1, "c": 1},
        last_ts=400,
    )
    assert s.strongest() == [
        Interaction("r", "add_to_cart", 400),
        Interaction("c", "add_to_cart", 300),
    ]


def test_cart_items_missing_from_recent_are_included_last() -> None:
    # Added before the oldest remembered event: last, and no newer than that event.
    s = SessionView(
        "s",
        recent=(Interaction("a", "view", 200), Interaction("b", "add_to_cart", 150)),
        cart={"b": 1, "old": 2},
        last_ts=200,
    )
    assert s.strongest() == [
        Interaction("a", "view", 200),
        Interaction("b", "add_to_cart", 150),
        Interaction("old", "add_to_cart", 150),
    ]


def test_empty_session_has_no_interactions() -> None:
    assert SessionView("s").strongest() == []
    assert SessionView("s", cart={"x": 1}).strongest() == [Interaction("x", "add_to_cart", 0)]


def test_parse_session_round_trips_stored_entries() -> None:
    recent = [entry("b", "click", 1_700_000_000_200), entry("a", "view", 1_700_000_000_100)]
    view = parse_session(
        "s-1",
        recent,
        cart={b"b": b"2"},
        bought={b"z"},
        info={b"user_id": b"u-1", b"events": b"7", b"last_ts": b"1700000000200"},
    )
    assert view == SessionView(
        session_id="s-1",
        recent=(
            Interaction("b", "click", 1_700_000_000_200),
            Interaction("a", "view", 1_700_000_000_100),
        ),
        cart={"b": 2},
        purchased=frozenset({"z"}),
        events=7,
        user_id="u-1",
        last_ts=1_700_000_000_200,
    )
    assert isinstance(view.recent[0].ts, int)


def test_parse_session_of_an_unknown_session() -> None:
    view = parse_session("new", [], {}, set(), {})
    assert view == SessionView("new")
    assert (view.events, view.user_id, view.last_ts) == (0, None, None)


def test_entry_keeps_unusual_ids_intact() -> None:
    item = 'it"em,[1]\u00e9'
    view = parse_session("s", [entry(item, "view", 5)], {}, set(), {})
    assert view.recent == (Interaction(item, "view", 5),)


def test_to_json_matches_the_stored_view() -> None:
    view = SessionView(
        "s",
        recent=(Interaction("a", "view", 1),),
        cart={"a": 1},
        purchased=frozenset({"c", "b"}),
        events=2,
        user_id="u",
        last_ts=1,
    )
    assert view.to_json() == {
        "session_id": "s",
        "user_id": "u",
        "events": 2,
        "last_ts": 1,
        "cart": {"a": 1},
        "purchased": ["b", "c"],
        "recent": [["a", "view", 1]],
    }
