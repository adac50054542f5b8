"""The evaluator on the real Redis: the engine's own code path, frozen really frozen, CLI runs."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from pathlib import Path

import orjson

from stream_reco import runtime
from stream_reco.config import Settings
from stream_reco.evaluation import replay
from stream_reco.evaluation.data import Row, SessionLog, split, write_sessions
from stream_reco.evaluation.metrics import Metrics
from stream_reco.evaluation.rankers import Tally, model_summary
from stream_reco.ranking import blend
from stream_reco.ranking.model import Weights
from stream_reco.simulator import Storefront, make_catalog
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import run_cli


def shop_logs(n_sessions: int = 400) -> tuple[list[SessionLog], list[SessionLog]]:
    """Simulated clicks (no catalogue needed), cut into train and the last day as test."""
    shop = Storefront(make_catalog(n_items=80, seed=5), seed=5, run_id="ev")
    rows = [
        Row(str(e["session_id"]), str(e["item_id"]), int(e["ts"]), "view")
        for e in shop.stream(n_sessions=n_sessions)
    ]
    span_days = (rows[-1].ts - rows[0].ts) / 86_400_000
    return split(rows, days=span_days / 4)


async def global_state(store: RedisStore) -> dict[str, object]:
    """Everything the global models hold (popularity and every neighbour list)."""
    keys = [k async for k in store.client.scan_iter(match=f"{store.keys.prefix}:*")]
    out: dict[str, object] = {}
    for key in sorted(keys):
        if key.endswith(b":co") or key.endswith(b":pop"):
            out[key.decode()] = await store.client.zrange(key, 0, -1, withscores=True)
    return out


def test_frozen_replay_leaves_global_models_untouched_and_online_learns(settings: Settings) -> None:
    train, test = shop_logs()

    async def run(online: bool) -> tuple[dict[str, object], dict[str, object], Metrics, Tally]:
        store = RedisStore.connect(replay.eval_settings(settings))
        metrics = Metrics(20, Counter(i for s in train for i in s.items))
        try:
            await replay.train(store, train, lambda n: None)
            before = await global_state(store)
            tally = await replay.test(store, test, metrics, 20, online, lambda n: None)
            return before, await global_state(store), metrics, tally
        finally:
            await store.clear()
            await store.close()

    before, after, metrics, tally = asyncio.run(run(online=False))
    assert before and before == after
    assert metrics.summary(20)["n"] == sum(len(s) - 1 for s in test)
    assert metrics.summary(20)["hr"] > 0  # the engine recommends something right
    # Every scored position is counted once, under the ranker that answered it.
    counts = tally.ranked_by()
    assert set(counts) == {"blend", "model", "popular"}
    assert sum(counts.values()) == metrics.summary(20)["n"] == tally.positions
    before, after, _, _ = asyncio.run(run(online=True))
    assert before != after


def test_split_then_evaluate_commands_end_to_end(settings: Settings, tmp_path: Path) -> None:
    train, test = shop_logs(300)
    raw = tmp_path / "events.csv"
    write_sessions(raw, sorted(train + test, key=lambda s: s.ts[0]))
    logs = train + test
    quarter = (max(s.ts[-1] for s in logs) - min(s.ts[0] for s in logs)) / 86_400_000 / 4
    out = run_cli(
        settings, "split", str(raw), "--days", f"{quarter:.6f}", "--out", str(tmp_path / "cut")
    )
    assert "train.csv" in out and "test.csv" in out
    report = tmp_path / "report.json"
    table = run_cli(
        settings,
        "evaluate",
        "--train",
        str(tmp_path / "cut" / "train.csv"),
        "--test",
        str(tmp_path / "cut" / "test.csv"),
        "--mode",
        "both",
        "--limit",
        "40",
        "--json",
        str(report),
        "--plot",
        str(tmp_path / "curves.png"),
    )
    doc = orjson.loads(report.read_bytes())
    names = set(doc["methods"])
    assert names == {
        "engine[frozen]",
        "engine[online]",
        "pop",
        "spop",
        "markov",
        "itemknn",
        "vsknn",
    }
    for name, m in doc["methods"].items():
        assert 0 <= m["mrr"] <= m["hr"] <= 100, name
        assert len(m["curves"]["hr"]) == 20 and name in table
    for name in ("engine[frozen]", "engine[online]"):
        m = doc["methods"][name]
        assert set(m["ranked_by"]) == {"blend", "model", "popular"}, name
        by = m["ranked_by"]
        assert sum(by.values()) == m["n"] == doc["test_positions"], name
        model = m["model"]
        assert isinstance(model["version"], int) and isinstance(model["examples"], int), name
        # Only a published model (version > 0) can have answered.
        assert by["model"] == 0 or model["version"] > 0, name
        # No ranker of the candidates can put on top what the candidate set never held.
        assert m["hr"] <= m["candidate_recall_at_100"] <= 100, name
        assert f"{name}: ranked by blend {by['blend']} / model {by['model']}" in table
    assert "ranked_by" not in doc["methods"]["vsknn"]
    assert doc["machine"]["cpus"] and doc["test_sessions"] <= 40
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_via_kafka_replay_matches_the_direct_one(settings: Settings, tmp_path: Path) -> None:
    """Train events through the real topics and a worker give the engine the same model."""
    train, test = shop_logs(200)
    write_sessions(tmp_path / "train.csv", train)
    write_sessions(tmp_path / "test.csv", test)
    reports = {}
    for route in ("direct", "kafka"):
        out = tmp_path / f"{route}.json"
        extra = ["--via-kafka"] if route == "kafka" else []
        run_cli(
            settings,
            "evaluate",
            "--train",
            str(tmp_path / "train.csv"),
            "--test",
            str(tmp_path / "test.csv"),
            "--methods",
            "engine",
            "--limit",
            "60",
            "--json",
            str(out),
            *extra,
        )
        reports[route] = orjson.loads(out.read_bytes())["methods"]["engine[frozen]"]
    direct, kafka = reports["direct"], reports["kafka"]
    assert direct["n"] == kafka["n"] > 0
    # Partitions interleave sessions differently than file order and batch them otherwise;
    # decayed sums do not care up to float rounding, which can still break a tie differently.
    assert abs(direct["hr"] - kafka["hr"]) <= 1.0 and abs(direct["mrr"] - kafka["mrr"]) <= 1.0


def test_positions_a_ready_published_model_answers_are_counted_as_the_model(
    settings: Settings,
) -> None:
    """A model workers would use (published, enough examples, positive edge) answers every
    position it is not degraded on, and the report says so with its version."""
    train, test = shop_logs(200)
    ready = dataclasses.replace(settings, learned_ranker=True, model_min_examples=10)

    async def run() -> tuple[Tally, dict[str, object], Metrics]:
        store = RedisStore.connect(replay.eval_settings(ready))
        metrics = Metrics(20, Counter(i for s in train for i in s.items))
        try:
            await replay.train(store, train, lambda n: None)
            doc = Weights(5, 50, dict(blend.DEFAULT), 0.02).to_json()
            await store.publish(runtime.MODEL, doc)
            live = replay.runtime_for_evaluation()
            await runtime.refresh(store, store.settings, live)
            tally = await replay.test(store, test, metrics, 20, False, lambda n: None, live=live)
            published = model_summary(await store.read_published(runtime.MODEL))
            return tally, published, metrics
        finally:
            await store.clear()
            await store.close()

    tally, published, metrics = asyncio.run(run())
    counts = tally.ranked_by()
    assert sum(counts.values()) == metrics.summary(20)["n"] > 0
    assert counts["model"] == tally.positions - tally.degraded > 0
    assert published == {"version": 5, "examples": 50, "edge": 0.02}
