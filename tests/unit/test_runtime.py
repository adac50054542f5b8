"""Runtime state: the stored rules document and how workers rebuild their rules from it."""

from __future__ import annotations

import orjson

from stream_reco import runtime
from stream_reco.ranking.policy import RulesConfig, from_dict


def test_updates_set_and_drop_a_placement_in_the_stored_document() -> None:
    doc = runtime.store_update(None, "default", {"exclude": ["b"]})
    doc = runtime.store_update(doc, "cart", {"category_cap": 2})
    assert orjson.loads(doc) == {"cart": {"category_cap": 2}, "default": {"exclude": ["b"]}}
    doc = runtime.store_update(doc, "default", None)
    assert orjson.loads(doc) == {"cart": {"category_cap": 2}}


def test_rules_are_the_file_with_the_stored_overrides() -> None:
    base = from_dict({"default": {"category_cap": 5}, "placements": {"cart": {"mmr_lambda": 0.5}}})
    doc = runtime.store_update(None, "default", {"exclude": ["b"]})
    rules = runtime.rules_from(base, doc)
    # A topic entry replaces the file's entry for its key (the cap of 5 is gone).
    assert rules.for_placement(None).exclude == {"b"}
    assert rules.for_placement(None).category_cap is None
    assert rules.for_placement("cart").mmr_lambda == 0.5
    # Dropping the override brings the file's entry back.
    assert runtime.rules_from(base, runtime.store_update(doc, "default", None)) == base
    assert runtime.rules_from(base, None) == base


def test_a_stored_entry_this_version_cannot_read_is_skipped_not_fatal() -> None:
    doc = orjson.dumps({"default": {"no_such_rule": 1}, "cart": {"category_cap": 2}})
    rules = runtime.rules_from(RulesConfig(), doc)
    assert rules.for_placement("cart").category_cap == 2
    assert rules.for_placement(None) == RulesConfig().for_placement(None)
