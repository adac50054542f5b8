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
        voters = 0
        for name in VOTERS:
            voters += name in f
        if voters or "in_session" in f:
            f["session_any"] = 1.0
        if voters:
            f["n_sources"] = voters / len(VOTERS)
        if length:
            for name in BY_LENGTH:
                v = f.get(name)
                if v:
                    f[f"{name}_long"] = v * length
        for name in ROOTED:
            v = f.get(name)
            if v and v > 0:
                f[f"{name}_sqrt"] = math.sqrt(v)


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
