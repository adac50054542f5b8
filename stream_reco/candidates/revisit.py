"""Revisit candidates: the session's own items, since shoppers often go back to one."""

from __future__ import annotations

from collections import Counter

from stream_reco.candidates import Candidate
from stream_reco.state import SessionView

RECENCY = 0.5  # each distinct item further back halves `revisit_recency`


def gather(session: SessionView, into: dict[str, Candidate]) -> None:
    """Each item of the session as a candidate: `in_session`, its share of the session's
    events (`session_share`), `last` for the item interacted with most recently, and how far
    back its latest look is (`revisit_recency`)."""
    if not session.recent:
        return
    # Newest first, each item once at its latest look: the count's order is the recency order.
    counts = Counter(it.item_id for it in session.recent)
    n = len(session.recent)
    for pos, (item_id, c) in enumerate(counts.items()):
        cand = into.get(item_id)
        if cand is None:
            cand = into[item_id] = Candidate(item_id)
        cand.features["in_session"] = 1.0
        cand.features["session_share"] = c / n
        cand.features["revisit_recency"] = RECENCY**pos
    into[session.recent[0].item_id].features["last"] = 1.0
