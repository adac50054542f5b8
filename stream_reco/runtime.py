"""What a worker holds in memory and refreshes while it runs: rules, model, fallback list."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import orjson

from stream_reco import logs
from stream_reco.candidates.ann import ItemIndex
from stream_reco.candidates.index_sync import IndexSync
from stream_reco.config import Settings
from stream_reco.events import CatalogItem, Rejected
from stream_reco.ranking import blend, policy
from stream_reco.ranking.examples import Fresh
from stream_reco.ranking.feedback import Example
from stream_reco.ranking.model import (
    Learner,
    ModelFormatError,
    Weights,
    blend_weights,
    stored_version,
)
from stream_reco.ranking.policy import RulesConfig
from stream_reco.storage.protocol import Store

log = logging.getLogger(__name__)
MODEL = "model"  # the published-document name of the learned ranker's weights
RULES = "rules"  # ... of the rules updates taken from reco-config
FALLBACK_SIZE = 200
LEARN_CHUNK = 100  # examples learned between two checks of a round's time budget
MODEL_NEWS_S = 60.0  # the learner publishes up to once a refresh: its news, once a minute
_PUBLISHED = logs.Throttled(every_s=MODEL_NEWS_S, log=log)
_NEW_MODEL = logs.Throttled(every_s=MODEL_NEWS_S, log=log)
_BAD_MODEL = logs.Throttled(every_s=MODEL_NEWS_S, log=log, level=logging.WARNING)


@dataclass
class Runtime:
    """Per-worker live state. Replaced field by field by `refresh`, never mutated in place,
    so a request that already holds a value keeps a consistent one."""

    rules: RulesConfig = field(default_factory=RulesConfig)
    model: Weights = field(default_factory=blend_weights)
    # Popular in-stock items with metadata, for answers that cannot wait for Redis.
    fallback: list[tuple[str, CatalogItem | None]] = field(default_factory=list)
    base_rules: RulesConfig = field(default_factory=RulesConfig)
    rules_doc: bytes | None = None
    sync: IndexSync | None = None  # the worker's ANN index and how it follows the vector log
    fresh: Fresh | None = None  # examples from the stream for this worker's learner, if it learns

    @property
    def index(self) -> ItemIndex | None:
        return self.sync.index if self.sync else None

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        """The rules file (if any) fixes the base rules; a bad file stops the worker early."""
        base = policy.load_file(settings.rules_file) if settings.rules_file else RulesConfig()
        return cls(rules=base, base_rules=base)

    def model_ready(self, settings: Settings, model: Weights | None = None) -> bool:
        """The learned model ranks once it has seen enough examples *and* orders recent ones
        better than the fixed blend; otherwise the blend keeps ranking."""
        m = model or self.model
        if not settings.learned_ranker:
            return False  # it still learns, so switching it on starts from a trained model
        return m.version > 0 and m.examples >= settings.model_min_examples and m.edge > 0


def store_update(doc: bytes | None, key: str, overrides: object) -> bytes:
    """The stored rules document with one placement's overrides set (or dropped on None)."""
    current = orjson.loads(doc) if doc else {}
    if overrides is None:
        current.pop(key, None)
    else:
        current[key] = overrides
    return orjson.dumps(current, option=orjson.OPT_SORT_KEYS)


async def refresh(store: Store, settings: Settings, live: Runtime) -> None:
    """Reload published rules and model weights when they changed; refresh the fallback; bring
    the metadata cache up to date (so requests rarely have to)."""
    raw = await store.read_published(MODEL)
    if raw is not None:
        try:
            weights = Weights.from_json(raw)
        except ModelFormatError as exc:
            _BAD_MODEL.note("ignoring the published model: %s", exc)
        else:
            if weights.version != live.model.version:
                _log_model(settings, live, weights)
                live.model = weights
    doc = await store.read_published(RULES)
    if doc != live.rules_doc:
        log.info("rules reloaded from Redis: %s", rules_changes(live.rules_doc, doc))
        live.rules, live.rules_doc = rules_from(live.base_rules, doc), doc
    popular = await store.read_popular(FALLBACK_SIZE)
    meta = await store.read_items([i for i, _ in popular])
    live.fallback = [
        (i, meta.get(i))
        for i, _ in popular
        if (i in meta and meta[i].in_stock) or (i not in meta and not settings.require_catalog)
    ]
    await store.sync_catalog()  # last: a failure here must not hold back the reloads above


