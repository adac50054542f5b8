"""Behavioural vectors against a real Redis: learned from co-occurrence, never reviving a
removed item, stable across rounds, followed by the ANN index."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stream_reco import pipeline
from stream_reco.candidates import behaviour
from stream_reco.candidates.index_sync import IndexSync
from stream_reco.config import Settings
from stream_reco.events import Event
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid

TS = 1_700_000_000_000
Run = tuple[RedisStore, asyncio.AbstractEventLoop]


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(64).astype(np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def run(settings: Settings) -> Iterator[Run]:
    loop = asyncio.new_event_loop()
    st = RedisStore.connect(dataclasses.replace(settings, key_prefix=uid("behaviour")))
    yield st, loop
    loop.run_until_complete(st.clear())
    loop.run_until_complete(st.close())
    loop.close()


def test_items_used_together_come_closer_in_the_index(run: Run, tmp_path: Path) -> None:
    st, loop = run
    base = {i: unit(n) for n, i in enumerate("ABCDX")}
    loop.run_until_complete(st.vectors.publish_many(list(base.items())))
    # A is bought with B again and again; C only with D; X was in sessions too.
    history = [
        Event(f"e{n}-{k}", "view", f"s{n}", item, TS + 10 * n + k)
        for n in range(8)
        for k, item in enumerate(("A", "B") if n < 6 else ("C", "D", "X"))
    ]
    loop.run_until_complete(pipeline.ingest(st, history))
    loop.run_until_complete(st.vectors.publish_many([("X", None)]))  # X leaves the catalogue

    changed = loop.run_until_complete(behaviour.refresh(st))
    assert changed == 4  # A, B, C, D; X is not revived
    indexed = {i: v for i, v in loop.run_until_complete(st.vectors.all_vectors())[1].items()}
    assert "X" not in indexed
    assert indexed["A"] @ base["B"] > base["A"] @ base["B"] + 0.1
    assert loop.run_until_complete(st.vectors.base_vectors(["A"]))["A"] == pytest.approx(base["A"])
    assert loop.run_until_complete(behaviour.refresh(st)) == 4
    again = loop.run_until_complete(st.vectors.all_vectors())[1]
    assert again["A"] == pytest.approx(indexed["A"])  # from the base each round: no drift

    # Blended from a base the catalogue has replaced meanwhile: not written.
    stale = loop.run_until_complete(st.vectors.publish_blended([("A", base["B"], base["C"])]))
    assert stale == 0

    # A stock update leaves the catalogue vector as it was: the blend stays; a new catalogue
    # vector replaces it until the next round.
    loop.run_until_complete(st.vectors.publish_many([("A", base["A"])]))
    assert loop.run_until_complete(st.vectors.all_vectors())[1]["A"] == pytest.approx(indexed["A"])
    loop.run_until_complete(st.vectors.publish_many([("B", base["C"])]))
    assert loop.run_until_complete(st.vectors.all_vectors())[1]["B"] == pytest.approx(base["C"])

    sync = IndexSync(st.vectors, tmp_path / "ann")
    sync.start()
    loop.run_until_complete(sync.catch_up())
    assert sync.index.vector("A") == pytest.approx(indexed["A"], abs=1e-5)
    assert sync.index.vector("B") == pytest.approx(base["C"], abs=1e-5)
