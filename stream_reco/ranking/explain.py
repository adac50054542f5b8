"""Explanations: a short human-readable reason naming the session item a pick came from."""

from __future__ import annotations

from collections.abc import Mapping

from stream_reco.candidates import Candidate, newest
from stream_reco.events import CatalogItem

WHERE = {
    "add_to_cart": "in your cart",
    "purchase": "you bought",
    "click": "you viewed",
    "view": "you viewed",
}


def label(item_id: str, meta: Mapping[str, CatalogItem]) -> str:
    info = meta.get(item_id)
    return f"{info.title} ({item_id})" if info and info.title else item_id


def reason(c: Candidate, meta: Mapping[str, CatalogItem]) -> str:
    src = c.source_item if c.source_item != c.item_id else None  # never its own cause
    if src is not None and c.features.get(c.source_kind, 0.0) > 0:
        where = WHERE.get(c.source_type or "view", "you viewed")
        if c.source_kind == "similar":
            return f"similar to {label(src, meta)} {where}"
        how = "next after" if c.source_kind == "seq" else "with"
        return f"often chosen {how} {label(src, meta)} {where}"
    if c.features.get("in_session", 0.0) > 0:
        return "you viewed it earlier in this visit"
    if c.features.get("sknn", 0.0) > 0:
        return "chosen in shopping sessions like yours"
    if c.features.get("profile", 0.0) > 0:
        return "you looked at it on an earlier visit"
    info = meta.get(c.item_id)
    if c.features.get("trending", 0.0) > 0 and info and info.category:
        return f"trending in {info.category}"
    if c.features.get(newest.FEATURE, 0.0) > 0 and not c.features.get("pop", 0.0):
        return newest.REASON
    return "popular"
