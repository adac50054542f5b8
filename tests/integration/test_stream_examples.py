"""The learner's examples from the stream itself, on the real Redis: serving features, made
once per event, learned by the lease holder only, and by the evaluator's train phase."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import pytest

from stream_reco import learning, pipeline, runtime
from stream_reco.candidates import Candidate
from stream_reco.config import Settings
from stream_reco.errors import ERRORS
from stream_reco.evaluation import replay
from stream_reco.evaluation.rankers import model_summary
from stream_reco.ranking import blend, examples
from stream_reco.ranking.model import Weights
from stream_reco.runtime import LearnerLoop, Runtime
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import Kafka, uid, wait_item, wait_session
from tests.integration.test_end_to_end import event, item
from tests.integration.test_evaluation import shop_logs
from tests.integration.test_hybrid import Run, ev


@pytest.fixture
def run(settings: Settings) -> Iterator[Run]:
    loop = asyncio.new_event_loop()
    s = dataclasses.replace(settings, key_prefix=uid("stream-ex"), require_catalog=False)
    st = RedisStore.connect(s)
    history = [
        e
        for n in range(8)
        for e in (ev(n, f"h{n}", "A"), ev(100 + n, f"h{n}", "X"), ev(200 + n, f"h{n}", "Y"))
    ]
    history += [ev(300 + n, f"p{n}", "P") for n in range(20)]
    loop.run_until_complete(pipeline.ingest(st, history))
    yield st, loop
    loop.run_until_complete(st.clear())
    loop.run_until_complete(st.close())
    loop.close()


def test_an_example_holds_the_features_a_request_would_have_ranked_with(run: Run) -> None:
    st, loop = run
    s = st.settings
    loop.run_until_complete(pipeline.ingest(st, [ev(400, "me", "A")], learn=False))
    live = Runtime()
    made = loop.run_until_complete(learning.stream_examples(st, s, live, [ev(401, "me", "X")]))
    [(_, x)] = made
    # A request the learned model answers: the candidates it scores carry what it weighs.
    live.model = Weights(1, s.model_min_examples, dict(blend.DEFAULT), edge=0.01)
    answer = loop.run_until_complete(pipeline.recommend(st, s, "me", s.default_k, live=live))
    assert answer.model_version == 1
    served = {c.item_id: c.features for c, _ in answer.ranked}
    assert x.positive == served["X"]  # the same features, from the same code
    assert {"seq", "seq0", "seq_rr", "source_recency"} <= set(x.positive)
    # Its negatives are the other candidates, the item in view (A) among them: a second
    # look at it would have been a next event like any other.
    listed = [x.positive, *x.negatives]
    assert all(f in listed for f in served.values())  # every candidate, feature for feature
    assert len(listed) == len(served) + 1


def test_no_example_for_a_first_event_or_an_item_no_source_found(run: Run) -> None:
    st, loop = run
    s, live = st.settings, Runtime()
    first = [ev(500, "new", "A")]  # nothing came before it in its session
    assert loop.run_until_complete(learning.stream_examples(st, s, live, first)) == []
    loop.run_until_complete(pipeline.ingest(st, [ev(501, "other", "A")], learn=False))
    unknown = [ev(502, "other", "never-seen")]
    assert loop.run_until_complete(learning.stream_examples(st, s, live, unknown)) == []


def test_the_lease_holder_learns_from_events_alone_once_per_event(run: Run) -> None:
    st, loop = run
    s = st.settings
    mine, theirs = Runtime(), Runtime()
    mine.fresh = examples.Fresh(examples.Sampler(share=1.0))
    theirs.fresh = examples.Fresh(examples.Sampler(share=1.0))
    learner, other = LearnerLoop(s, "me", mine.fresh), LearnerLoop(s, "them", theirs.fresh)
    assert loop.run_until_complete(learner.step(st)) == 0  # takes the lease; nothing yet
    assert loop.run_until_complete(other.step(st)) == 0 and not theirs.fresh.wanted
    starts = [ev(600 + n, f"s{n}", "A") for n in range(6)]
    nexts = [ev(700 + n, f"s{n}", "X") for n in range(6)]
    for live in (mine, theirs):
        loop.run_until_complete(pipeline.handle_events(st, s, starts, live))
    loop.run_until_complete(pipeline.handle_events(st, s, nexts, mine))
    assert len(mine.fresh.waiting) == 6 and not theirs.fresh.waiting
    loop.run_until_complete(pipeline.handle_events(st, s, nexts, mine))  # redelivered
    assert len(mine.fresh.waiting) == 6  # a redelivery taught its lesson the first time
    assert loop.run_until_complete(learner.step(st)) == 6  # no request was ever answered
    model = model_summary(loop.run_until_complete(st.read_published(runtime.MODEL)))
    assert model["version"] == 1 and model["examples"] == 6


def test_the_evaluators_train_phase_runs_the_learner(settings: Settings) -> None:
    train, _ = shop_logs(200)

    async def go(share: float) -> dict[str, object]:
        store = RedisStore.connect(replay.eval_settings(settings))
        try:
            await replay.train(store, train, lambda n: None, share=share)
            return model_summary(await store.read_published(runtime.MODEL))
        finally:
            await store.clear()
            await store.close()

    learned = asyncio.run(go(0.5))
    assert learned["version"] == 1 and learned["examples"] > 50
    assert asyncio.run(go(0.5)) == learned  # the same events sampled, the same model
    assert asyncio.run(go(0.0))["version"] == 0  # no share, no learner


def test_a_failing_example_costs_the_examples_not_the_events(run: Run) -> None:
    st, loop = run
    gone = dataclasses.replace(st.settings, redis_url="redis://127.0.0.1:1/0")  # nobody there
    down = RedisStore.connect(gone)
    before = ERRORS["stream_example_failed"]
    try:
        made = loop.run_until_complete(
            learning.stream_examples(down, gone, Runtime(), [ev(800, "me", "X")])
        )
    finally:
        loop.run_until_complete(down.close())
    assert made == [] and ERRORS["stream_example_failed"] == before + 1


def test_a_learner_starting_over_continues_the_version_numbers(run: Run) -> None:
    st, loop = run
    old = b'{"format": 1, "version": 41, "examples": 900, "weights": {"seq": 1.0}}'
    loop.run_until_complete(st.publish(runtime.MODEL, old))
    x = examples.from_ranked(
        [(Candidate("a", {"seq": 1.0}), 1.0), (Candidate("b", {"pop": 1.0}), 0.0)], "b"
    )
    assert x is not None
    loop.run_until_complete(st.push_examples([x.to_json()], 10))
    assert loop.run_until_complete(LearnerLoop(st.settings, "me").step(st)) == 1
    model = model_summary(loop.run_until_complete(st.read_published(runtime.MODEL)))
    assert model["version"] == 42 and model["examples"] == 1  # learned afresh, numbered on


def test_a_running_worker_learns_from_events_no_one_was_shown_anything_for(
    kafka: Kafka, settings: Settings
) -> None:
    """The worker's own wiring: its learner holds the lease, its ingestion makes examples."""

    async def examples_seen() -> int:
        store = RedisStore.connect(settings)
        try:
            return int(model_summary(await store.read_published(runtime.MODEL))["examples"])
        finally:
            await store.close()

    a, b = uid("lamp"), uid("shade")
    for i in (a, b):
        kafka.send(settings.topic_catalog, i, item(i, i))
    wait_item(settings, b, True)
    sessions = [uid("quiet") for _ in range(12)]
    for sid in sessions:  # views only: no push, no request, so no shown list to learn from
        kafka.send(settings.topic_events, sid, event(sid, a))
    for sid in sessions:
        wait_session(settings, sid, 1)
    before = asyncio.run(examples_seen())
    deadline = time.monotonic() + 20
    for sid in sessions:  # each session's next event, the label of its example
        kafka.send(settings.topic_events, sid, event(sid, b))
        time.sleep(0.3)  # the lease holder samples a few events a second
    while asyncio.run(examples_seen()) <= before:
        assert time.monotonic() < deadline, "no example from the stream reached the model"
        time.sleep(0.2)
