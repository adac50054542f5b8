"""The fixed blend: what follows the session's items, what goes with them, popularity last."""

from __future__ import annotations

from stream_reco.candidates import Candidate

# Per-source weights of the normalised features. Sequence (what came next after the latest
# items) says more about the next click than co-occurrence anywhere in the session.
WEIGHTS = {"seq": 1.0, "cooc": 0.25}
# Popularity must never outrank a session-based candidate; it only fills the remaining slots.
POP_SHARE = 1e-3


def session_based(c: Candidate) -> bool:
    return any(c.features.get(f, 0.0) > 0 for f in WEIGHTS)


def score(c: Candidate) -> float:
    mixed = sum(w * c.features.get(f, 0.0) for f, w in WEIGHTS.items())
    return mixed + POP_SHARE * c.features.get("pop", 0.0)


def order(candidates: list[Candidate]) -> list[tuple[Candidate, float]]:
    """Candidates best first, ties broken by item id so answers are reproducible."""
    scored = [(c, score(c)) for c in candidates]
    scored.sort(key=lambda cs: (not session_based(cs[0]), -cs[1], cs[0].item_id))
    return scored
