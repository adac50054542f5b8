"""Who gets which variant: a pure hash of the unit with the experiment's salt."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from stream_reco.experiments.config import HOLDOUT, Experiment, Variant

_SCALE = float(2**64)


@dataclass(frozen=True, slots=True)
class Arm:
    """What one answer is served under: the experiment and its variant (None: the holdout)."""

    experiment: Experiment
    variant: Variant | None

    @property
    def name(self) -> str:
        return self.variant.name if self.variant is not None else HOLDOUT


def unit(user_id: str | None, session_id: str) -> str:
    """The unit of assignment: the user when known (one shopper, one variant across sessions),
    else the session. A user id and a session id never collide: each has its own mark."""
    return f"u:{user_id}" if user_id else f"s:{session_id}"


def bucket(salt: str, unit_id: str) -> float:
    """A point in [0, 1) fixed by salt and unit: blake2b, not hash(), whose per-process
    randomisation would give one shopper different variants on different workers."""
    # The salt's length first: ("ab", "c:x") and ("a", "bc:x") must not hash alike.
    data = f"{len(salt)}:{salt}:{unit_id}".encode()
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def assign(exp: Experiment, unit_id: str) -> Arm:
    """The unit's arm: holdout first, then the variants in order, by cumulative share."""
    point = bucket(exp.salt, unit_id)
    edge = 0.0
    if exp.holdout is not None:
        edge = exp.holdout.share
        if point < edge:
            return Arm(exp, None)
    for v in exp.variants:
        edge += v.share
        if point < edge:
            return Arm(exp, v)
    return Arm(exp, exp.variants[-1])  # shares sum to 1 within rounding: the last takes the rest
