"""The item in view (the page's item, else the session's latest) is not recommended unless the
placement allows it, and no reason names its own item: through a worker and in the evaluator."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from stream_reco import pipeline
from stream_reco.config import Settings
from stream_reco.evaluation import replay
from stream_reco.evaluation.data import SessionLog
from stream_reco.evaluation.metrics import Metrics
from stream_reco.response import Answer
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import Kafka, uid, wait_session
from tests.integration.test_end_to_end import catalogue, event, item, together
from tests.integration.test_live import ask, ids, until

TS = 1_700_000_000_000


def no_reason_cites_its_own_item(answer: dict[str, Any]) -> bool:
    return all(f"({i['item_id']})" not in i["reason"] for i in answer["items"])


def test_the_item_in_view_is_excluded_unless_the_placement_allows_it(kafka: Kafka) -> None:
    s = kafka.settings
    stove, pot, kettle = uid("stove"), uid("pot"), uid("kettle")
    catalogue(kafka, item(stove, "Camp Stove"), item(pot, "Camp Pot"), item(kettle, "Kettle"))
    together(kafka, stove, pot)
    together(kafka, stove, kettle)
    me = uid("me")
    for n in range(2):  # a second look at the stove, as shoppers do
        kafka.send(s.topic_events, me, event(me, stove))
        wait_session(s, me, n + 1)

    latest = ask(kafka, me)  # no page item: the session's latest, the stove, is in view
    assert stove not in ids(latest) and {pot, kettle} <= set(ids(latest))
    on_pot_page = ask(kafka, me, item_id=pot)  # the pot's page: the stove may come back
    assert pot not in ids(on_pot_page) and {stove, kettle} <= set(ids(on_pot_page))
    stove_again = next(i for i in on_pot_page["items"] if i["item_id"] == stove)
    assert stove_again["reason"] == "you viewed it earlier in this visit"
    assert no_reason_cites_its_own_item(latest) and no_reason_cites_its_own_item(on_pot_page)

    shelf = uid("recently_viewed")
    kafka.send(s.topic_config, shelf, {"exclude_item_in_view": False})
    until(lambda: stove in ids(ask(kafka, me, placement=shelf)), "the recently-viewed rule")
    assert pot in ids(ask(kafka, me, placement=shelf, item_id=pot))
    kafka.send(s.topic_config, shelf, None)


def test_the_evaluator_measures_a_placement_that_may_show_the_item_in_view(
    settings: Settings,
) -> None:
    train = [SessionLog("t", ("a", "b"), (TS, TS + 1000), ("view", "view"))]
    test = [SessionLog("s", ("a", "a"), (TS + 5000, TS + 6000), ("view", "view"))]

    async def run() -> tuple[Metrics, Answer]:
        store = RedisStore.connect(replay.eval_settings(settings))
        metrics = Metrics(20, Counter(i for log in train for i in log.items))
        try:
            await replay.train(store, train, lambda n: None)
            await replay.test(store, test, metrics, 20, False, lambda n: None)
            product_page = await pipeline.recommend(store, store.settings, "test/s", 20)
            return metrics, product_page
        finally:
            await store.clear()
            await store.close()

    metrics, product_page = asyncio.run(run())
    assert metrics.summary(20)["hr"] == 100.0  # the second "a", right after the first: a hit
    assert "a" not in [p.item_id for p in product_page.picks]  # a product page: not itself
    assert "b" in [p.item_id for p in product_page.picks]
