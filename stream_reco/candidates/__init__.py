"""Candidate sources: each turns session state plus a stored model into scored candidates."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Candidate:
    """An item worth ranking, with its per-source scores kept as named features."""

    item_id: str
    features: dict[str, float] = field(default_factory=dict)
    source_item: str | None = None  # the session item that contributed most
    source_type: str | None = None
    source_share: float = 0.0  # that item's contribution, to pick the reason
    source_kind: str = "cooc"  # which feature it contributed to: "cooc", "seq" or "similar"


def add_normalised(rows: list[tuple[str, float]], feature: str, into: dict[str, Candidate]) -> None:
    """Add a best-first scored list as `feature`, each score divided by the list's top one so
    the feature means the same whatever the list's scale (decay, counts, similarities)."""
    if not rows:
        return
    top = rows[0][1] or 1.0
    for item_id, score in rows:
        cand = into.get(item_id)
        if cand is None:
            cand = into[item_id] = Candidate(item_id)
        cand.features[feature] = score / top
