"""Experiment counters on /metrics and on the dashboard: what attribution stored in a real Redis
is what the scrape and the page show, per experiment and variant."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from stream_reco import metrics
from stream_reco.config import Settings
from stream_reco.dashboard import data
from stream_reco.events import Event, Request
from stream_reco.pipeline import handle_events, handle_request
from stream_reco.ranking import policy
from stream_reco.runtime import Runtime
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid

TS = 1_760_000_000_000
EXP = {
    "salt": "metrics",
    "variants": [
        {"name": "a", "share": 0.5, "control": True},
        {"name": "b", "share": 0.5, "blend": {"sknn": 0}},
    ],
}


def click(answer: dict[str, Any], n: int) -> Event:
    """The session clicks the answer's first item, naming the recommendation."""
    sid, first = str(answer["session_id"]), answer["items"][0]["item_id"]
    rid = answer["recommendation_id"]
    return Event(f"{sid}/c", "click", sid, first, TS + 5_000_000 + n, recommendation_id=rid)


def test_experiment_counters_reach_the_scrape_and_the_dashboard(settings: Settings) -> None:
    own = dataclasses.replace(settings, key_prefix=uid("xmetrics"), require_catalog=False)

    async def run() -> tuple[str, dict[str, dict[str, float]], list[dict[str, object]]]:
        store = RedisStore.connect(own)
        live = Runtime(rules=policy.from_dict({"experiments": {"ab": EXP}}))
        try:
            sids = [f"m{n}" for n in range(24)]
            browse = [
                Event(f"{sid}/v{i}", "view", sid, it, TS + n * 100_000 + i)
                for n, sid in enumerate(sids)
                for i, it in enumerate("ABCDEF"[n % 3 :][:3])
            ]
            await handle_events(store, own, browse, live)
            outs = [await handle_request(store, own, Request(f"r-{s}", s, 3), live) for s in sids]
            clicks = [click(o, n) for n, o in enumerate(outs[::2]) if o["items"]]
            await handle_events(store, own, clicks, live)
            obs = metrics.Observer(own, live, [], lambda: store)
            text = (await obs.scrape()).decode()
            counters = await store.experiments.counters(live.rules.experiments.for_placement(None))
            board = await data.Board(obs).snapshot()
            return text, counters, board["experiments"]
        finally:
            await store.clear()
            await store.close()

    text, counters, rows = asyncio.run(run())
    got = {
        (s.name, s.labels.get("variant")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.labels.get("experiment") == "ab"
    }
    assert counters["a"]["sessions"] + counters["b"]["sessions"] == 24
    assert counters["a"]["clicks"] + counters["b"]["clicks"] > 0
    for variant in ("a", "b"):
        for field in ("sessions", "impressions", "clicks"):
            assert got[(f"stream_reco_experiment_{field}", variant)] == counters[variant][field]
    by_variant = {r["variant"]: r for r in rows}
    assert set(by_variant) == {"a", "b"}
    for variant, row in by_variant.items():
        low, high = row["ctr_interval"]
        assert low <= row["ctr"] <= high, row
        assert row["impressions"] == counters[variant]["impressions"]
