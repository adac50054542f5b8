"""Returning-user candidates: the items of a signed-in user's profile and what goes with them."""

from __future__ import annotations

from collections.abc import Mapping

from stream_reco.candidates import Candidate, add_normalised
from stream_reco.storage.codec import Scored

FEATURES = ("profile", "profile_co")
READ = 20  # profile items read per request (a short session of a known user only)
SOURCES = 3  # profile items whose co-occurrence lists are read (for `profile_co`)
# Each step down the profile counts this much less for what goes with it: the profile's top
# items (most, and most recently, interacted with) say most about this visit.
RECENCY = 0.5


def wanted(fixed: Mapping[str, float]) -> tuple[int, int]:
    """Profile items to read under this blend, and of them those whose co-occurrence lists
    are read: none for a feature that does not count."""
    sources = SOURCES if fixed.get("profile_co", 0.0) > 0 else 0
    return (READ if sources or fixed.get("profile", 0.0) > 0 else 0), sources


def gather(profile: Scored, neighbours: Mapping[str, Scored], into: dict[str, Candidate]) -> None:
    """The profile's items as `profile` (each score relative to the profile's top), and the
    co-occurrence neighbours of its first items as `profile_co` (each list relative to its
    top, weighted by its source's profile score and position). The profile item that
    contributed most is a neighbour's reason."""
    add_normalised(profile, "profile", into)
    weight = dict(profile)
    for pos, (src, row) in enumerate(neighbours.items()):
        if not row:
            continue
        w = weight.get(src, 0.0) * RECENCY**pos
        top = row[0][1] or 1.0
        for item_id, score in row:
            share = w * score / top
            cand = into.get(item_id)
            if cand is None:
                cand = into[item_id] = Candidate(item_id)
            cand.features["profile_co"] = cand.features.get("profile_co", 0.0) + share
            if cand.source_item is None and item_id != src:
                # Only where no session item names it: this visit's own reasons come first.
                cand.source_item, cand.source_type, cand.source_kind = src, "view", "profile_co"