def rules_changes(old: bytes | None, new: bytes | None) -> str:
    """What changed between two stored rules documents, by placement and field name (never a
    value: values may name items)."""
    before, after = (orjson.loads(d) if d else {} for d in (old, new))
    parts = []
    for key in sorted(set(before) | set(after)):
        was, now = before.get(key), after.get(key)
        if was == now:
            continue
        if now is None:
            parts.append(f"{key!r} override removed")
            continue
        was, now = (d if isinstance(d, dict) else {} for d in (was, now))
        fields = sorted(f for f in set(was) | set(now) if was.get(f) != now.get(f))
        verb = "changed" if key in before else "set"
        parts.append(f"{key!r} {verb} ({', '.join(fields) or 'no fields'})")
    return "; ".join(parts) or "no change"


def _log_model(settings: Settings, live: Runtime, new: Weights) -> None:
    """A new model version: throttled (one a second while the learner learns); whether it now
    ranks, every time that changes."""
    _NEW_MODEL.note(
        "learned ranker v%d loaded: %d examples seen, edge %+.4f",
        new.version,
        new.examples,
        new.edge,
    )
    ranks, ranked = live.model_ready(settings, new), live.model_ready(settings)
    if ranks != ranked:
        who = "the learned ranker" if ranks else "the fixed blend"
        log.info(
            "answers now ranked by %s (learned ranker v%d, edge %+.4f)", who, new.version, new.edge
        )


def rules_from(base: RulesConfig, doc: bytes | None) -> RulesConfig:
    """The base rules with every stored `reco-config` update applied, in key order."""
    if not doc:
        return base
    rules = base
    for key, value in sorted(orjson.loads(doc).items()):
        update = policy.decode_config(key.encode(), orjson.dumps(value))
        if isinstance(update, Rejected):  # checked when it was stored; a newer version's field
            log.warning("skipping stored rules for %r: %s", key, update.reason)
            continue
        rules = rules.apply(update)
    return rules


class LearnerLoop:
    """The one learner of the model (whoever holds the lease): takes queued examples, learns
    them off the event loop, publishes the new weights for every worker."""

    def __init__(self, settings: Settings, owner: str, fresh: Fresh | None = None) -> None:
        self.settings, self.owner, self.fresh = settings, owner, fresh
        self.learner: Learner | None = None

    async def step(self, store: Store, batch: int = 1000, budget_s: float | None = None) -> int:
        """One round; returns how many examples were learned (0 when not the learner). With
        `budget_s`, the round stops taking examples once it has learned for that long: the
        learner shares its worker's CPU with answers, and the examples it leaves wait (the
        queue is capped) rather than slowing every answer down."""
        ttl_ms = int(max(self.settings.refresh_s * 10, 5) * 1000)
        if not await store.hold_lease("learner", self.owner, ttl_ms):
            if self.learner is not None:
                log.info("learner lease lost: another worker learns the ranker now")
            self.learner = None  # another worker learns; take over from its weights later
            if self.fresh is not None:
                self.fresh.wanted = False
                self.fresh.clear()
            return 0
        if self.learner is None:
            # The blend this deployment ranks with: where learning starts, what it must beat.
            base = Weights(0, 0, blend.for_settings(self.settings))
            raw = await store.read_published(MODEL)
            try:
                start = Weights.from_json(raw) if raw else base
            except ModelFormatError:
                start = base  # unreadable: start over rather than stop learning
            self.learner = Learner(start, lr=self.settings.model_lr, blend=base)
            if start is base and raw:
                self.learner.version = stored_version(raw)
            log.info("learner lease taken: this worker learns the ranker, from v%d", start.version)
        if self.fresh is not None:
            self.fresh.wanted = True  # from now on its ingestion makes examples from the stream
        learner, learned, started = self.learner, 0, time.perf_counter()
        chunk = batch if budget_s is None else min(batch, LEARN_CHUNK)
        while learned < batch:
            n = min(chunk, batch - learned)
            mine = self.fresh.take(n) if self.fresh is not None else []
            raw = await store.pop_examples(n - len(mine)) if len(mine) < n else []
            examples = mine + [x for x in map(Example.from_json, raw) if x]
            if examples:
                await asyncio.to_thread(_learn_all, learner, examples)  # off the event loop
            learned += len(examples)
            spent = time.perf_counter() - started
            if len(mine) + len(raw) < n or (budget_s is not None and spent >= budget_s):
                break
        if learned:
            model = learner.snapshot()
            await store.publish(MODEL, model.to_json())
            _PUBLISHED.note(
                "learned ranker v%d published: %d examples seen, edge %+.4f",
                model.version,
                model.examples,
                model.edge,
            )
        return learned


def _learn_all(learner: Learner, examples: list[Example]) -> None:
    for x in examples:
        learner.learn(x.positive, x.negatives, x.weight)
