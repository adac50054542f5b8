"""Every source's candidates for one session from one gather: what a request and a learning
example rank."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stream_reco.candidates import (
    Candidate,
    cooccurrence,
    newest,
    popularity,
    profile,
    revisit,
    sessions,
    similar,
)
from stream_reco.config import Settings
from stream_reco.events import CatalogItem
from stream_reco.ranking import rank
from stream_reco.ranking import rules as rules_
from stream_reco.runtime import Runtime
from stream_reco.state import SessionView
from stream_reco.storage.protocol import Store

SEQ_SOURCES = 3  # the latest distinct items whose follow-ups are candidates
# Request cost, cut where measured free: 3 co-occurrence lists and 20 spare popular items gave
# the same HR/MRR as 5 and 40 on all three data sets (docs/evaluation.md, "Latency").
COOC_SOURCES = 3  # at most this many session items' co-occurrence lists are read
POPULAR_EXTRA = 20  # popular candidates beyond k: room for blocked and unavailable ones


async def collect(
    store: Store,
    settings: Settings,
    live: Runtime,
    session_id: str,
    n_popular: int,
    fixed: Mapping[str, float],
    only: Sequence[str] | None,
    a: rank.Ask,
    user_id: str | None = None,
) -> tuple[SessionView, dict[str, Candidate], str]:
    """The session and every source's candidates for it, per-source scores kept as features;
    with `only`, just those items (their features where a source found them). A source whose
    weight is 0 in the `fixed` blend is not even read. `a`: the request's rules and blocked
    items, which only the cold-start source needs (it fills what is left to show).
    `user_id`: the request's signed-in user (else the session's stored one): a short session
    of a known user also gets its profile's candidates."""
    cooc = min(settings.cooc_window, COOC_SOURCES)
    n_profile, profile_sources = profile.wanted(fixed)
    got = await store.gather(
        session_id,
        n_popular,
        cooc if fixed["cooc"] > 0 else 0,
        SEQ_SOURCES if fixed["seq"] > 0 else 0,
        sknn=fixed["sknn"] > 0,
        trending=fixed["trending"] > 0,
        user_id=user_id,
        profile=n_profile,
        profile_sources=profile_sources,
    )
    session = got.session
    expand = cooccurrence.sources(session, settings.weights, cooc)
    latest = cooccurrence.recent(session, SEQ_SOURCES)

    found: dict[str, Candidate] = {}
    cooccurrence.gather(latest, got.next, found, feature="seq")
    cooccurrence.gather(expand, got.co, found)
    sessions.gather(got.votes, found)
    similar.gather(live.index if fixed["similar"] > 0 else None, latest, found)
    revisit.gather(session, found)
    profile.gather(got.profile, got.profile_co, found)  # a returning user's earlier visits
    popularity.gather_trending(got.trending, found)  # what the shopper is browsing now
    popularity.gather(got.popular, found)
    # Cold start: only when behaviour cannot fill the list, and never for /rank's own items.
    if only is None and fixed.get(newest.FEATURE, 0.0) > 0 and newest.short(got.popular, n_popular):
        taken = rank.blocked(a, session)

        def keep(item_id: str, info: CatalogItem) -> bool:
            return item_id not in taken and not rules_.shelved(info, a.rules)

        await newest.gather(store, got.catalog_at, n_popular, found, keep)
    if only is not None:
        found = {i: found.get(i) or Candidate(i) for i in dict.fromkeys(only)}
    return session, found, got.catalog_at
