"""The returning-users evaluation (evaluation/returning.py) on a small made-up shop: users who
come back to their interests are served better with their profile, anonymous figures are not
touched."""

from __future__ import annotations

import asyncio

from stream_reco.config import Settings
from stream_reco.evaluation.data import SessionLog
from stream_reco.evaluation.returning import measure

TS = 1_750_000_000_000


def _log(sid: str, items: list[str], start: int) -> SessionLog:
    n = len(items)
    return SessionLog(sid, tuple(items), tuple(TS + start + i for i in range(n)), ("view",) * n)


def test_a_profile_serves_users_who_return_to_their_interests(settings: Settings) -> None:
    # Ten users, each with a little world of 4 items no one else visits; a shared hub item.
    train, test, users = [], [], {}
    for u in range(10):
        world = [f"w{u}-{i}" for i in range(4)]
        for v in range(3):
            sid = f"tr{u}-{v}"
            train.append(_log(sid, [world[v], world[v + 1], "hub"], 1000 * (10 * u + v)))
            users[sid] = f"user{u}"
        test.append(_log(f"te{u}", [world[3], world[0]], 10**6 + u))
    for n in range(20):  # popular items nobody here wants next
        train.append(_log(f"pop{n}", ["hub", "p1", "p2"], 500_000 + n))
        users[f"pop{n}"] = f"other{n}"
    test_users = {f"te{u}": f"user{u}" for u in range(10)}
    got = asyncio.run(measure(settings, train, test, (users, test_users), [(0, 0), (1.0, 0.2)]))
    without, with_ = got["0,0"], got["1.0,0.2"]
    assert without["pos0"]["n"] == with_["pos0"]["n"] == 10
    assert with_["pos0"]["hr"] > without["pos0"]["hr"]
    assert with_["pos1"]["hr"] >= without["pos1"]["hr"]
