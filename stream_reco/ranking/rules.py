"""The shop's hard rules: what may never be recommended to this session."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from stream_reco.events import CatalogItem
from stream_reco.ranking.policy import Policy
from stream_reco.state import SessionView

NO_RULES = Policy()


def blocked(session: SessionView, exclude: Iterable[str]) -> set[str]:
    """Items this session must not be shown whatever their score: cart, bought, excluded."""
    return set(session.cart) | set(session.purchased) | set(exclude)


def in_view(session: SessionView, item_id: str | None) -> str | None:
    """The item the shopper is looking at: the page's item when the request names one, else
    the session's latest item; None for a new session on a page without an item."""
    if item_id is not None:
        return item_id
    return session.recent[0].item_id if session.recent else None


def shelved(info: CatalogItem, policy: Policy) -> bool:
    """Whether the policy excludes the item's catalogue category or brand (exact names)."""
    return info.category in policy.exclude_categories or info.brand in policy.exclude_brands


def allowed(
    item_id: str,
    meta: Mapping[str, CatalogItem],
    block: set[str],
    require_catalog: bool,
    policy: Policy = NO_RULES,
) -> bool:
    """An item may be shown if not blocked, known (when the catalogue is required), in stock
    and not in a category or brand the policy excludes. Without metadata an item's category
    and brand are unknown, so only `require_catalog` keeps it out."""
    if item_id in block:
        return False
    info = meta.get(item_id)
    if info is None:
        return not require_catalog
    return info.in_stock and not shelved(info, policy)


def excluded_by_catalog(
    items: Iterable[tuple[str, CatalogItem | None]], policy: Policy
) -> set[str]:
    """Those of (item, metadata) pairs whose category or brand the policy excludes."""
    if not (policy.exclude_categories or policy.exclude_brands):
        return set()
    return {i for i, info in items if info is not None and shelved(info, policy)}
