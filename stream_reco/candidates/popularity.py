"""Popularity candidates: decayed popularity overall (the fallback for sessions with no
signal) and within the session's current category (trending)."""

from __future__ import annotations

from stream_reco.candidates import Candidate, add_normalised


def gather(popular: list[tuple[str, float]], into: dict[str, Candidate]) -> None:
    """Add popular items with their popularity normalised to the most popular item."""
    add_normalised(popular, "pop", into)


def gather_trending(rows: list[tuple[str, float]], into: dict[str, Candidate]) -> None:
    """Add the decayed popularity within the session's main category as `trending`."""
    add_normalised(rows, "trending", into)
