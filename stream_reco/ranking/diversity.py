"""The final k picks under a Policy: exclusions, boosts, MMR, caps, promoted and discovery slots."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from stream_reco.candidates import cooccurrence
from stream_reco.config import Settings
from stream_reco.events import CatalogItem
from stream_reco.ranking import rules
from stream_reco.ranking.policy import Policy
from stream_reco.state import SessionView

SLOTS = ("relevance", "promoted", "discovery")
# Metadata similarity for MMR: a shared category says more about "more of the same" than a
# shared brand (a shop's brands span categories). The two add up to 1 for the same shelf.
SAME_CATEGORY = 0.7
SAME_BRAND = 0.3
# The session's dominant categories are the fewest, heaviest ones holding this much of its
# category weight: a stray view does not make a category "dominant".
DOMINANT_MASS = 0.8
MIN_WEIGHT = 1e-3  # a zero-weight event type still says which shelf the shopper is at
BASE_WEIGHTS = Settings().weights

Similarity = Callable[[str, str], float]  # (item a, item b) -> 0..1; 1 = interchangeable


@dataclass(frozen=True, slots=True)
class Slot:
    """One returned item: its (boosted) relevance score and why it has its place."""

    item_id: str
    score: float
    slot: str  # one of SLOTS


def metadata_similarity(meta: Mapping[str, CatalogItem]) -> Similarity:
    """Similarity from catalogue metadata; unknown items or empty fields never match."""

    def similarity(a: str, b: str) -> float:
        x, y = meta.get(a), meta.get(b)
        if x is None or y is None:
            return 0.0
        same_category = SAME_CATEGORY if x.category and x.category == y.category else 0.0
        return same_category + (SAME_BRAND if x.brand and x.brand == y.brand else 0.0)

    return similarity


def wanted(session: SessionView, policy: Policy) -> set[str]:
    """Items whose metadata `select` needs besides the candidates': the session's own items
    (for its dominant categories) and the promoted items (for stock and category)."""
    return {it.item_id for it in session.recent} | set(session.cart) | set(policy.promoted)


def slot_counts(policy: Policy, k: int) -> tuple[int, int]:
    """(promoted, discovery) slots out of k, shares rounded half up; promoted ones come first,
    so discovery gets at most what is left."""
    promoted = min(k, _half_up(policy.promoted_share * k)) if policy.promoted else 0
    return promoted, min(k - promoted, _half_up(policy.discovery_share * k))


def _half_up(x: float) -> int:
    return math.floor(x + 0.5)  # round() would give round(0.5 * 5) == 2: banker's rounding


def dominant_categories(
    session: SessionView,
    meta: Mapping[str, CatalogItem],
    weights: Mapping[str, float],
    half_life_s: float | None = None,
) -> frozenset[str]:
    """Categories the session is focused on: its items' categories, each item weighted by its
    standing's event type (a cart item as add_to_cart, one taken out again as a view) and by
    its recency in time order (halving per step back, or by age with a half-life), heaviest
    first until DOMINANT_MASS of the weight is covered. Unlike the co-occurrence sources, cart
    items do not jump the queue: what the shopper browses now says where they are now.
    Items without a known category are ignored."""
    mass: dict[str, float] = {}
    last = session.last_ts or max((it.ts for it in session.recent), default=0)
    for pos, it in enumerate(session.strongest()):
        info = meta.get(it.item_id)
        if info is None or not info.category:
            continue
        if half_life_s is None:
            recency = cooccurrence.RECENCY**pos
        else:
            recency = 0.5 ** (max(last - it.ts, 0) / 1000.0 / half_life_s)
        weight = max(weights[it.type], MIN_WEIGHT) * recency
        mass[info.category] = mass.get(info.category, 0.0) + weight
    out: list[str] = []
    covered, total = 0.0, sum(mass.values())
    for category, m in sorted(mass.items(), key=lambda cm: (-cm[1], cm[0])):
        if covered >= DOMINANT_MASS * total:
            break
        out.append(category)
        covered += m
    return frozenset(out)


def boosted(
    ranked: Sequence[tuple[str, float]], meta: Mapping[str, CatalogItem], policy: Policy
) -> list[tuple[str, float]]:
    """Scores times (1 + margin_boost·m̂)·(1 + price_boost·p̂), best first (ties keep the input
    order). m̂ = max(margin, 0) / the best margin in the list and p̂ = price / the highest price:
    relative to the list, so it works whether margins are fractions or amounts. Unknown or
    non-positive margins and prices get no boost."""
    if not (policy.margin_boost or policy.price_boost):
        return list(ranked)
    info = [meta.get(i) for i, _ in ranked]
    margins = [max(x.margin or 0.0, 0.0) if x else 0.0 for x in info]
    prices = [max(x.price or 0.0, 0.0) if x else 0.0 for x in info]
    top_m, top_p = max(margins, default=0.0) or 1.0, max(prices, default=0.0) or 1.0
    out = [
        (i, s * (1 + policy.margin_boost * m / top_m) * (1 + policy.price_boost * p / top_p))
        for (i, s), m, p in zip(ranked, margins, prices, strict=True)
    ]
    out.sort(key=lambda pair: -pair[1])
    return out


def _eligible(
    ranked: Sequence[tuple[str, float]],
    meta: Mapping[str, CatalogItem],
    banned: set[str],
    require_catalog: bool,
    policy: Policy,
) -> list[tuple[str, float]]:
    """Allowed candidates once each, scores made non-increasing: the input order is the
    ranker's verdict (blend puts any session-based item before any popular one whatever the
    raw scores), so no score may rank an item above one listed before it."""
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    floor = math.inf
    # A learned model's scores may be negative (a softmax ignores a shift): shift them all so
    # the lowest is 0, rather than flatten every negative one to 0 and lose its relevance.
    shift = max(-min((s for _, s in ranked if math.isfinite(s)), default=0.0), 0.0)
    for item_id, score in ranked:
        if item_id in seen or not rules.allowed(item_id, meta, banned, require_catalog, policy):
            continue
        seen.add(item_id)
        floor = min(floor, max(score + shift, 0.0) if math.isfinite(score) else 0.0)
        out.append((item_id, floor))
    return out


class _Greedy:
    """Greedy MMR (Carbonell & Goldstein 1998) with category caps, O(k · candidates) at worst.
    Similarities are folded in lazily, only for items that could still win, and the scan stops
    once relevance alone cannot win, so the usual cost is far lower (λ = 1: the first fit)."""

    def __init__(
        self,
        pool: list[tuple[str, float]],
        meta: Mapping[str, CatalogItem],
        policy: Policy,
        similarity: Similarity,
    ) -> None:
        top = max((s for _, s in pool), default=0.0)
        self.pool = [i for i, _ in pool]
        self.rel = {i: s / top if top > 0 else 0.0 for i, s in pool}  # 0..1, like similarity
        self.meta, self.policy, self.similarity = meta, policy, similarity
        self.taken: dict[str, str] = {}  # item -> slot, in the order taken
        self.order: list[str] = []
        self.per_category: dict[str, int] = {}
        self.closest: dict[str, tuple[float, int]] = {}  # item -> (max similarity, taken seen)

    def category(self, item_id: str) -> str:
        info = self.meta.get(item_id)
        return info.category if info else ""

    def fits(self, item_id: str) -> bool:
        """Not taken and under its category's cap; items without a category are never capped."""
        if item_id in self.taken:
            return False
        cap = self.policy.category_cap
        if cap is None:
            return True
        category = self.category(item_id)
        return not category or self.per_category.get(category, 0) < cap

    def take(self, item_id: str, slot: str) -> None:
        self.taken[item_id] = slot
        self.order.append(item_id)
        if category := self.category(item_id):
            self.per_category[category] = self.per_category.get(category, 0) + 1

    def _closest(self, item_id: str) -> float:
        """Similarity to the closest taken item, folding in only items taken since last asked."""
        near, seen = self.closest.get(item_id, (0.0, 0))
        for other in self.order[seen:]:
            near = max(near, self.similarity(item_id, other))
        self.closest[item_id] = (near, len(self.order))
        return near

    def best(self, want: Callable[[str], bool] = lambda _: True) -> str | None:
        """The untaken candidate with the best MMR value; ties go to the more relevant."""
        lam = self.policy.mmr_lambda
        best_id, best_value = None, -math.inf
        for item_id in self.pool:
            value = lam * self.rel[item_id]
            if value <= best_value:
                break  # relevance never rises down the pool and similarity only subtracts
            if not (self.fits(item_id) and want(item_id)):
                continue
            if lam < 1.0:
                # Closeness only grows as items are taken: if the last known value already
                # loses, the up-to-date one does too, and its similarities need not be computed.
                if value - (1.0 - lam) * self.closest.get(item_id, (0.0, 0))[0] <= best_value:
                    continue
                value -= (1.0 - lam) * self._closest(item_id)
            if value > best_value:
                best_id, best_value = item_id, value
        return best_id


