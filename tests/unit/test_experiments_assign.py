"""Assignment is a pure, stable hash: the same unit always gets the same arm, shares hold."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

from stream_reco.experiments.assign import assign, bucket, unit
from stream_reco.experiments.config import HOLDOUT, parse

EXP = parse(
    "ab",
    {
        "salt": "s1",
        "variants": [
            {"name": "a", "share": 0.45, "control": True},
            {"name": "b", "share": 0.45, "learned_ranker": False},
        ],
        "holdout": {"share": 0.1},
    },
)


def test_the_same_unit_gets_the_same_arm_in_another_process() -> None:
    here = [assign(EXP, f"s:{n}").name for n in range(200)]
    code = (
        "from tests.unit.test_experiments_assign import EXP; "
        "from stream_reco.experiments.assign import assign; "
        "print(','.join(assign(EXP, f's:{n}').name for n in range(200)))"
    )
    # Another interpreter has another hash() seed: blake2b must not care.
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().split(",") == here


def test_shares_hold_within_tolerance_on_100k_units() -> None:
    got = Counter(assign(EXP, unit(None, f"session-{n}")).name for n in range(100_000))
    for name, share in EXP.shares().items():
        assert abs(got[name] / 100_000 - share) < 0.006, (name, got[name])
    assert set(got) == {"a", "b", HOLDOUT}


def test_a_new_salt_reassigns_and_users_outrank_sessions() -> None:
    other = parse("ab", {**EXP.to_json(), "salt": "s2", "placement": None})
    ids = [f"s:{n}" for n in range(2000)]
    moved = sum(assign(EXP, i).name != assign(other, i).name for i in ids)
    assert 0.4 < moved / len(ids) < 0.75  # about 1 - sum(share^2) = 0.585 move
    assert unit("u1", "s9") == "u:u1" and unit(None, "s9") == "s:s9"
    assert bucket("ab", "c:x") != bucket("a", "bc:x")  # the salt's length is part of the hash
    assert 0.0 <= bucket("s1", "anything") < 1.0


def test_recommendation_ids_are_derived_from_what_asked() -> None:
    """A redelivered request (or push trigger) answered again keeps its id, so its impression
    counts once; HTTP's constant default request id never makes two answers one."""
    from stream_reco.openapi import DEFAULT_REQUEST_ID
    from stream_reco.response import recommendation_id

    rid = recommendation_id("s1", "r-1", None)
    assert rid == recommendation_id("s1", "r-1", None) and re.fullmatch(r"[0-9a-f]{32}", rid)
    assert rid != recommendation_id("s2", "r-1", None)
    assert recommendation_id("s1", None, "e-1") == recommendation_id("s1", None, "e-1")
    assert recommendation_id("s1", None, "r-1") != rid  # an event id is no request id
    for default in DEFAULT_REQUEST_ID.values():
        assert recommendation_id("s1", default, None) != recommendation_id("s1", default, None)
    assert recommendation_id("s1", None, None) != recommendation_id("s1", None, None)
