"""The shop's hard rules: what may never be recommended to this session."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from stream_reco.events import CatalogItem
from stream_reco.state import SessionView


def blocked(session: SessionView, exclude: Iterable[str]) -> set[str]:
    """Items this session must not be shown whatever their score: cart, bought, excluded."""
    return set(session.cart) | set(session.purchased) | set(exclude)


def allowed(
    item_id: str, meta: Mapping[str, CatalogItem], block: set[str], require_catalog: bool
) -> bool:
    """An item may be shown if not blocked, known (when the catalogue is required) and in stock."""
    if item_id in block:
        return False
    info = meta.get(item_id)
    if info is None:
        return not require_catalog
    return info.in_stock
