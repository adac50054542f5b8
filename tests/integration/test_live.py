"""A running worker changes with the shop: rules from reco-config, new catalogue items, and the
same answers over HTTP as over the request topic."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import orjson

from stream_reco.config import Settings
from tests.integration.conftest import Kafka, uid, wait_session
from tests.integration.test_end_to_end import catalogue, event, item, together


def ask(kafka: Kafka, sid: str, k: int = 10, **extra: Any) -> dict[str, Any]:
    req = uid("req")
    kafka.send(
        kafka.settings.topic_requests, sid, {"request_id": req, "session_id": sid, "k": k, **extra}
    )
    return kafka.wait_for(lambda t, d: d.get("request_id") == req)[1]


def ids(answer: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in answer["items"]]


def until(check: Any, what: str, timeout: float = 20.0) -> float:
    """Poll `check()` until true; returns the seconds it took."""
    t0 = time.monotonic()
    while not check():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)
    return time.monotonic() - t0


def http(settings: Settings, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://127.0.0.1:{settings.web_port}{path}", data=body)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def test_a_rules_change_on_reco_config_applies_without_restart(kafka: Kafka) -> None:
    s = kafka.settings
    a, b, c = uid("ra"), uid("rb"), uid("rc")
    catalogue(kafka, item(a, "Kettle"), item(b, "Teapot"), item(c, "Cups"))
    together(kafka, a, b)
    together(kafka, a, c)
    me = uid("me")
    kafka.send(s.topic_events, me, event(me, a))
    wait_session(s, me, 1)
    assert b in ids(ask(kafka, me))

    kafka.send(s.topic_config, "default", {"exclude": [b]})
    until(lambda: b not in ids(ask(kafka, me)) and c in ids(ask(kafka, me)), "the exclusion")
    kafka.send(s.topic_config, "default", None)  # null: back to the defaults
    until(lambda: b in ids(ask(kafka, me)), "the exclusion to be lifted")


def test_a_bad_rules_message_is_dead_lettered(kafka: Kafka) -> None:
    kafka.send(kafka.settings.topic_config, "default", {"discovery_share": 0.9})
    _, dead, _ = kafka.wait_for(
        lambda t, d: t == kafka.settings.topic_deadletter and "discovery_share" in d["reason"]
    )
    assert dead["source_topic"] == kafka.settings.topic_config


def test_a_new_catalogue_item_is_recommendable_at_once(kafka: Kafka) -> None:
    s = kafka.settings
    shelf = uid("shelf")
    old, new = uid("lamp"), uid("lamp")
    lamp = {**item(old, "Brass desk lamp"), "category": shelf, "brand": "Lux"}
    catalogue(kafka, lamp)
    me = uid("me")
    kafka.send(s.topic_events, me, event(me, old))
    wait_session(s, me, 1)
    assert new not in ids(ask(kafka, me))
    catalogue(kafka, {**lamp, "item_id": new, "title": "Brass floor lamp"})

    def by_similarity() -> bool:
        # Cold start may also offer it as new in the catalogue; the point is the similarity.
        mine = [i for i in ask(kafka, me)["items"] if i["item_id"] == new]
        return bool(mine) and mine[0]["reason"].startswith("similar to Brass desk lamp")

    took = until(by_similarity, "the new item, as similar to the lamp viewed")
    assert took < 5.0  # nobody has clicked it: content similarity alone finds it


def test_http_and_topic_give_the_same_answer(kafka: Kafka) -> None:
    s = kafka.settings
    a, b, c = uid("ha"), uid("hb"), uid("hc")
    catalogue(kafka, item(a, "Pan"), item(b, "Lid"), item(c, "Spatula"))
    together(kafka, a, b)
    me = uid("me")
    kafka.send(s.topic_events, me, event(me, a))
    wait_session(s, me, 1)

    def both() -> tuple[list[tuple[str, str]], ...]:
        by_topic = ask(kafka, me, k=5)
        status, by_http = http(s, f"/recommendations?session_id={me}&k=5")
        assert status == 200
        for doc in (by_topic, by_http):
            assert doc["degraded"] is None and "model_version" in doc and doc["variant"]
        answers.append(by_http)
        return tuple([(i["item_id"], i["reason"]) for i in d["items"]] for d in (by_topic, by_http))

    # The ANN index follows the new catalogue items within moments: until it has, two answers
    # asked a moment apart may rightly differ; then they must agree.
    answers: list[dict[str, Any]] = []
    until(lambda: (pair := both())[0] == pair[1], "topic and HTTP answers to agree")
    by_http = answers[-1]
    assert b in ids(by_http)

    status, ranked = http(s, "/rank", orjson.dumps({"session_id": me, "items": [c, b, "nope"]}))
    assert status == 200
    assert ids(ranked)[0] == b and set(ids(ranked)) <= {b, c}  # "nope" is not in the catalogue


def test_http_refuses_bad_input_with_a_reason(kafka: Kafka) -> None:
    s = kafka.settings
    status, doc = http(s, "/recommendations?k=5")
    assert status == 400 and "session_id" in doc["error"]
    status, doc = http(s, "/recommendations?session_id=x&k=many")
    assert status == 400
    status, doc = http(s, "/rank", b"{not json")
    assert status == 400 and "JSON" in doc["error"]
    status, doc = http(s, "/rank", orjson.dumps({"session_id": "x", "items": [1, 2]}))
    assert status == 400
