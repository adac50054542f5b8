"""Popularity candidates: decayed item popularity, the fallback for sessions with no signal."""

from __future__ import annotations

from stream_reco.candidates import Candidate


def gather(popular: list[tuple[str, float]], into: dict[str, Candidate]) -> None:
    """Add popular items with their popularity normalised to the most popular item."""
    if not popular:
        return
    top = popular[0][1] or 1.0
    for item_id, score in popular:
        cand = into.get(item_id)
        if cand is None:
            cand = into[item_id] = Candidate(item_id)
        cand.features["pop"] = score / top
