"""Session-kNN candidates: items of recent past sessions that look like the current one."""

from __future__ import annotations

from stream_reco.candidates import Candidate, add_normalised
from stream_reco.state import SessionView


def prefix_weights(session: SessionView) -> dict[str, float]:
    """V-SKNN's view of the session: each distinct item weighted by how late it came (the
    latest event 1, the first 1/L), so the most recent interest counts most. Newest first."""
    n = len(session.recent)
    weights: dict[str, float] = {}
    for age, it in enumerate(session.recent):  # newest first
        weights.setdefault(it.item_id, (n - age) / n)
    return weights


def gather(votes: list[tuple[str, float]], into: dict[str, Candidate]) -> None:
    """Add the similar sessions' votes (best first, from the store) as `sknn`."""
    add_normalised(votes, "sknn", into)
