"""Experiments on the real serving path (pipeline + a real Redis, one node and a Redis Cluster):
every answer names its experiment and variant, the holdout gets what it is configured to, and
attribution counts each click and purchase exactly once, however often its batch is
redelivered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from stream_reco.config import Settings
from stream_reco.events import Event, Request
from stream_reco.experiments.assign import assign, unit
from stream_reco.pipeline import handle_events, handle_request
from stream_reco.ranking import policy
from stream_reco.runtime import Runtime
from stream_reco.storage.apply import Position
from tests.integration.own_store import OwnStore, own_store

TS = 1_760_000_000_000
EXP = {
    "salt": "serving",
    "variants": [
        {"name": "a", "share": 0.4, "control": True},
        {"name": "b", "share": 0.4, "learned_ranker": False, "blend": {"sknn": 0}},
    ],
    "holdout": {"share": 0.2, "serve": "none"},
}


class Rig(OwnStore):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.live = Runtime(rules=policy.from_dict({"experiments": {"ab": EXP}}))
        self.exp = self.live.rules.experiments.for_placement(None)

    def counters(self) -> dict[str, dict[str, float]]:
        return self.run(self.store.experiments.counters(self.exp))


@pytest.fixture(params=["node", "cluster"])
def rig(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Rig]:
    with own_store(request, settings, "xserve", Rig, require_catalog=False) as r:
        yield r


def _browse(sid: str, n: int, items: str) -> list[Event]:
    return [
        Event(f"{sid}/v{i}", "view", sid, it, TS + n * 100_000 + i) for i, it in enumerate(items)
    ]


def test_answers_carry_their_variant_and_attribution_is_exactly_once(rig: Rig) -> None:
    sids = [f"x{n}" for n in range(40)]
    training = [e for n, sid in enumerate(sids) for e in _browse(sid, n, "ABCDEFG"[n % 4 :][:4])]
    rig.run(handle_events(rig.store, rig.settings, training, rig.live))
    outs = {
        sid: rig.run(handle_request(rig.store, rig.settings, Request(f"r-{sid}", sid, 3), rig.live))
        for sid in sids
    }
    arms = {sid: assign(rig.exp, unit(None, sid)).name for sid in sids}
    assert {o["experiment"] for o in outs.values()} == {"ab"}
    assert {sid: o["variant"] for sid, o in outs.items()} == arms
    assert set(arms.values()) == {"a", "b", "holdout"}  # 40 sessions reach every arm
    assert all(not outs[s]["items"] for s in sids if arms[s] == "holdout")  # serve = "none"
    assert all(outs[s]["items"] for s in sids if arms[s] != "holdout")
    before = rig.counters()
    for arm in ("a", "b", "holdout"):
        assert before[arm]["sessions"] == sum(a == arm for a in arms.values())
    assert before["holdout"]["impressions"] == 0 and before["b"]["clicks"] == 0

    # Each exposed session clicks its first recommendation (named) and buys its second one
    # (matched by item within the window); a view is never attributed.
    batch: list[Event] = []
    for n, sid in enumerate(sids):
        if arms[sid] == "holdout":
            continue
        items = [i["item_id"] for i in outs[sid]["items"]]
        rid = outs[sid]["recommendation_id"]
        t = TS + n * 100_000 + 60_000  # a minute after the session's browsing
        batch.append(Event(f"{sid}/c", "click", sid, items[0], t, recommendation_id=rid))
        batch.append(Event(f"{sid}/w", "view", sid, items[0], t + 1))
        if len(items) > 1:
            batch.append(Event(f"{sid}/p", "purchase", sid, items[1], t + 2, quantity=2, price=7.5))
    at = [Position("xev", 0, n) for n in range(len(batch))]
    rig.run(handle_events(rig.store, rig.settings, batch, rig.live, positions=at))
    after = rig.counters()
    for arm in ("a", "b"):
        exposed = [s for s in sids if arms[s] == arm]
        bought = [s for s in exposed if len(outs[s]["items"]) > 1]
        assert after[arm]["clicks"] == after[arm]["click_sessions"] == len(exposed)
        assert after[arm]["purchases"] == after[arm]["purchase_sessions"] == len(bought)
        assert after[arm]["revenue"] == pytest.approx(15.0 * len(bought))
        assert after[arm]["revenue2"] == pytest.approx(225.0 * len(bought))

    rig.run(handle_events(rig.store, rig.settings, batch, rig.live, positions=at))  # redelivered
    rig.run(handle_events(rig.store, rig.settings, batch[:5], rig.live))  # re-sent, no positions
    assert rig.counters() == after


def test_a_popular_holdout_and_no_experiment(rig: Rig) -> None:
    popular = {**EXP, "holdout": {"share": 0.2, "serve": "popular"}}
    rig.live.rules = policy.from_dict({"experiments": {"ab": popular}})
    rig.run(handle_events(rig.store, rig.settings, _browse("p0", 0, "ABCD"), rig.live))
    rig.live.fallback = [("A", None), ("B", None)]
    sids = [f"h{n}" for n in range(30)]
    held = [s for s in sids if assign(rig.exp, unit("u-" + s, s)).name == "holdout"]
    assert held
    out = rig.run(
        handle_request(rig.store, rig.settings, Request("r", held[0], 3, user_id="u-" + held[0]),
                       rig.live)
    )  # fmt: skip
    assert out["variant"] == "holdout" and out["degraded"] is None
    assert [i["item_id"] for i in out["items"]] == ["A", "B"]
    rig.live.rules = policy.RulesConfig()
    plain = rig.run(handle_request(rig.store, rig.settings, Request("r2", "p0", 3), rig.live))
    assert plain["experiment"] is None and plain["variant"] == "default"


def test_a_redelivered_kafka_batch_is_attributed_once(rig: Rig) -> None:
    """The worker's own entry point, messages as read from Kafka (partition, offset): the
    second delivery of the same batch, and a crash between applying and attributing, both
    end with each event counted once."""
    from stream_reco.messages import Message, on_event_messages

    sid = next(f"k{n}" for n in range(50) if assign(rig.exp, unit(None, f"k{n}")).name == "b")
    rig.run(handle_events(rig.store, rig.settings, _browse(sid, 0, "ABCD"), rig.live))
    out = rig.run(handle_request(rig.store, rig.settings, Request("r", sid, 3), rig.live))
    rid, item = out["recommendation_id"], out["items"][0]["item_id"]
    docs = [
        {"event_id": "c1", "type": "click", "session_id": sid, "item_id": item,
         "ts": TS + 5000, "recommendation_id": rid},
        {"event_id": "p1", "type": "purchase", "session_id": sid, "item_id": item,
         "ts": TS + 6000, "price": 4.0, "quantity": 3},
    ]  # fmt: skip
    msgs = [
        Message("ev", 2, 100 + n, sid.encode(), orjson.dumps(d), None) for n, d in enumerate(docs)
    ]

    def deliver() -> None:
        rig.run(on_event_messages(rig.store, rig.settings, msgs, rig.live, stream="ev@1"))

    # Applied but not attributed (the worker died in between): the redelivery attributes it.
    rig.live.rules, running = policy.RulesConfig(), rig.live.rules
    deliver()
    assert rig.counters()["b"]["clicks"] == 0
    rig.live.rules = running
    deliver()
    once = rig.counters()["b"]
    assert (once["clicks"], once["purchases"], once["revenue"]) == (1, 1, 12.0)
    deliver()
    assert rig.counters()["b"] == once


def test_a_variant_without_sknn_and_the_learned_ranker_is_served_so(rig: Rig) -> None:
    """With a ready model, control answers carry its version; variant b (learned_ranker
    false, sknn weight 0) is ranked by the fixed blend without session-kNN."""
    from stream_reco.config import FEATURES
    from stream_reco.ranking.model import Weights

    weights = {f: 1.0 for f in FEATURES}
    rig.live.model = Weights(version=7, examples=10**6, weights=weights, edge=0.5)
    assert rig.live.model_ready(rig.settings)
    sids = [f"y{n}" for n in range(40)]
    training = [e for n, sid in enumerate(sids) for e in _browse(sid, n, "ABCDEFG"[n % 4 :][:4])]
    rig.run(handle_events(rig.store, rig.settings, training, rig.live))
    outs = {
        sid: rig.run(handle_request(rig.store, rig.settings, Request(f"r-{sid}", sid, 3), rig.live))
        for sid in sids
    }
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for out in outs.values():
        by_arm.setdefault(str(out["variant"]), []).append(out)
    assert by_arm["a"] and by_arm["b"]

    def features(out: dict[str, Any]) -> set[str]:
        return {c["feature"] for i in out["items"] for c in i["contributions"]}

    assert {o["model_version"] for o in by_arm["a"]} == {7}
    assert {o["model_version"] for o in by_arm["b"]} == {0}
    assert any("sknn" in features(o) for o in by_arm["a"])  # the sessions overlap: it matters
    assert not any("sknn" in features(o) for o in by_arm["b"])
    assert all(o["items"] for o in by_arm["b"])
