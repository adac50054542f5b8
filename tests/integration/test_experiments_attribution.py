"""Attribution's finer promises on a real Redis (one node and a Redis Cluster): CTR counts an
answer once and only clicks naming it, an answer's time is event time (a push's trigger's, a
holdout's from the session's next event), a redelivered request counts once, a failing script
leaves no count behind, and every outcome of an exposed session counts for its arm."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from stream_reco.config import Settings
from stream_reco.errors import StoreError
from stream_reco.events import Event, Request
from stream_reco.experiments.assign import assign, unit
from stream_reco.experiments.store import UNKNOWN_TS, Shown
from stream_reco.pipeline import handle_events, handle_request
from stream_reco.ranking import policy
from stream_reco.runtime import Runtime
from stream_reco.storage.apply import Position
from tests.integration.own_store import OwnStore, own_store

TS = 1_760_000_000_000
EXP = {
    "salt": "attribution",
    "variants": [
        {"name": "a", "share": 0.4, "control": True},
        {"name": "b", "share": 0.4, "learned_ranker": False},
    ],
    "holdout": {"share": 0.2, "serve": "none"},
}


class Rig(OwnStore):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.live = Runtime(rules=policy.from_dict({"experiments": {"ab": EXP}}))
        self.exp = self.live.rules.experiments.for_placement(None)
        self.log = self.store.experiments

    def counters(self) -> dict[str, dict[str, float]]:
        return self.run(self.log.counters(self.exp))

    def record(self, sid: str) -> dict[str, Any]:
        raw = self.run(self.store.client.get(self.key(sid)))
        return orjson.loads(raw)

    def key(self, sid: str) -> str:
        return self.log.keys.experiment("ab", f"s:{sid}")

    def attribute(self, events: list[Event], at: list[Position | None] | None = None) -> int:
        return self.run(self.log.attribute([self.exp], events, at))

    def arm_of(self, name: str, prefix: str) -> str:
        return next(f"{prefix}{n}" for n in range(200) if self.arm(f"{prefix}{n}") == name)

    def arm(self, sid: str) -> str:
        return assign(self.exp, unit(None, sid)).name


@pytest.fixture(params=["node", "cluster"])
def rig(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Rig]:
    with own_store(request, settings, "xattr", Rig, require_catalog=False) as r:
        yield r


def _shown(sid: str, rid: str, items: str, ts: int, variant: str = "a") -> Shown:
    return Shown("ab", variant, sid, rid, tuple(items), ts)


def test_ctr_counts_each_answer_once_and_only_clicks_naming_it(rig: Rig) -> None:
    rig.run(rig.log.record(_shown("s1", "r1", "AB", TS)))
    rig.run(rig.log.record(_shown("s1", "r2", "CD", TS + 10)))
    clicks = [
        Event("c1", "click", "s1", "A", TS + 100, recommendation_id="r1"),
        Event("c2", "click", "s1", "B", TS + 200, recommendation_id="r1"),  # the same answer
        Event("c3", "click", "s1", "C", TS + 300),  # browsing: an item shown, no answer named
        Event("c4", "click", "s1", "D", TS + 400, recommendation_id="elsewhere"),
    ]
    assert rig.attribute(clicks) == 2
    a = rig.counters()["a"]
    assert (a["impressions"], a["clicks"], a["clicked_impressions"]) == (2, 2, 1)
    assert a["click_sessions"] == 1


def test_item_matches_start_at_the_answers_event_time(rig: Rig) -> None:
    """No slack before an answer: a purchase a second before it is not its outcome."""
    rig.run(rig.log.record(_shown("s2", "r1", "AB", TS)))
    buys = [
        Event("p1", "purchase", "s2", "A", TS - 1000, price=5.0),  # before the answer
        Event("p2", "purchase", "s2", "B", TS, price=7.0),
    ]
    assert rig.attribute(buys) == 1
    a = rig.counters()["a"]
    assert (a["purchases"], a["revenue"]) == (1, 7.0)
    assert (a["session_purchases"], a["session_revenue"]) == (2, 12.0)


def test_an_answer_of_unknown_time_is_dated_by_the_sessions_next_event(rig: Rig) -> None:
    rig.run(rig.log.record(_shown("s3", "r1", "AB", UNKNOWN_TS)))
    later = [
        Event("v1", "view", "s3", "Z", TS + 5000),
        Event("k1", "add_to_cart", "s3", "A", TS + 6000),
    ]
    assert rig.attribute(later, [Position("ev", 0, 10), Position("ev", 0, 11)]) == 1
    assert rig.record("s3")["s"][0]["t"] == TS + 5000
    assert rig.counters()["a"]["carts"] == 1
    # Redelivered, the view dates nothing again; a cart addition dated before it never counts.
    rig.attribute(later, [Position("ev", 0, 10), Position("ev", 0, 11)])
    assert rig.attribute([Event("k2", "add_to_cart", "s3", "B", TS + 4000)]) == 0
    assert rig.record("s3")["s"][0]["t"] == TS + 5000
    assert rig.counters()["a"]["carts"] == 1


def test_a_push_is_dated_by_its_trigger_and_a_redelivered_request_counts_once(rig: Rig) -> None:
    sid = rig.arm_of("a", "q")
    browse = [Event(f"{sid}/v{i}", "view", sid, it, TS + i) for i, it in enumerate("ABCD")]
    rig.run(handle_events(rig.store, rig.settings, browse, rig.live))
    req = Request("r-1", sid, 3)
    first = rig.run(handle_request(rig.store, rig.settings, req, rig.live))
    again = rig.run(handle_request(rig.store, rig.settings, req, rig.live))  # redelivered
    assert first["recommendation_id"] == again["recommendation_id"]
    assert len(first["recommendation_id"]) == 32
    assert rig.counters()["a"]["impressions"] == 1
    other = rig.run(handle_request(rig.store, rig.settings, Request("r-2", sid, 3), rig.live))
    assert other["recommendation_id"] != first["recommendation_id"]
    assert rig.counters()["a"]["impressions"] == 2
    assert rig.record(sid)["s"][-1]["t"] == TS + 3  # the session's latest event when answered

    # A push is as old as the cart addition that triggered it, not the batch's last event.
    cart = Event(f"{sid}/k", "add_to_cart", sid, "A", TS + 10_000)
    after = Event(f"{sid}/v9", "view", sid, "B", TS + 20_000)
    [push] = rig.run(handle_events(rig.store, rig.settings, [cart, after], rig.live))
    assert push["event_id"] == cart.event_id
    shown = {s["r"]: s for s in rig.record(sid)["s"]}
    assert shown[push["recommendation_id"]]["t"] == TS + 10_000


def test_http_answers_without_their_own_request_id_get_random_ids(rig: Rig) -> None:
    sid = rig.arm_of("b", "h")
    rig.run(handle_events(rig.store, rig.settings, [Event("hv", "view", sid, "A", TS)], rig.live))
    ids = {
        rig.run(handle_request(rig.store, rig.settings, Request("http", sid, 3), rig.live))[
            "recommendation_id"
        ]
        for _ in range(2)
    }
    assert len(ids) == 2


def test_every_outcome_of_an_exposed_session_counts_for_its_arm(rig: Rig) -> None:
    """The holdout shows nothing, so nothing is attributed to it; its sessions' cart additions
    and purchases still count, which is what a variant is compared against."""
    held, shown, never = rig.arm_of("holdout", "o"), rig.arm_of("b", "o"), "unexposed"
    rig.run(rig.log.record(Shown("ab", "holdout", held, "rh", (), UNKNOWN_TS)))
    rig.run(rig.log.record(_shown(shown, "rb", "AB", TS, "b")))
    batch = [
        Event("h1", "add_to_cart", held, "A", TS + 1),
        Event("h2", "purchase", held, "A", TS + 2, price=3.0, quantity=2),
        Event("h3", "purchase", held, "B", TS + 3, price=4.0),
        Event("b1", "purchase", shown, "A", TS + 1, price=10.0),  # attributed: A was shown
        Event("b2", "purchase", shown, "Q", TS + 2, price=1.0),  # not shown: the session's only
        Event("n1", "purchase", never, "A", TS + 1, price=99.0),  # never answered: nothing
    ]
    assert rig.attribute(batch) == 1
    got = rig.counters()
    h, b = got["holdout"], got["b"]
    assert (h["sessions"], h["impressions"], h["purchases"], h["revenue"]) == (1, 0, 0, 0)
    assert (h["session_carts"], h["session_purchases"]) == (1, 2)
    assert (h["session_cart_sessions"], h["session_purchase_sessions"]) == (1, 1)
    assert h["session_revenue"] == 10.0 and h["session_revenue2"] == 100.0
    assert (b["purchases"], b["revenue"], b["revenue2"]) == (1, 10.0, 100.0)
    assert (b["session_purchases"], b["session_revenue"], b["session_revenue2"]) == (2, 11.0, 121.0)
    assert got["a"]["session_purchases"] == 0


def test_an_older_record_is_read_with_empty_fields(rig: Rig) -> None:
    """A record written before a field existed: the script fills it in, instead of failing
    halfway through a batch other sessions of which it has already counted."""
    rig.run(rig.log.record(_shown("new", "r1", "A", TS)))
    old = {"s": [{"r": "r2", "t": TS, "v": "a", "i": ["B"]}], "vs": {"a": 1}, "rev": {}}
    key = rig.key("old")
    rig.run(rig.store.client.set(key, orjson.dumps(old), ex=600))
    batch = [
        Event("n1", "click", "new", "A", TS + 1, recommendation_id="r1"),
        Event("o1", "click", "old", "B", TS + 1, recommendation_id="r2"),
    ]
    at = [Position("ev", 0, 1), Position("ev", 0, 2)]
    assert rig.attribute(batch, at) == 2
    rig.attribute(batch, at)  # redelivered: counted once
    assert rig.counters()["a"]["clicks"] == 2


def test_a_failing_script_writes_nothing(rig: Rig) -> None:
    """Counters and records are written at the end: a batch whose script fails (here a
    record that is not JSON) leaves no count behind that its redelivery would repeat."""
    rig.run(rig.log.record(_shown("fine", "r1", "A", TS)))
    rig.run(rig.log.record(_shown("broken", "r2", "B", TS)))
    rig.run(rig.store.client.set(rig.key("broken"), b"{not json", ex=600))
    batch = [
        Event("f1", "click", "fine", "A", TS + 1, recommendation_id="r1"),
        Event("b1", "click", "broken", "B", TS + 1, recommendation_id="r2"),
    ]
    before = rig.counters()
    with pytest.raises(StoreError):
        rig.attribute(batch)
    assert rig.counters() == before
    assert not rig.record("fine")["ids"]
