"""`inspect --model` prints the deployed learned ranker and says whether workers rank with it."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess

import orjson
import pytest

from stream_reco import runtime
from stream_reco.config import Settings
from stream_reco.ranking import blend
from stream_reco.ranking.model import SCALE, Weights
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import inspect


def inspect_model(settings: Settings) -> subprocess.CompletedProcess[str]:
    return inspect(settings, "--model")


def publish(settings: Settings, name: str, doc: bytes) -> None:
    """Through the store's own publish, as the learner (or the rules agent) does it."""

    async def run() -> None:
        store = RedisStore.connect(settings)
        try:
            await store.publish(name, doc)
        finally:
            await store.close()

    asyncio.run(run())


@pytest.fixture
def own(own: Settings) -> Settings:
    """The conftest's own key prefix, with the learned ranker on."""
    return dataclasses.replace(own, learned_ranker=True, model_min_examples=1000)


def test_nothing_stored_and_no_model_yet_are_told_apart(own: Settings) -> None:
    done = inspect_model(own)
    assert done.returncode == 2 and done.stdout == ""
    assert f"nothing is stored under key prefix {own.key_prefix!r}" in done.stderr

    publish(own, runtime.RULES, b"{}")  # the store holds something, but no model
    done = inspect_model(own)
    assert done.returncode == 1 and done.stdout == ""
    assert "no model published yet" in done.stderr and own.key_prefix in done.stderr


def test_the_published_model_is_printed_with_whether_workers_rank_with_it(own: Settings) -> None:
    weights = {**blend.DEFAULT, "seq": 2.5, "pop": -0.25}
    publish(own, runtime.MODEL, Weights(12, 4200, weights, 0.0312).to_json())
    done = inspect_model(own)
    assert done.returncode == 0, done.stderr
    doc = orjson.loads(done.stdout)
    assert (doc["version"], doc["examples"], doc["edge"]) == (12, 4200, 0.0312)
    assert doc["weights"] == weights and doc["blend"] == dict(blend.for_settings(own))
    assert doc["blend_scale"] == SCALE  # what a fresh model multiplies the blend by
    assert doc["ranks"] is True and doc["because"].startswith("workers rank with it")

    # The same model, judged by workers whose settings keep it out.
    off = dataclasses.replace(own, learned_ranker=False)
    doc = orjson.loads(inspect_model(off).stdout)
    assert doc["ranks"] is False and "STREAM_RECO_LEARNED_RANKER is off" in doc["because"]

    publish(own, runtime.MODEL, Weights(13, 20, weights, -0.01).to_json())
    doc = orjson.loads(inspect_model(own).stdout)
    assert doc["version"] == 13 and doc["ranks"] is False
    assert "fewer than STREAM_RECO_MODEL_MIN_EXAMPLES=1000" in doc["because"]
    assert "edge over the blend is -0.0100" in doc["because"]


def test_an_unreadable_model_is_named_not_printed(own: Settings) -> None:
    publish(own, runtime.MODEL, b'{"format": 99, "version": 1}')
    done = inspect_model(own)
    assert done.returncode == 1 and done.stdout == ""
    assert "cannot be read" in done.stderr and "format 99" in done.stderr
