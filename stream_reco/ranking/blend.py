"""The fixed blend: co-occurrence first, decayed popularity only as the fallback."""

from __future__ import annotations

from stream_reco.candidates import Candidate

# Popularity must never outrank a session-based candidate; it only fills the remaining slots.
POP_SHARE = 1e-3


def score(c: Candidate) -> float:
    return c.features.get("cooc", 0.0) + POP_SHARE * c.features.get("pop", 0.0)


def order(candidates: list[Candidate]) -> list[tuple[Candidate, float]]:
    """Candidates best first, ties broken by item id so answers are reproducible."""
    scored = [(c, score(c)) for c in candidates]
    scored.sort(key=lambda cs: (-(cs[0].features.get("cooc", 0.0) > 0), -cs[1], cs[0].item_id))
    return scored
