"""Category and brand exclusions per placement, sent on reco-config to a running worker."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import Kafka, uid, wait_session
from tests.integration.test_end_to_end import catalogue, event, item, together
from tests.integration.test_live import ask, ids, until


def shelf_item(item_id: str, category: str, brand: str) -> dict[str, Any]:
    return {**item(item_id, item_id.title()), "category": category, "brand": brand}


def test_a_placement_stops_showing_a_category_and_a_brand(kafka: Kafka) -> None:
    s = kafka.settings
    kitchen, office, inko = uid("kitchen"), uid("office"), uid("Inko")
    src = uid("hall")
    k1, k2, o1, o2 = uid("kettle"), uid("teapot"), uid("pen"), uid("lamp")
    catalogue(
        kafka,
        shelf_item(src, uid("hall"), "Acme"),
        shelf_item(k1, kitchen, "Acme"),
        shelf_item(k2, kitchen, "Acme"),
        shelf_item(o1, office, inko),
        shelf_item(o2, office, "Lux"),
    )
    for other in (k1, k2, o1, o2):
        together(kafka, src, other, sessions=2)
    me = uid("me")
    kafka.send(s.topic_events, me, event(me, src))
    wait_session(s, me, 1)
    page = uid("placement")  # the run's own placement: other tests share the worker's rules
    assert {k1, k2, o1, o2} <= set(ids(ask(kafka, me, placement=page)))

    rules = {
        "exclude_categories": [kitchen],
        "exclude_brands": [inko],
        "promoted": [k2, o2],  # k2 is in an excluded category: never shown, promoted or not
        "promoted_share": 0.2,
    }
    kafka.send(s.topic_config, page, rules)

    def applied() -> bool:
        got = ids(ask(kafka, me, placement=page))
        return not {k1, k2, o1} & set(got) and o2 in got

    until(applied, "the category and brand exclusions")
    answer = ask(kafka, me, placement=page)
    assert [i["item_id"] for i in answer["items"] if i["slot"] == "promoted"] == [o2]
    assert {k1, k2, o1, o2} <= set(ids(ask(kafka, me)))  # other placements keep them

    kafka.send(s.topic_config, page, None)  # the placement's override dropped: all back
    until(lambda: {k1, k2, o1} <= set(ids(ask(kafka, me, placement=page))), "the lifted rule")


def test_a_bad_exclusion_is_dead_lettered_with_what_to_write(kafka: Kafka) -> None:
    page = uid("placement")
    kafka.send(kafka.settings.topic_config, page, {"exclude_categories": "kitchen"})
    _, dead, _ = kafka.wait_for(
        lambda t, d: t == kafka.settings.topic_deadletter and page in d.get("reason", "")
    )
    assert (
        'exclude_categories must be a list of categories, got str: write ["kitchen"]'
        in (dead["reason"])
    )
