"""The store contract (storage/protocol.py `Store`): every test runs against a single Redis node
and against a 3-primary Redis Cluster, and must hold on both."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from stream_reco.config import Settings
from stream_reco.errors import StoreRewound
from stream_reco.events import CatalogItem, Event, Tombstone
from stream_reco.storage import connect
from stream_reco.storage.apply import Position
from stream_reco.storage.keys import Keys
from stream_reco.storage.protocol import Store
from tests.integration.own_store import OwnStore, own_store

TS = 1_750_000_000_000


class On(OwnStore):
    store: Store  # the contract is the protocol's: only what it names is used here


@pytest.fixture(params=["node", "cluster"])
def on(request: pytest.FixtureRequest, settings: Settings) -> Iterator[On]:
    with own_store(request, settings, "contract", On) as mine:
        yield mine


def _ev(n: int, sid: str, item: str, kind: str = "view") -> Event:
    return Event(f"{sid}/{n}", kind, sid, item, TS + n * 1000)


def _session(sid: str, items: str, start: int = 0) -> list[Event]:
    return [_ev(start + n, sid, item) for n, item in enumerate(items)]


def test_events_apply_once_by_position_and_by_id(on: On) -> None:
    events = _session("s1", "ABCA") + [_ev(9, "s1", "B", "add_to_cart")]
    at = [Position("ev", 0, n) for n in range(len(events))]
    assert on(on.store.apply_events(events, positions=at)) == [True] * 5
    assert on(on.store.apply_events(events, positions=at)) == [False] * 5  # redelivered
    moved = [Position("ev", 0, n + 100) for n in range(len(events))]
    assert on(on.store.apply_events(events, positions=moved)) == [False] * 5  # re-sent
    assert on(on.store.applied_count()) == 5
    session = on(on.store.read_session("s1"))
    assert [i.item_id for i in session.recent] == list("BACBA")
    assert dict(session.cart) == {"B": 1}


def test_a_store_that_lost_writes_is_refused(on: On) -> None:
    events = _session("s2", "ABC")
    on(on.store.apply_events(events, positions=[Position("ev", 1, n) for n in range(3)]))
    client = connect.sync_client(on.settings)
    client.delete(Keys(on.settings.key_prefix).global_("offsets"))  # restored from long ago
    client.close()
    before = on(on.store.read_session("s2"))
    with pytest.raises(StoreRewound):
        on(on.store.apply_events([_ev(3, "s2", "D")], positions=[Position("ev", 1, 3)]))
    assert on(on.store.read_session("s2")) == before  # refused before writing anything


def test_requests_read_what_events_taught(on: On) -> None:
    for n, items in enumerate(["ABC", "ABD", "ABC", "XBC"]):
        on(on.store.apply_events(_session(f"past{n}", items, start=10 * n)))
    on(on.store.apply_events(_session("now", "AB", start=100)))
    got = on(on.store.gather("now", 10, 5, 3, True, True))
    assert [i.item_id for i in got.session.recent] == ["B", "A"]
    assert {i for i, _ in got.popular} == set("ABCDX")
    assert got.next["B"][0][0] == "C"  # what followed B most
    assert got.co and got.votes and got.votes[0][0] in "ABCD"
    neighbours = on(on.store.read_neighbours(["B"], 5))
    assert {i for i, _ in neighbours["B"]} >= {"A", "C"}
    assert on(on.store.read_neighbours(["B"], 5, "next"))["B"][0][0] == "C"
    assert on(on.store.read_popular(2))[0][0] == "B"


def test_the_catalogue_upserts_removes_and_logs(on: On) -> None:
    items = [CatalogItem(x, x.lower(), category="c1") for x in "PQR"]
    on(on.store.apply_catalog(items))
    on(on.store.apply_catalog([Tombstone("Q"), CatalogItem("R", "r2", in_stock=False)]))
    on(on.store.sync_catalog())
    read = on(on.store.read_items(["P", "Q", "R"]))
    assert set(read) == {"P", "R"} and read["R"].title == "r2"
    assert on(on.store.read_newest(10)) == ["P"]  # in stock only
    assert on(on.store.holds_anything())


def test_shown_lists_examples_lease_and_documents(on: On) -> None:
    s = on.store
    on(s.remember_shown("a", b"shown-a"))
    assert on(s.take_shown(["a", "b"])) == {"a": b"shown-a"}
    assert on(s.take_shown(["a"])) == {}  # taken once
    on(s.push_examples([b"x1", b"x2", b"x3"], cap=2))
    assert sorted(on(s.pop_examples(10))) == [b"x2", b"x3"]
    assert on(s.hold_lease("learner", "w1", 5000))
    assert not on(s.hold_lease("learner", "w2", 5000))
    assert on(s.hold_lease("learner", "w1", 5000))  # renewed by its holder
    on(s.publish("model", b'{"v": 1}'))
    assert on(s.read_published("model")) == b'{"v": 1}'


def test_vectors_and_their_log(on: On) -> None:
    log = on.store.vectors
    start = on(log.all_vectors())[0]
    vec = np.ones(log.dim, dtype=np.float32)
    on(log.publish("V1", vec))
    position, changes = on(log.changes_since(start))
    assert [c[0] for c in changes] == ["V1"] and position != start


def test_format_eviction_and_clear(on: On) -> None:
    on(on.store.check_format())
    assert on(on.store.eviction_policy()) == "noeviction"
    on(on.store.apply_events(_session("c", "ABCDEF")))
    assert on(on.store.clear()) > 0
    assert not on(on.store.holds_anything())


def test_experiment_counters_attribute_each_event_once(on: On) -> None:
    from stream_reco.experiments.config import parse
    from stream_reco.experiments.store import Shown

    exp = parse("ab", {"variants": [{"name": "a", "share": 0.5, "control": True},
                                    {"name": "b", "share": 0.5}]})  # fmt: skip
    log = on.store.experiments
    first = Shown("ab", "b", "s9", "rec-1", ("A", "B"), TS)
    on(log.record(first))
    on(log.record(first))  # a retried call: counted once
    on(log.record(Shown("ab", "b", "s9", "rec-2", ("C",), TS + 1000)))
    clicked = Event("s9/1", "click", "s9", "B", TS + 2000, recommendation_id="rec-1")
    bought = Event("s9/2", "purchase", "s9", "C", TS + 3000, quantity=2, price=5.0)
    unseen = Event("s9/3", "click", "s9", "Z", TS + 4000)
    batch = [clicked, bought, unseen]
    at = [Position("ev", 0, n) for n in range(3)]
    assert on(log.attribute([exp], batch, at)) == 2
    assert on(log.attribute([exp], batch, at)) == 0  # redelivered: nothing changes
    assert on(log.attribute([exp], batch)) == 0  # re-sent without positions: known by id
    got = on(log.counters(exp))["b"]
    assert got["sessions"] == 1 and got["impressions"] == 2
    assert (got["clicks"], got["purchases"], got["revenue"], got["revenue2"]) == (1, 1, 10.0, 100.0)
    assert got["click_sessions"] == 1 and got["purchase_sessions"] == 1
    assert on(log.counters(exp))["a"]["sessions"] == 0
