"""Replay sessions through the engine's own code: the worker's ingestion, the query ranking."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from stream_reco import learning, pipeline, runtime
from stream_reco.config import Settings
from stream_reco.evaluation.data import SessionLog
from stream_reco.evaluation.metrics import Metrics
from stream_reco.evaluation.rankers import Tally, model_summary
from stream_reco.evaluation.via_kafka import ingest as via_kafka_ingest
from stream_reco.events import Event
from stream_reco.ranking import blend, examples, feedback, model, policy
from stream_reco.response import Answer
from stream_reco.runtime import LearnerLoop, Runtime
from stream_reco.storage.protocol import Store
from stream_reco.storage.redis_store import RedisStore

TRAIN_BATCH = 1000
# Train events that also become examples for the learner: enough for it to find its weights
# on every visible data set, few enough to keep the train phase's speed (a candidate gather each)
# ... and at least this many sampled events when the stream is short, so a small shop's
# learner still sees a few hundred examples (a small stream is quick to train anyway).
STREAM_SHARE = 0.02
STREAM_SAMPLED_MIN = 10_000
LEARN_EVERY = 500  # answers between learner rounds when the ranker learns during a test
Tick = Callable[[int], None]
# The placement the protocol measures: it scores the next event, and a second look at the item
# just viewed is among the commonest next events, so the engine is asked as a "recently viewed"
# shelf is, with the item in view allowed (a product page excludes it: docs/rules.md).
PLACEMENT = "evaluation"
RULES = policy.from_dict({"placements": {PLACEMENT: {"exclude_item_in_view": False}}})


def runtime_for_evaluation() -> Runtime:
    """A worker's live state with the evaluated placement's rules and nothing else."""
    return Runtime(rules=RULES, base_rules=RULES)


def events(log: SessionLog, scope: str) -> list[Event]:
    """A logged session as engine events; `scope` keeps train and test ids apart."""
    sid = f"{scope}/{log.session_id}"
    return [
        Event(f"{sid}/{n}", kind, sid, item, ts)
        for n, (item, ts, kind) in enumerate(zip(log.items, log.ts, log.types, strict=True))
    ]


def eval_settings(settings: Settings) -> Settings:
    """A private key space, and no catalogue: logged data names items without metadata."""
    return dataclasses.replace(
        settings,
        key_prefix=f"{settings.key_prefix}-eval-{uuid.uuid4().hex[:8]}",
        require_catalog=False,
    )


async def train(
    store: Store, logs: Sequence[SessionLog], tick: Tick, share: float = STREAM_SHARE
) -> float:
    """Ingest train sessions in time order through the real update, and (with a `share` > 0,
    raised to sample at least STREAM_SAMPLED_MIN events) run the learner over the stream as a
    worker would: a sampled event first becomes an example of what its session's candidates
    were just before it. The model is published at the end, ready for the test. Returns
    events per second."""
    stream = sorted((e for log in logs for e in events(log, "train")), key=lambda e: e.ts)
    if share > 0:
        share = max(share, min(1.0, STREAM_SAMPLED_MIN / max(len(stream), 1)))
    settings = store.settings
    fixed = model.Weights(0, 0, blend.for_settings(settings))
    learner = model.Learner(fixed, lr=settings.model_lr, blend=fixed) if share > 0 else None
    live = runtime_for_evaluation()
    seen: set[str] = set()
    started = time.perf_counter()
    for n in range(0, len(stream), TRAIN_BATCH):
        batch = stream[n : n + TRAIN_BATCH]
        if learner is None:
            await _apply(store, batch, tick)
            continue
        before, picked, after = _cut(batch, seen, share)
        await _apply(store, before, tick)  # each picked session exactly as it was before its pick
        for _, x in await learning.stream_examples(store, settings, live, picked, timed=False):
            learner.learn(x.positive, x.negatives)
        await _apply(store, after, tick)
    if learner is not None and learner.examples:
        await store.publish(runtime.MODEL, learner.snapshot().to_json())
    return len(stream) / max(time.perf_counter() - started, 1e-9)


def _cut(
    batch: Sequence[Event], seen: set[str], share: float
) -> tuple[list[Event], list[Event], list[Event]]:
    """A batch as (before, picked, after): `picked` holds each session's first sampled event
    that has an earlier one; its session's events from it on go `after`, everything else
    `before`. Applying `before` first leaves each picked session just as it was before its
    pick, while the batch still costs two writes, not one per example. The global models then
    also hold other sessions' events of the same batch that came later (at most a batch of
    foresight, where a worker, which makes examples before applying its batch, has a batch of
    staleness instead)."""
    picks: dict[str, Event] = {}
    for e in batch:
        if (
            e.session_id in seen
            and e.session_id not in picks
            and examples.sampled(e.event_id, share)
        ):
            picks[e.session_id] = e
        seen.add(e.session_id)
    before: list[Event] = []
    after: list[Event] = []
    cut: set[str] = set()
    for e in batch:
        if picks.get(e.session_id) is e:
            cut.add(e.session_id)
        (after if e.session_id in cut else before).append(e)
    return before, list(picks.values()), after


async def _apply(store: Store, batch: list[Event], tick: Tick) -> None:
    if batch:
        await pipeline.ingest(store, batch, learn=True)
        tick(len(batch))


async def test(
    store: Store,
    logs: Sequence[SessionLog],
    metrics: Metrics,
    k: int,
    online: bool,
    tick: Tick,
    concurrency: int = 1,
    live: Runtime | None = None,
    learner: LearnerLoop | None = None,
) -> Tally:
    """SR-GNN protocol: at each position i >= 1 ask for the top k given events 0..i-1 and score
    the item at i. Frozen: test events only build their own session. Online: after scoring,
    the event is learned from, as in production. Sessions run `concurrency` at a time, each
    strictly in order; at 1 the latencies are the engine's alone, not its neighbours'.
    With a `learner`, every answer is remembered and the next event is feedback, as in a
    worker: the learned ranker trains as the test goes (prequential: answer, then learn).
    Answers are for PLACEMENT. Returns which ranker answered how many positions, and how
    many answers were degraded (over the budget)."""
    settings = store.settings
    live = live or runtime_for_evaluation()
    gate = asyncio.Semaphore(concurrency)
    tally = Tally()
    answered = 0

    async def one(log: SessionLog) -> None:
        nonlocal answered
        async with gate:
            evs = events(log, "test")
            for i, ev in enumerate(evs):
                if i >= 1:
                    started = time.perf_counter()
                    answer = await pipeline.recommend(
                        store, settings, ev.session_id, k, placement=PLACEMENT, live=live
                    )
                    ms = (time.perf_counter() - started) * 1000
                    metrics.add(ev.item_id, [p.item_id for p in answer.picks], ms)
                    tally.add(answer, ev.item_id)
                    tick(1)
                    if learner is not None:
                        answered += 1
                        step = answered % LEARN_EVERY == 0
                        await _feedback(store, live, learner, ev.session_id, answer, step)
                new = await pipeline.ingest(store, [ev], learn=online)
                if learner is not None:
                    await learning.learn_from(store, settings, new)

    await asyncio.gather(*(one(log) for log in logs))
    return tally


async def _feedback(
    store: Store,
    live: Runtime,
    learner: LearnerLoop,
    session_id: str,
    answer: Answer,
    step: bool,
) -> None:
    """Remember what was shown, and now and then let the learner learn and publish."""
    await store.remember_shown(session_id, feedback.shown("eval", answer.shown))
    if step:
        await learner.step(store, batch=LEARN_EVERY)
        await runtime.refresh(store, store.settings, live)


def wire(e: Event) -> dict[str, object]:
    """An engine event as a `reco-events` message (docs/contract.md)."""
    return {
        "event_id": e.event_id,
        "type": e.type,
        "session_id": e.session_id,
        "item_id": e.item_id,
        "ts": e.ts,
        "user_id": e.user_id,
    }


async def evaluate_engine(
    settings: Settings,
    train_logs: Sequence[SessionLog],
    test_logs: Sequence[SessionLog],
    metrics: Metrics,
    k: int,
    online: bool,
    on_train: Tick,
    on_test: Tick,
    via_kafka: bool = False,
    learn_ranker: bool = False,
) -> dict[str, Any]:
    """Train then test on a fresh private key space that is deleted afterwards. `via_kafka`:
    train events go through the real topics and a worker instead of straight to the store.
    Reports which ranker answered each position and the model published by the end."""
    if learn_ranker:
        settings = dataclasses.replace(settings, learned_ranker=True)
    store = RedisStore.connect(eval_settings(settings))
    try:
        await store.check_format()
        if via_kafka:
            stream = sorted(
                (e for log in train_logs for e in events(log, "train")), key=lambda e: e.ts
            )
            msgs = [wire(e) for e in stream]
            rate = await asyncio.to_thread(via_kafka_ingest, store.settings, msgs, on_train)
        else:
            rate = await train(store, train_logs, on_train)
        live = runtime_for_evaluation()  # and, as a worker has it, the fallback list
        await runtime.refresh(store, store.settings, live)
        learner = LearnerLoop(store.settings, "evaluation") if learn_ranker else None
        tally = await test(
            store, test_logs, metrics, k, online, on_test, live=live, learner=learner
        )
        return {
            "train_events_per_s": rate,
            "degraded_answers": tally.degraded,
            "ranked_by": tally.ranked_by(),
            "model": model_summary(await store.read_published(runtime.MODEL)),
            "candidate_recall_at_100": tally.candidate_recall_at_100,
        }
    finally:
        await store.clear()
        await store.close()
