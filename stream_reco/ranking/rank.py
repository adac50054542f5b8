"""The ranking step: a pure function of what the gather returned, in named stages."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from stream_reco import response
from stream_reco.candidates import Candidate
from stream_reco.config import Settings
from stream_reco.events import CatalogItem
from stream_reco.ranking import blend, context, diversity, examples, features, model
from stream_reco.ranking import rules as rules_
from stream_reco.ranking.policy import Policy
from stream_reco.response import Answer
from stream_reco.runtime import Runtime
from stream_reco.state import SessionView

# Passed-over candidates remembered with a response: the learner's negatives.
SHOWN_NEGATIVES = 10
# No diversity or business rules beyond the hard exclusions (with or without the item in view).
PLAIN = (Policy(), Policy(exclude_item_in_view=False))
# What a stream example asks: every candidate, the item in view too (a second look at it is a
# next event like any other; a placement that hides it hides it from the model's list too).
LEARNING = PLAIN[1]


@dataclass(frozen=True)
class Ask:
    """One request as the ranking sees it: how many, under which rules, never which items."""

    k: int
    rules: Policy
    block: frozenset[str]  # known before the session is read: request, policy, the page's item
    item_id: str | None = None  # the page's item, if the request names one
    only: tuple[str, ...] | None = None  # POST /rank: just these items

    @property
    def first_depth(self) -> int:
        # A plain policy needs only enough to cover unavailable items; rules that reshuffle
        # (diversity, discovery, caps) need a deeper pool to choose from.
        k = self.k
        return max(4 * k, k + 60) if self.rules not in PLAIN else k + 20

    def deeper(self, found: int, depth: int, ranked: int) -> int | None:
        """The depth to look at next when only `found` of k slots could be filled from the
        first `depth` of `ranked` candidates (too many unknown or sold out); None: done."""
        if found >= self.k or depth >= ranked or depth > 4 * self.k + 60:
            return None
        return ranked


def ask(
    live: Runtime,
    k: int,
    exclude: Iterable[str] = (),
    placement: str | None = None,
    item_id: str | None = None,
    only: Sequence[str] | None = None,
) -> Ask:
    rules = live.rules.for_placement(placement)
    if only is not None:  # /rank orders the caller's items: nothing else may join them
        rules = dataclasses.replace(rules, promoted=())
    block = set(exclude) | set(rules.exclude)
    if rules.exclude_item_in_view and item_id is not None:
        block.add(item_id)  # before the session is read: a fallback answer honours it too
    return Ask(k, rules, frozenset(block), item_id, None if only is None else tuple(only))


def fallback(live: Runtime, a: Ask) -> Answer:
    """Sources too slow or down: popularity from memory, still without blocked items."""
    shelved = rules_.excluded_by_catalog(live.fallback, a.rules)
    return response.fallback(live, set(a.block) | shelved, a.k, a.only)


def blocked(a: Ask, session: SessionView) -> set[str]:
    """Every item this request may not show once the session is known: the request's and the
    policy's exclusions, the cart, bought items and the item in view (unless the placement
    allows it; /rank orders a list page's items, where only a named `item_id` is in view)."""
    block = set(a.block) | rules_.blocked(session, ())
    page = a.item_id if a.only is not None else rules_.in_view(session, a.item_id)
    if a.rules.exclude_item_in_view and page is not None:
        block.add(page)
    return block


@dataclass
class Plan:
    """The first ordering stage: every allowed candidate by score, and how it was scored."""

    ranked: list[tuple[Candidate, float]]
    weights: Mapping[str, float]
    use_model: bool
    degraded: str | None
    block: set[str]
    scorer: model.Weights
    version: int
    learned: int = 0  # the first `learned` of `ranked` carry the derived features (the model's)

    def head(self, depth: int) -> list[tuple[Candidate, float]]:
        return self.ranked[:depth]


