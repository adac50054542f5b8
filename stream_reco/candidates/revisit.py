"""Revisit candidates: the session's own items, since shoppers often go back to one."""

from __future__ import annotations

from collections import Counter

from stream_reco.candidates import Candidate
from stream_reco.state import SessionView


def gather(session: SessionView, into: dict[str, Candidate]) -> None:
    """Each item of the session as a candidate: `in_session`, its share of the session's
    events (`session_share`), and `last` for the item interacted with most recently."""
    if not session.recent:
        return
    counts = Counter(it.item_id for it in session.recent)
    n = len(session.recent)
    for item_id, c in counts.items():
        cand = into.get(item_id)
        if cand is None:
            cand = into[item_id] = Candidate(item_id)
        cand.features["in_session"] = 1.0
        cand.features["session_share"] = c / n
    into[session.recent[0].item_id].features["last"] = 1.0
    for pos, it in enumerate(session.strongest()):
        if it.item_id in into:
            into[it.item_id].features["revisit_recency"] = 0.5**pos
