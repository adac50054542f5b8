"""Scoring candidates: a linear score over their features, session-based candidates first."""

from __future__ import annotations

from collections.abc import Mapping

from stream_reco.candidates import Candidate
from stream_reco.config import Settings
from stream_reco.ranking import context

# Per-source weights of the normalised features: the fixed blend that ranks until a learned
# model is ready (and what the learner starts from). Sequence (what came next after the latest
# items) says more about the next click than co-occurrence anywhere in the session; shoppers
# often return to an item of their own session; similar sessions and co-occurrence add less.
# Chosen on validation splits cut by time from the *training* sets of yoochoose1_64,
# rsc15_100k and nowplaying (docs/evaluation.md), never on test data: cooc and sknn at 0.2
# beat 0.1 and 0.05 on all three on both metrics; more sknn helps long sessions but costs
# the shops' MRR.
WEIGHTS = {
    "seq": 1.0,
    "cooc": 0.2,
    "sknn": 0.2,
    "in_session": 0.1,
    "session_share": 0.3,
    "last": 0.05,
    # No catalogue in the public data sets, so these two are set by judgement, not measured:
    # content similarity about as much as similar sessions; trending in the session's category
    # just above plain popularity.
    "similar": 0.05,
    "trending": 0.002,
    # A returning user's profile (short sessions of known users only): its items and what goes
    # with them. Chosen on a validation split of rsc15_100k's train set under two simulations
    # of users (docs/evaluation.md, "Returning users"), never on test data: the weights best
    # on average for users who return to their interests and users who never do. What goes
    # with the profile's items gained nothing there: off (not even read) until shown to help.
    "profile": 0.2,
    "profile_co": 0.0,
}
# Popularity must never outrank a session-based candidate; it only fills the remaining slots.
POP_SHARE = 1e-3
# Catalogue newness (cold start, candidates/newest.py) fills what popularity leaves: a pick
# scores at most a thousandth of the most popular item, so items shoppers used come first
# unless their decayed popularity fell below a thousandth of the top item's.
NEW_SHARE = POP_SHARE * 1e-3
SESSION_FEATURES = frozenset(WEIGHTS)
DEFAULT = {**WEIGHTS, "pop": POP_SHARE, "new": NEW_SHARE, **dict.fromkeys(context.FEATURES, 0.0)}


def for_settings(settings: Settings) -> dict[str, float]:
    """The fixed blend with the deployment's overrides (`STREAM_RECO_BLEND`)."""
    return {**DEFAULT, **settings.blend_overrides} if settings.blend else DEFAULT


def linear(features: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """The one scoring rule, for the fixed blend and the learned model alike."""
    total = 0.0
    for f, v in features.items():  # a plain loop: ~150 candidates per request
        total += weights.get(f, 0.0) * v
    return total


def score(c: Candidate, weights: Mapping[str, float] = DEFAULT) -> float:
    return linear(c.features, weights)


def order(
    candidates: list[Candidate], weights: Mapping[str, float] = DEFAULT, session_first: bool = True
) -> list[tuple[Candidate, float]]:
    """Candidates best first, ties broken by item id so answers are reproducible. With
    `session_first` (the fixed blend), those found by a session-based source that counts
    (weight > 0) come before plain popularity; sources only ever add positive features, so a
    feature's presence is enough. A learned model's scores are its own verdict."""
    scored = [(c, linear(c.features, weights)) for c in candidates]
    if not session_first:
        scored.sort(key=lambda cs: (-cs[1], cs[0].item_id))
        return scored
    active = active_sources(weights)
    scored.sort(key=lambda cs: (active.isdisjoint(cs[0].features), -cs[1], cs[0].item_id))
    return scored


def uses_context(weights: Mapping[str, float]) -> bool:
    """Whether these weights score session-context features (known only for the head)."""
    return any(weights.get(f, 0.0) for f in context.FEATURES)


def active_sources(weights: Mapping[str, float]) -> frozenset[str]:
    """The session-based features that count under these weights: an item with none of them
    is ranked after every item with one, by the fixed blend."""
    return frozenset(f for f in SESSION_FEATURES if weights.get(f, 0.0) > 0)
