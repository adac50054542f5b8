"""The hybrid ranker in process against a real Redis: feedback learning, rules, the time budget,
session-kNN and content-similar candidates."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from stream_reco import learning, messages, pipeline, runtime
from stream_reco.candidates.index_sync import IndexSync
from stream_reco.config import Settings
from stream_reco.events import CatalogItem, Event
from stream_reco.messages import Message
from stream_reco.ranking import diversity, policy
from stream_reco.ranking.feedback import Example
from stream_reco.ranking.policy import Policy, RulesConfig
from stream_reco.runtime import LearnerLoop, Runtime
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid

TS = 1_700_000_000_000
Run = tuple[RedisStore, asyncio.AbstractEventLoop]


def ev(n: int, session: str, item: str, kind: str = "view") -> Event:
    return Event(f"{session}-e{n}", kind, session, item, TS + n * 1000)


@pytest.fixture
def run(settings: Settings) -> Iterator[Run]:
    loop = asyncio.new_event_loop()
    s = dataclasses.replace(
        settings,
        key_prefix=uid("hybrid"),
        require_catalog=False,
        model_min_examples=5,
        learned_ranker=True,
        model_lr=0.5,
    )
    st = RedisStore.connect(s)
    yield st, loop
    loop.run_until_complete(st.clear())
    loop.run_until_complete(st.close())
    loop.close()


def test_feedback_teaches_the_model_and_changes_the_order(run: Run) -> None:
    st, loop = run
    s = st.settings
    # X usually follows A; P is popular on its own. The blend ranks X above P after A.
    history = [e for n in range(6) for e in (ev(n, f"h{n}", "A"), ev(100 + n, f"h{n}", "X"))]
    history += [ev(200 + n, f"p{n}", "P") for n in range(30)]
    loop.run_until_complete(pipeline.ingest(st, history))
    loop.run_until_complete(pipeline.ingest(st, [ev(300, "me", "A")], learn=False))
    blend_first = loop.run_until_complete(pipeline.recommend(st, s, "me", 5))
    ids = [p.item_id for p in blend_first.picks]
    assert ids.index("X") < ids.index("P") and blend_first.model_version == 0

    # Shoppers shown that list keep going to P instead: feedback, but no model updates
    # (learn=False), so only the learned ranker can change the order.
    live = Runtime()
    for n in range(12):
        sid = f"f{n}"
        loop.run_until_complete(pipeline.ingest(st, [ev(400 + n, sid, "A")], learn=False))
        loop.run_until_complete(pipeline.answer_session(st, s, live, sid, 5))
        went = ev(500 + n, sid, "P")
        new = loop.run_until_complete(pipeline.ingest(st, [went], learn=False))
        loop.run_until_complete(learning.learn_from(st, s, new))
    learned = loop.run_until_complete(LearnerLoop(s, "me").step(st))
    assert learned == 12
    loop.run_until_complete(runtime.refresh(st, s, live))
    assert live.model.version >= 1 and live.model_ready(s)
    after = loop.run_until_complete(pipeline.recommend(st, s, "me", 5, live=live))
    ids = [p.item_id for p in after.picks]
    assert ids.index("P") < ids.index("X")
    assert after.model_version == live.model.version
    assert any(f == "pop" for f, _ in after.picks[0].contributions)


def test_feedback_on_session_context_teaches_the_model(run: Run) -> None:
    st, loop = run
    s = st.settings
    shoes = [CatalogItem(i, i, category="shoes", price=80.0) for i in ("A", "Y")]
    loop.run_until_complete(st.apply_catalog([*shoes, CatalogItem("X", "X", category="bags")]))
    # After A (shoes) most shoppers went on to X (bags), a few to Y (shoes): the blend,
    # which knows no categories, ranks X first.
    history = [e for n in range(6) for e in (ev(n, f"h{n}", "A"), ev(100 + n, f"h{n}", "X"))]
    history += [e for n in range(2) for e in (ev(200 + n, f"y{n}", "A"), ev(300 + n, f"y{n}", "Y"))]
    loop.run_until_complete(pipeline.ingest(st, history))
    loop.run_until_complete(pipeline.ingest(st, [ev(400, "me", "A")], learn=False))
    ids = [p.item_id for p in loop.run_until_complete(pipeline.recommend(st, s, "me", 5)).picks]
    assert ids.index("X") < ids.index("Y")

    # Shoppers shown that list pick the other pair of shoes: only its category tells it apart.
    live = Runtime()
    for n in range(12):
        sid = f"c{n}"
        loop.run_until_complete(pipeline.ingest(st, [ev(500 + n, sid, "A")], learn=False))
        loop.run_until_complete(pipeline.answer_session(st, s, live, sid, 5))
        new = loop.run_until_complete(pipeline.ingest(st, [ev(600 + n, sid, "Y")], learn=False))
        loop.run_until_complete(learning.learn_from(st, s, new))
    assert loop.run_until_complete(LearnerLoop(s, "me").step(st)) == 12
    loop.run_until_complete(runtime.refresh(st, s, live))
    assert live.model.weights["category_match"] > 0 and live.model_ready(s)
    after = loop.run_until_complete(pipeline.recommend(st, s, "me", 5, live=live)).picks
    ids = [p.item_id for p in after]
    assert ids.index("Y") < ids.index("X")
    assert "category_match" in dict(after[ids.index("Y")].contributions)


def test_only_one_learner_holds_the_lease(run: Run) -> None:
    st, loop = run
    a, b = LearnerLoop(st.settings, "a"), LearnerLoop(st.settings, "b")
    assert loop.run_until_complete(st.hold_lease("learner", "a", 5000))
    loop.run_until_complete(st.push_examples([b'{"p": {"pop": 1}, "n": [{"seq": 1}], "w": 1}'], 10))
    assert loop.run_until_complete(b.step(st)) == 0  # b is not the learner: examples stay
    assert loop.run_until_complete(a.step(st)) == 1


def _shop(st: RedisStore, loop: asyncio.AbstractEventLoop, rng: random.Random) -> list[str]:
    items = [f"i{n}" for n in range(60)]
    catalog = [
        CatalogItem(i, f"Item {i}", category=f"c{n % 6}", in_stock=n % 7 != 3)
        for n, i in enumerate(items)
    ]
    loop.run_until_complete(st.apply_catalog(catalog))
    history = []
    for n in range(150):
        sess = rng.sample(items, rng.randint(2, 6))
        history += [ev(n * 10 + m, f"hist{n}", i) for m, i in enumerate(sess)]
    loop.run_until_complete(pipeline.ingest(st, history))
    return items


def test_rules_hold_on_every_response(run: Run) -> None:
    st, loop = run
    rng = random.Random(7)
    s = dataclasses.replace(st.settings, require_catalog=True)
    items = _shop(st, loop, rng)
    promoted = ("i5", "i11", "i17", "i3")  # i3 is out of stock: never shown
    rules = Policy(
        category_cap=3,
        mmr_lambda=0.7,
        promoted=promoted,
        promoted_share=0.2,
        discovery_share=0.2,
        exclude=frozenset({"i1"}),
    )
    live = Runtime(rules=_config(rules))
    meta = loop.run_until_complete(st.read_items(items))
    for n in range(25):
        sid = f"me{n}"
        kinds = ["view", "view", "add_to_cart", "purchase"]
        mine = [ev(5000 + m, sid, rng.choice(items), rng.choice(kinds)) for m in range(4)]
        loop.run_until_complete(pipeline.ingest(st, mine, learn=False))
        session = loop.run_until_complete(st.read_session(sid))
        answer = loop.run_until_complete(pipeline.recommend(st, s, sid, 10, live=live))
        ids = [p.item_id for p in answer.picks]
        assert len(ids) == len(set(ids)) <= 10
        for p in answer.picks:
            assert p.item_id not in session.cart and p.item_id not in session.purchased
            assert p.item_id != "i1" and meta[p.item_id].in_stock
        per_cat: dict[str, int] = {}
        for i in ids:
            per_cat[meta[i].category] = per_cat.get(meta[i].category, 0) + 1
        assert max(per_cat.values()) <= 3
        shown_promoted = [p for p in answer.picks if p.slot == "promoted"]
        eligible = [i for i in promoted if meta[i].in_stock and i not in session.cart]
        eligible = [i for i in eligible if i not in session.purchased]
        assert len(shown_promoted) == min(2, len(eligible))
        assert all(p.reason == "promoted" for p in shown_promoted)
        main = diversity.dominant_categories(session, meta, s.weights)
        assert main  # the session has a focus, so discovery slots exist
        for p in answer.picks:
            if p.slot == "discovery":
                assert meta[p.item_id].category not in main


def _config(rules: Policy) -> RulesConfig:
    doc = {
        "category_cap": rules.category_cap,
        "mmr_lambda": rules.mmr_lambda,
        "promoted": list(rules.promoted),
        "promoted_share": rules.promoted_share,
        "discovery_share": rules.discovery_share,
        "exclude": sorted(rules.exclude),
    }
    return policy.from_dict({"default": doc})


def _block_redis(url: str, seconds: float, started: threading.Event) -> None:
    """Keep Redis busy in one script: every other client waits, as behind a slow dependency."""
    client = redis.Redis.from_url(url)
    started.set()
    client.eval(
        "local t = redis.call('TIME') local stop = t[1] * 1e6 + t[2] + ARGV[1] * 1e6 "
        "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] >= stop return 1",
        0,
        seconds,
    )
    client.close()


def test_slow_redis_gives_a_degraded_but_valid_answer_in_time(run: Run) -> None:
    st, loop = run
    s = dataclasses.replace(st.settings, budget_ms=50.0, require_catalog=True)
    items = _shop(st, loop, random.Random(3))
    live = Runtime()
    loop.run_until_complete(runtime.refresh(st, s, live))  # the worker's fallback list
    assert live.fallback
    started = threading.Event()
    blocker = threading.Thread(target=_block_redis, args=(s.redis_url, 0.6, started))
    blocker.start()
    started.wait()
    time.sleep(0.05)  # the script is running now
    t0 = time.perf_counter()
    answer = loop.run_until_complete(pipeline.recommend(st, s, "slow", 10, ["i0"], live=live))
    elapsed = time.perf_counter() - t0
    blocker.join()
    assert answer.degraded == "popular"
    assert elapsed < 0.05 + 0.05  # the budget, plus scheduling slack on a busy 2-core box
    meta = loop.run_until_complete(st.read_items(items))
    assert answer.picks and all(meta[p.item_id].in_stock for p in answer.picks)
    assert "i0" not in [p.item_id for p in answer.picks]
    # And with Redis back, a full answer again.
    assert (
        loop.run_until_complete(pipeline.recommend(st, s, "slow", 10, live=live)).degraded is None
    )


def test_session_knn_votes_for_items_of_similar_sessions(run: Run) -> None:
    st, loop = run
    s = dataclasses.replace(st.settings, cooc_window=1, seq_window=1)
    past = [("A", "B", "C"), ("A", "B", "D"), ("Q", "R", "S")]
    history = [
        ev(n * 10 + m, f"past{n}", i) for n, sess in enumerate(past) for m, i in enumerate(sess)
    ]
    loop.run_until_complete(pipeline.ingest(st, history))
    loop.run_until_complete(
        pipeline.ingest(st, [ev(90, "me", "B"), ev(91, "me", "A")], learn=False)
    )
    answer = loop.run_until_complete(pipeline.recommend(st, s, "me", 10))
    by_id = {p.item_id: p for p in answer.picks}
    assert by_id["C"].features.get("sknn", 0) > 0 and by_id["D"].features.get("sknn", 0) > 0
    assert "S" not in by_id or by_id["S"].features.get("sknn", 0) == 0  # no overlap, no vote


def test_a_new_catalogue_item_has_content_neighbours_at_once(run: Run, tmp_path: Path) -> None:
    st, loop = run
    s = dataclasses.replace(st.settings, require_catalog=True)
    records = [
        b'{"item_id": "lamp1", "title": "Brass desk lamp", "category": "lamps", "brand": "Lux"}',
        b'{"item_id": "sofa1", "title": "Grey sofa", "category": "sofas", "brand": "Comfy"}',
    ]
    msgs = [Message(s.topic_catalog, 0, n, None, r) for n, r in enumerate(records)]
    loop.run_until_complete(messages.on_catalog_messages(st, s, msgs))
    live = Runtime(sync=IndexSync(st.vectors, tmp_path))
    loop.run_until_complete(live.sync.catch_up())  # type: ignore[union-attr]
    loop.run_until_complete(pipeline.ingest(st, [ev(1, "cold", "lamp1")], learn=False))

    new = b'{"item_id": "lamp2", "title": "Brass floor lamp", "category": "lamps", "brand": "Lux"}'  # noqa: E501
    loop.run_until_complete(
        messages.on_catalog_messages(st, s, [Message(s.topic_catalog, 0, 9, None, new)])
    )
    loop.run_until_complete(live.sync.catch_up())  # type: ignore[union-attr]
    answer = loop.run_until_complete(pipeline.recommend(st, s, "cold", 5, live=live))
    ids = [p.item_id for p in answer.picks]
    # Never clicked by anyone, yet recommended, and above the unrelated sofa.
    assert "lamp2" in ids and ("sofa1" not in ids or ids.index("lamp2") < ids.index("sofa1"))
    lamp2 = answer.picks[ids.index("lamp2")]
    assert lamp2.reason.startswith("similar to Brass desk lamp (lamp1)")


def test_rank_orders_only_the_given_items(run: Run) -> None:
    st, loop = run
    s = st.settings
    history = [e for n in range(5) for e in (ev(n, f"r{n}", "A"), ev(50 + n, f"r{n}", "B"))]
    loop.run_until_complete(pipeline.ingest(st, history))
    loop.run_until_complete(pipeline.ingest(st, [ev(90, "me", "A")], learn=False))
    answer = loop.run_until_complete(
        pipeline.recommend(st, s, "me", 3, only=["zzz", "B", "unknown"])
    )
    ids = [p.item_id for p in answer.picks]
    assert sorted(ids) == ["B", "unknown", "zzz"] and ids[0] == "B"


def test_a_restarted_worker_restores_its_index_and_replays_only_the_rest(
    run: Run, tmp_path: Path
) -> None:
    st, loop = run
    s = st.settings
    where = tmp_path / "restart"
    first = [
        Message(s.topic_catalog, 0, n, None, f'{{"item_id": "a{n}", "category": "c"}}'.encode())
        for n in range(5)
    ]
    loop.run_until_complete(messages.on_catalog_messages(st, s, first))
    before = IndexSync(st.vectors, where)
    before.start()
    assert loop.run_until_complete(before.catch_up()) == 5
    loop.run_until_complete(before.save())

    late = [Message(s.topic_catalog, 0, 9, None, b'{"item_id": "late", "category": "c"}')]
    loop.run_until_complete(messages.on_catalog_messages(st, s, late))
    after = IndexSync(st.vectors, where)
    after.start()  # the snapshot: five items, and where the log stood
    assert len(after.index) == 5 and after.position == before.position
    assert loop.run_until_complete(after.catch_up()) == 1  # only what came after it
    assert "late" in after.index and len(after.index) == 6
    # A third worker that starts from nothing converges to the same index.
    fresh = IndexSync(st.vectors, tmp_path / "fresh")
    loop.run_until_complete(fresh.catch_up())
    assert after.index.similar("a0", 3) == fresh.index.similar("a0", 3)


def test_a_record_whose_vector_cannot_be_made_is_refused_whole(run: Run) -> None:
    st, loop = run
    s = st.settings
    huge = b'{"item_id": "Z", "title": "z", "embedding": [1e300, 1.0]}'  # not a float32
    good = b'{"item_id": "G", "title": "g", "embedding": [0.5, 1.0]}'
    msgs = [Message(s.topic_catalog, 0, 0, None, huge), Message(s.topic_catalog, 0, 1, None, good)]
    outs = loop.run_until_complete(messages.on_catalog_messages(st, s, msgs))
    assert [o.topic for o in outs] == [s.topic_deadletter]
    assert b"embedding" in outs[0].value
    assert set(loop.run_until_complete(st.read_items(["Z", "G"]))) == {"G"}
    vectors = loop.run_until_complete(st.vectors.all_vectors())[1]
    assert "G" in vectors and "Z" not in vectors


def test_a_learner_round_with_a_time_budget_leaves_the_rest_queued(run: Run) -> None:
    st, loop = run
    examples = [
        Example({"cooc": 1.0, "pop": 0.1 * n}, [{"pop": 1.0}, {"seq": 0.5}], 1).to_json()
        for n in range(250)
    ]
    loop.run_until_complete(st.push_examples(examples, st.settings.examples_max))
    learner = LearnerLoop(st.settings, owner="budget")
    # No time at all: one chunk, then the budget is spent; the rest waits in the queue.
    assert loop.run_until_complete(learner.step(st, budget_s=0.0)) == runtime.LEARN_CHUNK
    assert loop.run_until_complete(learner.step(st)) == 250 - runtime.LEARN_CHUNK
    assert loop.run_until_complete(learner.step(st)) == 0