def plan(
    a: Ask,
    session: SessionView,
    found: Mapping[str, Candidate],
    current: model.Weights,
    fixed: Mapping[str, float],
    *,
    model_ready: bool,
    late: bool,
    derive: bool = False,
) -> Plan:
    """Order the candidates by the fixed blend, then the first of them by the learned model
    when it is ready and there is time left (`late`: past half the budget, so scoring is the
    part given up; `derive`: the derived features all the same, for an example of what the
    model sees); blocked items (request, policy, cart, bought, the item in view) leave the
    list here."""
    block = blocked(a, session)
    use_model, degraded = model_ready, None
    if use_model and late:
        use_model, degraded = False, "blend"
    ordered = blend.order(list(found.values()), fixed)
    ranked = [cs for cs in ordered if cs[0].item_id not in block]
    learned = 0
    if use_model or derive:
        # The model re-orders the blend's first examples.DEPTH, the lists it learns from;
        # their derived features are computed before any request's exclusions, so a
        # candidate's rank within a source reads the same in an example and in an answer.
        # A list the blend ranks leaves them out: its shown list teaches the learner the base
        # weights alone (a feature absent from a whole example gives its weight no gradient).
        top = [c for c, _ in ordered[: examples.DEPTH]]
        features.derive(top, session)
        learned = sum(c.item_id not in block for c in top)
        if use_model:
            head = [c for c, _ in ranked[:learned]]
            ranked[:learned] = blend.order(head, current.weights, session_first=False)
    weights = current.weights if use_model else fixed
    scorer = current if use_model else model.Weights(0, 0, weights)
    return Plan(ranked, weights, use_model, degraded, block, scorer, current.version, learned)


def wanted(
    head: Sequence[tuple[Candidate, float]], session: SessionView, rules: Policy
) -> list[str]:
    """Metadata to read: only what can still make the list, the session items named in
    reasons and what the rules look at (session categories, promoted items)."""
    ids = {c.item_id for c, _ in head} | {c.source_item for c, _ in head if c.source_item}
    return sorted(ids | diversity.wanted(session, rules))


def select(
    p: Plan,
    a: Ask,
    head: list[tuple[Candidate, float]],
    session: SessionView,
    meta: Mapping[str, CatalogItem],
    settings: Settings,
) -> tuple[list[tuple[Candidate, float]], list[diversity.Slot]]:
    """The second, finer stage on the head (context needs metadata, so only the head gets
    it), then the rules' choice of slots: (the head as finally ordered, the slots)."""
    context.add((c for c, _ in head), session, meta)
    if blend.uses_context(p.weights):
        # The model re-scores only what it scored in the first stage (the rest lack its
        # derived features); the blend re-scores the whole head.
        n = p.learned if p.use_model else len(head)
        order = blend.order([c for c, _ in head[:n]], p.weights, session_first=not p.use_model)
        head = order + head[n:]
    slots = diversity.select(
        [(c.item_id, sc) for c, sc in head],
        meta,
        session,
        a.rules,
        a.k,
        p.block,
        weights=a.rules.weights(settings.weights),
        require_catalog=settings.require_catalog,
    )
    return head, slots


def answer(
    p: Plan,
    head: Sequence[tuple[Candidate, float]],
    slots: Sequence[diversity.Slot],
    meta: dict[str, CatalogItem],
) -> Answer:
    """The picks, explained, and what the learner will hear was shown and passed over."""
    by_id = {c.item_id: c for c, _ in head}
    picks = [response.pick(by_id.get(sl.item_id), sl, meta, p.scorer) for sl in slots]
    taken = {pk.item_id for pk in picks}
    passed = [(c.item_id, c.features) for c, _ in head if c.item_id not in taken]
    shown = [(pk.item_id, pk.features) for pk in picks] + passed[:SHOWN_NEGATIVES]
    return Answer(picks, p.version if p.use_model else 0, p.degraded, shown, p.ranked)


@dataclass(frozen=True)
class Budget:
    """A request's time budget; `clock` is injectable so its arithmetic is tested as is."""

    seconds: float
    started: float
    clock: Callable[[], float] = time.perf_counter

    def left(self, share: float = 1.0) -> float:
        """Seconds left of `share` of the budget; never 0, which would mean no wait at all."""
        return max(self.seconds * share - (self.clock() - self.started), 1e-3)

    @property
    def late(self) -> bool:
        """Past half the budget: the learned model's scoring is the first thing given up."""
        return self.clock() - self.started > self.seconds / 2
