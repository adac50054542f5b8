"""Session-item candidates: items seen with (co-occurrence) or after (sequence) the session's."""

from __future__ import annotations

from collections.abc import Mapping

from stream_reco.candidates import Candidate
from stream_reco.ranking import blend
from stream_reco.state import Interaction, SessionView

# Each step back in the session counts this much less: the latest items say most about intent,
# and far more so for what comes next than for what goes together.
RECENCY = 0.5
SEQ_RECENCY = 0.3
# Each source position's own score too (seq0 from the latest item, seq1 the one before...):
# the recency factors above are the blend's guess; the learned ranker weighs each position.
POSITION_FEATURES = {f: tuple(f"{f}{n}" for n in range(3)) for f in ("seq", "cooc")}


def sources(
    session: SessionView, weights: Mapping[str, float], limit: int
) -> list[tuple[Interaction, float]]:
    """The session items to expand, cart items first, then newest first, each with how much
    its neighbours count: its event weight (its standing, SessionView.strongest) by recency."""
    # Cart items first: they are the strongest intent however many views came after them.
    ranked = sorted(session.strongest(), key=lambda it: it.item_id not in session.cart)
    return [
        (it, max(weights[it.type], 1e-3) * RECENCY**pos) for pos, it in enumerate(ranked[:limit])
    ]


def gather(
    expand: list[tuple[Interaction, float]],
    neighbours: Mapping[str, list[tuple[str, float]]],
    into: dict[str, Candidate],
    feature: str = "cooc",
) -> None:
    """Add each source's neighbours as `feature`, scores normalised per source so decay factors
    cancel; each candidate remembers the other session item that contributed most (its reason)."""
    scale, named = blend.WEIGHTS[feature], POSITION_FEATURES[feature]
    for pos, (src, weight) in enumerate(expand):
        by_position = named[pos] if pos < len(named) else None
        row = neighbours.get(src.item_id) or []
        if not row:
            continue
        top = row[0][1] or 1.0
        for item_id, score in row:
            share = weight * score / top
            cand = into.get(item_id)
            if cand is None:
                cand = into[item_id] = Candidate(item_id)
            cand.features[feature] = cand.features.get(feature, 0.0) + share
            if by_position is not None:
                cand.features[by_position] = score / top
            # An item that follows itself (a second look) still scores, but is never its own
            # reason: the best other source names it, or none does.
            if share * scale > cand.source_share and item_id != src.item_id:
                cand.source_item, cand.source_type = src.item_id, src.type
                cand.source_share, cand.source_kind = share * scale, feature


def recent(session: SessionView, limit: int) -> list[tuple[Interaction, float]]:
    """Sequence sources: the latest distinct items in time order (what was viewed last matters
    most for what comes next), weighted by recency only."""
    return [(it, SEQ_RECENCY**pos) for pos, it in enumerate(session.strongest()[:limit])]