def _promote(
    greedy: _Greedy, policy: Policy, banned: set[str], require_catalog: bool, n: int
) -> None:
    """Take up to n promoted items: those that are also candidates by relevance, then the
    others in configured order; each must be allowed and under its category cap."""
    listed = set(policy.promoted)
    order = [i for i in greedy.pool if i in listed]
    order += [i for i in policy.promoted if i not in greedy.rel]
    for item_id in order:
        if len(greedy.taken) == n:
            return
        ok = rules.allowed(item_id, greedy.meta, banned, require_catalog, policy)
        if ok and greedy.fits(item_id):
            greedy.take(item_id, "promoted")


def _discover(greedy: _Greedy, main: frozenset[str], n: int) -> None:
    """Take up to n of the best candidates from outside the session's main categories; none
    when the session's categories are unknown (nothing to discover away from)."""

    def outside(item_id: str) -> bool:
        category = greedy.category(item_id)
        return bool(category) and category not in main

    for _ in range(n if main else 0):
        if (item_id := greedy.best(outside)) is None:
            return
        greedy.take(item_id, "discovery")


def _spread(base: list[str], extra: list[str]) -> list[str]:
    """`extra` placed at evenly spaced positions among `base` (never all at the top)."""
    out = list(base)
    length = len(base) + len(extra)
    for j, item_id in enumerate(extra):
        out.insert((j + 1) * length // (len(extra) + 1), item_id)
    return out


def select(
    ranked: Sequence[tuple[str, float]],
    meta: Mapping[str, CatalogItem],
    session: SessionView,
    policy: Policy,
    k: int,
    block: Iterable[str] = (),
    *,
    weights: Mapping[str, float] = BASE_WEIGHTS,
    similarity: Similarity | None = None,
    require_catalog: bool = True,
) -> list[Slot]:
    """At most k items from relevance-ordered (item, score) candidates, under `policy`.
    Never an item in the cart, purchased, excluded (policy or `block`), in a category or brand
    the policy excludes, out of stock or, with `require_catalog`, unknown. `meta` should cover
    the candidates and `wanted(...)`. `weights` are the Settings' event weights (the policy's
    overrides are applied here)."""
    banned = rules.blocked(session, policy.exclude) | set(block)
    pool = boosted(_eligible(ranked, meta, banned, require_catalog, policy), meta, policy)
    n_promoted, n_discovery = slot_counts(policy, k)
    if policy.mmr_lambda >= 1.0 and policy.category_cap is None and not (n_promoted or n_discovery):
        return [Slot(i, s, "relevance") for i, s in pool[:k]]  # what the greedy pass would take
    greedy = _Greedy(pool, meta, policy, similarity or metadata_similarity(meta))
    _promote(greedy, policy, banned, require_catalog, n_promoted)
    if n_discovery:
        weighed = policy.weights(weights)
        main = dominant_categories(session, meta, weighed, policy.session_half_life_s)
        _discover(greedy, main, n_discovery)
    while len(greedy.taken) < k and (item_id := greedy.best()) is not None:
        greedy.take(item_id, "relevance")
    return _arrange(greedy.taken, dict(pool))


def _arrange(taken: Mapping[str, str], scores: Mapping[str, float]) -> list[Slot]:
    """Relevance picks in MMR order, discovery and then promoted picks spread among them."""
    by_slot = {s: [i for i, t in taken.items() if t == s] for s in SLOTS}
    order = _spread(_spread(by_slot["relevance"], by_slot["discovery"]), by_slot["promoted"])
    return [Slot(i, scores.get(i, 0.0), taken[i]) for i in order]
