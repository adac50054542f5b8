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
    source_kind: str = "cooc"  # which feature it contributed to: "cooc" or "seq"
