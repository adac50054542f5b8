"""The pure parts of returning users: a batch grouped by user, the profile's candidates, and the
simulated users of the evaluation."""

from __future__ import annotations

from stream_reco.candidates import Candidate, profile
from stream_reco.config import Settings
from stream_reco.decay import log_weight
from stream_reco.evaluation.data import SessionLog
from stream_reco.evaluation.returning import PER_USER, assign
from stream_reco.events import Event
from stream_reco.state import entry
from stream_reco.storage.apply import Position
from stream_reco.storage.keys import Keys
from stream_reco.storage.profiles import Stored, plan, with_history

TS = 1_750_000_000_000


def _ev(n: int, sid: str, item: str, user: str | None = None, kind: str = "view") -> Event:
    return Event(f"{sid}/{n}", kind, sid, item, TS + n, user_id=user)


def test_the_user_key_layout_is_the_one_others_rely_on() -> None:
    assert Keys("reco").user("u1", "profile") == "reco:u:{u1}:profile"
    assert Keys("reco").user("u1", "sessions") == "reco:u:{u1}:sessions"


def test_a_batch_is_grouped_by_user_and_anonymous_sessions_are_left_out() -> None:
    s = Settings()
    events = [_ev(1, "a", "X"), _ev(2, "b", "Y", "u1"), _ev(3, "c", "Z"), _ev(4, "a", "W", "u2")]
    at = [Position("ev", 0, n) for n in range(4)]
    got = {j.user_id: j for j in plan(s, events, at)}
    # Session c's events carry no user: left out, whatever its stored state says (no read).
    assert set(got) == {"u1", "u2"}
    # Session a logs in on its second event: both its events are u2's; no history read yet.
    u2 = got["u2"]
    assert u2.sessions == [["a", False]]
    assert [r[1] for r in u2.rows] == ["a/1", "a/4"]
    assert [r[2:4] for r in u2.rows] == [[at[0].marker, "0"], [at[0].marker, "3"]]
    assert got["u1"].sessions == [["b", False]]


def test_the_sessions_the_script_needs_come_with_their_history_or_not_at_all() -> None:
    s = Settings()
    events = [_ev(1, "a", "X", "u"), _ev(2, "b", "Y", "u"), _ev(3, "c", "Z", "u")]
    [joined] = plan(s, events, [None] * 3)
    stored = {
        "a": Stored([entry("X", "view", TS + 1)], "", False),
        "b": Stored([entry("Y", "view", TS + 2)], "", True),  # flagged: a bot feeds no one
        "c": Stored([entry("Z", "view", TS + 3)], "u", False),  # joined u before: no history
    }
    again = with_history(s, joined, [1, 2, 3], stored)
    assert again is not None
    lw = log_weight(1.0, TS + 1, s.profile_half_life_s)
    assert again.sessions == [["a", [["X", lw, TS + 1]]], ["c", True]]
    assert [(r[0], r[1]) for r in again.rows] == [(1, "a/1"), (2, "c/3")]
    only_bot = {"b": stored["b"]}
    [bot] = plan(s, [events[1]], [None])
    assert with_history(s, bot, [1], only_bot) is None


def test_an_event_that_weighs_nothing_adds_nothing() -> None:
    s = Settings()
    [joined] = plan(s, [_ev(1, "a", "X", "u", "remove_from_cart")], [None])
    assert joined.rows[0][2:4] == ["", "-1"]
    assert joined.rows[0][5] is None  # remove_from_cart weighs 0 by default


def test_profile_candidates_carry_their_own_features_and_reason() -> None:
    found = {"Q": Candidate("Q", {"seq": 1.0}, source_item="P", source_kind="seq")}
    prof = [("A", 1.0), ("B", 0.5)]
    neighbours = {"A": [("Q", 2.0), ("R", 1.0)], "B": [("R", 1.0)]}
    profile.gather(prof, neighbours, found)
    assert found["A"].features["profile"] == 1.0
    assert found["B"].features["profile"] == 0.5
    # R: half from A (its top's half), B's list weighted by B's score and its position.
    assert found["R"].features["profile_co"] == 0.5 + 0.5 * profile.RECENCY
    assert found["R"].source_item == "A" and found["R"].source_kind == "profile_co"
    assert found["Q"].features == {"seq": 1.0, "profile_co": 1.0}
    assert found["Q"].source_item == "P"  # this visit's own source names it, not the profile


def test_no_profile_is_read_when_its_features_weigh_nothing() -> None:
    assert profile.wanted({"profile": 0.0, "profile_co": 0.0}) == (0, 0)
    assert profile.wanted({"profile": 0.0, "profile_co": 0.1}) == (profile.READ, profile.SOURCES)
    assert profile.wanted({"profile": 0.2, "profile_co": 0.0}) == (profile.READ, 0)


def _log(sid: str, items: str, start: int) -> SessionLog:
    return SessionLog(
        sid, tuple(items), tuple(range(start, start + len(items))), ("view",) * len(items)
    )


def test_simulated_users_are_deterministic_bounded_and_share_interests() -> None:
    logs = [_log(f"s{n}", "ABC" if n % 2 else "XYZ", n * 10) for n in range(20)]
    users = assign(logs, "overlap")
    assert users == assign(list(reversed(logs)), "overlap")  # by time and id, not input order
    per_user: dict[str, set[str]] = {}
    for log in logs:
        per_user.setdefault(users[log.session_id], set()).update(log.items)
    assert all(len(items) == 3 for items in per_user.values())  # one interest each
    counts = [list(users.values()).count(u) for u in set(users.values())]
    assert max(counts) <= PER_USER
    # The null check: as many users, sessions dealt at random (so interests mix).
    rand = assign(logs, "random")
    assert rand == assign(logs, "random")
    assert len(set(rand.values())) <= len(logs) // PER_USER


def test_the_digest_leaves_out_the_profile_steps_note_by_its_real_name() -> None:
    from stream_reco import digest
    from stream_reco.storage import profiles as stored

    assert digest.PROFILE_NOTE == stored.JOINED.encode()
