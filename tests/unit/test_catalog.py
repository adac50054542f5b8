"""The worker's metadata cache: lookups, forgetting changed items, never caching a stale read."""

from __future__ import annotations

from stream_reco.events import CatalogItem
from stream_reco.storage.catalog import CatalogCache, position


def test_positions_compare_as_stream_ids() -> None:
    assert position("10-2") > position("9-99")
    assert position("10-2") > position("10-1")
    assert position("") == position("0-0") < position("1-0")


def test_lookup_tells_cached_known_unknown_and_missing_apart() -> None:
    cache = CatalogCache()
    cache.fill({"A": CatalogItem("A", "Mug")}, ["A", "B"], cache.version())
    found, missing = cache.lookup(["A", "B", "C"])
    assert found == {"A": CatalogItem("A", "Mug")}
    assert missing == ["C"]  # B is cached as having no metadata


def test_advance_forgets_changed_items_and_moves_forward_only() -> None:
    cache = CatalogCache()
    cache.fill({"A": CatalogItem("A", "Mug"), "B": CatalogItem("B", "Pot")}, ["A", "B"], 0)
    cache.advance(["A"], "5-0", 3)
    assert cache.lookup(["A", "B"])[1] == ["A"]
    assert cache.current("5-0") and not cache.current("5-1")
    cache.advance([], "4-0", 2)  # a slower concurrent sync never moves the position back
    assert cache.at == "5-0" and cache.added == 3


def test_a_read_overtaken_by_a_change_is_not_cached() -> None:
    cache = CatalogCache()
    before = cache.version()
    cache.advance(["A"], "7-0", 1)  # the change lands while the read is on its way
    cache.fill({"A": CatalogItem("A", "Old title")}, ["A"], before)
    assert cache.lookup(["A"]) == ({}, ["A"])


def test_the_cache_stays_bounded() -> None:
    cache = CatalogCache(limit=10)
    for n in range(100):
        cache.fill({}, [f"i{n}"], cache.version())
    found, missing = cache.lookup(f"i{n}" for n in range(100))
    assert len(missing) >= 90 and "i99" not in missing


def test_reset_forgets_everything() -> None:
    cache = CatalogCache()
    cache.fill({}, ["A"], 0)
    cache.reset("9-0", 4)
    assert cache.lookup(["A"])[1] == ["A"] and cache.at == "9-0" and cache.added == 4
