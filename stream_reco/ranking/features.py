"""Derived candidate features the learned ranker can weigh and the fixed blend cannot express."""

from __future__ import annotations

import math
from collections.abc import Sequence

from stream_reco.candidates import Candidate
from stream_reco.state import SessionView

# A source's candidates by rank: the first of a list is worth more than its score's share says
# when the list is flat, less when one item dominates; the model finds out which per shop.
RANKED = ("seq", "cooc", "sknn", "pop")
# Behaviour whose worth changes with how much the session has already shown: one click says
# little, a long session's repeats and neighbours say more.
BY_LENGTH = ("seq", "cooc", "sknn", "in_session", "session_share", "last", "revisit_recency")
# A concave version of each main score: a linear model of raw and rooted scores can bend.
ROOTED = ("seq", "cooc", "sknn", "pop")
SESSION_SOURCES = ("seq", "cooc", "sknn", "in_session", "similar")
VOTERS = ("seq", "cooc", "sknn", "similar")
LONG_SESSION = 20  # events at which a session counts as fully long
SOURCE_RECENCY = 0.5  # each step back in the session halves how recent the source item is
# Per base feature: its length-scaled name, its rooted name, whether it is an item source, and
# whether it makes the candidate session-based.
_PLAN = {
    name: (
        f"{name}_long" if name in BY_LENGTH else None,
        f"{name}_sqrt" if name in ROOTED else None,
        name in VOTERS,
        name in SESSION_SOURCES,
    )
    for name in (*BY_LENGTH, *ROOTED, *SESSION_SOURCES)
}
NAMES = (
    "source_cart",
    "source_recency",
    *(f"{f}_rr" for f in RANKED),
    *(f"{f}_long" for f in BY_LENGTH),
    *(f"{f}_sqrt" for f in ROOTED),
    "session_any",
    "n_sources",
)


def derive(candidates: Sequence[Candidate], session: SessionView) -> None:
    """Add the derived features to every candidate, in place: a pure function of the
    candidates and the session, the same for serving and learning."""
    _sources(candidates, session)
    length = min(math.log1p(max(session.events, 0)) / math.log1p(LONG_SESSION), 1.0)
    for name in RANKED:
        having = [c for c in candidates if name in c.features]
        having.sort(key=lambda c: -c.features[name])
        key = f"{name}_rr"
        for rank, c in enumerate(having, 1):
            c.features[key] = 1.0 / rank
    for c in candidates:
        f = c.features
        voters, session_based, made = 0, False, []
        for name, v in f.items():  # one pass over what the candidate has: a few features each
            plan = _PLAN.get(name)
            if plan is None:
                continue
            long_key, root_key, votes, in_session = plan
            voters += votes
            session_based = session_based or in_session
            if long_key and v and length:
                made.append((long_key, v * length))
            if root_key and v > 0:
                made.append((root_key, math.sqrt(v)))
        if session_based:
            made.append(("session_any", 1.0))
        if voters:
            made.append(("n_sources", voters / len(VOTERS)))
        f.update(made)


def _sources(candidates: Sequence[Candidate], session: SessionView) -> None:
    """Whether the session item that led to each candidate is in the cart, and how far back
    in the session it is."""
    position = {it.item_id: n for n, it in enumerate(session.strongest())}
    for c in candidates:
        src = c.source_item
        if src is None:
            continue
        if src in session.cart:
            c.features["source_cart"] = 1.0
        if src in position:
            c.features["source_recency"] = SOURCE_RECENCY ** position[src]
