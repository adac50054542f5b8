"""Session-context features of the head candidates: how each fits what the session is doing."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping

from stream_reco.candidates import Candidate
from stream_reco.events import CatalogItem
from stream_reco.state import SessionView

# Named here so the blend, the learner and STREAM_RECO_BLEND agree on them. The fixed blend
# gives them no weight (the public data sets have no catalogue to choose one on); the learned
# ranker finds its own from feedback.
# The two source features need no metadata, so every candidate gets them (features.derive).
FEATURES = ("category_match", "price_match", "margin", "source_cart", "source_recency")


def add(head: Iterable[Candidate], session: SessionView, meta: Mapping[str, CatalogItem]) -> None:
    """Add the context features to each candidate; a feature that cannot be known (no
    catalogue, no prices in the session) is left out, which a linear score reads as 0."""
    order = [it.item_id for it in session.strongest()]
    shares = _category_shares(order, meta)
    price = _typical_price(order, meta)
    for cand in head:
        info = meta.get(cand.item_id)
        f = cand.features
        if info is not None and info.category and shares.get(info.category):
            f["category_match"] = shares[info.category]
        if info is not None and info.price and price and info.price > 0:
            f["price_match"] = min(info.price, price) / max(info.price, price)
        if info is not None and info.margin is not None and info.margin > 0:
            f["margin"] = min(info.margin, 1.0)


def _category_shares(items: list[str], meta: Mapping[str, CatalogItem]) -> dict[str, float]:
    """Each category's share of the session's items that have one."""
    cats = [info.category for i in items if (info := meta.get(i)) is not None and info.category]
    return {c: cats.count(c) / len(cats) for c in set(cats)}


def _typical_price(items: list[str], meta: Mapping[str, CatalogItem]) -> float | None:
    """The median price of the session's priced items (one odd item does not move it)."""
    prices = [p for i in items if (info := meta.get(i)) and (p := info.price or 0.0) > 0]
    return statistics.median(prices) if prices else None
