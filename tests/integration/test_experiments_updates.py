"""reco-config updates against the rules the workers run, in a real Redis: a rules file that
clashes with the topic's experiments (changed, then a restart) blocks only the updates that
add to the clash or take part in it, never the one that resolves it nor unrelated ones."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import orjson

from stream_reco import runtime
from stream_reco.config import Settings
from stream_reco.messages import Message, Out, on_config_messages
from stream_reco.storage.redis_store import RedisStore
from tests.integration.conftest import uid

AB = {
    "variants": [
        {"name": "a", "share": 0.5, "control": True},
        {"name": "b", "share": 0.5, "learned_ranker": False},
    ],
}


def _msg(n: int, key: str, value: Any) -> Message:
    return Message("reco-config", 0, n, key.encode(), orjson.dumps(value), None)


def test_a_clashing_rules_file_blocks_only_updates_that_touch_the_clash(
    settings: Settings, tmp_path: Path
) -> None:
    own = dataclasses.replace(settings, key_prefix=uid("xupd"), require_catalog=False)
    rules_file = tmp_path / "rules.json"
    rules_file.write_text(orjson.dumps({"experiments": {"file": AB}}).decode())
    restarted = dataclasses.replace(own, rules_file=str(rules_file))

    async def run() -> tuple[list[Out], list[Out], list[Out], list[str]]:
        store = RedisStore.connect(own)
        try:
            # Published while the rules file had no experiment: both shop-wide after a restart.
            assert not await on_config_messages(store, own, [_msg(0, "experiment:topic", AB)])
            fine = [
                _msg(1, "cart", {"category_cap": 2}),
                _msg(2, "experiment:cart", AB | {"placement": "cart"}),
            ]
            ok = await on_config_messages(store, restarted, fine)
            clash = [
                _msg(3, "experiment:more", AB),  # a third shop-wide experiment
                _msg(4, "experiment:topic", AB | {"salt": "new"}),  # still clashing
            ]
            refused = await on_config_messages(store, restarted, clash)
            stop = [_msg(5, "experiment:topic", AB | {"enabled": False})]
            resolved = await on_config_messages(store, restarted, stop)
            doc = await store.read_published(runtime.RULES)
            return ok, refused, resolved, sorted(orjson.loads(doc or b"{}"))
        finally:
            await store.clear()
            await store.close()

    ok, refused, resolved, published = asyncio.run(run())
    assert ok == [] and resolved == []
    assert published == ["cart", "experiment:cart", "experiment:topic"]
    reasons = [orjson.loads(o.value)["reason"] for o in refused]
    assert len(reasons) == 2 and all("both run on the whole shop" in r for r in reasons)
    assert all('"enabled": false' in r for r in reasons)
