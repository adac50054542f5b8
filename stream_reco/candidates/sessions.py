"""Session-kNN candidates: items of recent past sessions that look like the current one
(the votes are computed next to the data, in storage/gather.lua)."""

from __future__ import annotations

from stream_reco.candidates import Candidate, add_normalised


def gather(votes: list[tuple[str, float]], into: dict[str, Candidate]) -> None:
    """Add the similar sessions' votes (best first, from the store) as `sknn`."""
    add_normalised(votes, "sknn", into)
