"""The HTTP API against its OpenAPI document: every route documented is served and nothing else,
every documented parameter is honoured, anything else is a 400, and real answers (errors too)
match the documented schemas."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import jsonschema
import orjson
import pytest
from openapi_spec_validator import validate

from stream_reco import openapi
from stream_reco.app import create_app
from stream_reco.config import Settings
from stream_reco.web import OBSERVABILITY
from tests.integration.conftest import Kafka, uid, wait_session
from tests.integration.test_end_to_end import catalogue, event, item, together
from tests.integration.test_live import until

# Faust's built-in views, every one of which is off or not wanted on a worker.
FAUST_BUILTINS = ("/router/", "/table/", "/graph/", "/stats/", "/assignment/", "/performance/")


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(s: Settings, method: str, path: str, body: Any = None, **query: Any) -> Reply:
    """One HTTP call; `query` values that are lists become repeated parameters."""
    qs = urllib.parse.urlencode(query, doseq=True)
    raw = body if isinstance(body, bytes | type(None)) else orjson.dumps(body)
    url = f"http://127.0.0.1:{s.web_port}{path}{'?' + qs if qs else ''}"
    req = urllib.request.Request(url, data=raw, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return Reply(r.status, r.read(), r.headers.get_content_type())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read(), exc.headers.get_content_type())


def ids(doc: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in doc["items"]]


@dataclass(frozen=True)
class Shop:
    me: str  # a session that viewed `seen`
    seen: str
    related: tuple[str, ...]  # bought with `seen` by others: what `me` is recommended


@pytest.fixture(scope="module")
def spec(kafka: Kafka) -> dict[str, Any]:
    reply = call(kafka.settings, "GET", "/openapi.json")
    assert reply.status == 200 and reply.content_type == "application/json"
    return reply.json()


@pytest.fixture(scope="module")
def shop(kafka: Kafka) -> Shop:
    seen, *related = (uid(f"http{n}") for n in range(5))
    catalogue(kafka, item(seen, "Pan"), *(item(r, f"Lid {n}") for n, r in enumerate(related)))
    for r in related:
        together(kafka, seen, r, sessions=2)
    me = uid("me")
    kafka.send(kafka.settings.topic_events, me, event(me, seen))
    wait_session(kafka.settings, me, 1)
    return Shop(me, seen, tuple(related))


def checked(spec: dict[str, Any], method: str, path: str, reply: Reply) -> Any:
    """The reply's JSON, after checking it against the schema documented for its status."""
    responses = spec["paths"][path][method.lower()]["responses"]
    assert str(reply.status) in responses, f"{method} {path}: undocumented {reply.status}"
    assert reply.content_type == "application/json", reply
    doc = reply.json()
    schema = responses[str(reply.status)]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator({**schema, "components": spec["components"]}).validate(doc)
    return doc


def get(spec: dict[str, Any], s: Settings, **query: Any) -> Any:
    return checked(spec, "GET", "/recommendations", call(s, "GET", "/recommendations", **query))


def rank(spec: dict[str, Any], s: Settings, body: Any, **query: Any) -> Any:
    return checked(spec, "POST", "/rank", call(s, "POST", "/rank", body, **query))


def test_the_document_is_valid_openapi_3_1_for_this_worker(
    spec: dict[str, Any], settings: Settings
) -> None:
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    assert spec == orjson.loads(orjson.dumps(openapi.document(settings)))


def test_every_documented_route_is_served_and_nothing_else(
    spec: dict[str, Any], settings: Settings
) -> None:
    documented = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    # The worker's routes, as its own wiring registers them (Faust's built-ins included).
    app = create_app(settings)
    app.web.init_server()
    routes = app.web.web_app.router.routes()
    served = {(r.method, r.resource.canonical) for r in routes}
    # Metrics and the dashboard (web.OBSERVABILITY) are for operators, not the answers' API.
    assert {p for _, p in served} >= set(OBSERVABILITY)
    served = {(m, p) for m, p in served if p not in OBSERVABILITY}
    assert {r for r in served if r[0] != "HEAD"} == documented
    assert {p for m, p in served if m == "HEAD"} == {p for _, p in documented}  # Faust adds it
    # ... and the running worker answers them.
    assert call(settings, "GET", "/").json() == {"status": "OK"}
    assert call(settings, "HEAD", "/openapi.json").status == 200
    assert call(settings, "HEAD", "/rank").status == 405
    for path in FAUST_BUILTINS:
        assert call(settings, "GET", path).status == 404, path
    assert call(settings, "DELETE", "/recommendations").status == 405


def test_every_documented_parameter_of_get_recommendations_is_honoured(
    spec: dict[str, Any], kafka: Kafka, shop: Shop
) -> None:
    s, me = kafka.settings, shop.me
    names = {p["name"] for p in spec["paths"]["/recommendations"]["get"]["parameters"]}
    assert names == {"session_id", "k", "placement", "exclude", "item_id", "request_id", "user_id"}
    plain = get(spec, s, session_id=me, k=10)
    assert set(shop.related) <= set(ids(plain)) and plain["request_id"] == "http"
    assert plain["session_id"] == me and plain["trigger"] == "request"
    assert any(shop.seen in i["reason"] for i in plain["items"])  # this session's answer
    assert len(get(spec, s, session_id=me, k=2)["items"]) == 2
    a, b, c, d = shop.related
    # Repeated and comma-separated, together.
    left = ids(get(spec, s, session_id=me, exclude=[a, f"{b},{c}"]))
    assert d in left and not {a, b, c} & set(left)
    assert get(spec, s, session_id=me, request_id="q-http-1")["request_id"] == "q-http-1"
    assert get(spec, s, session_id=me, user_id="u-1")["items"]  # accepted; not used yet
    # The page's item is not recommended on it (the default rules).
    first = ids(plain)[0]
    assert first not in ids(get(spec, s, session_id=me, item_id=first))
    placement = uid("shelf")
    kafka.send(s.topic_config, placement, {"exclude": [a]})
    try:
        until(lambda: a not in ids(get(spec, s, session_id=me, placement=placement)), "rules")
        assert a in ids(get(spec, s, session_id=me))  # only that placement's rules
    finally:
        kafka.send(s.topic_config, placement, None)


def test_every_documented_field_of_post_rank_is_honoured(
    spec: dict[str, Any], kafka: Kafka, shop: Shop
) -> None:
    s, me = kafka.settings, shop.me
    a, b, c, d = shop.related
    body = {"session_id": me, "items": [d, c, b, a, "nope"]}
    schema = spec["components"]["schemas"]["RankRequest"]
    assert set(schema["properties"]) == set(openapi.RANK_FIELDS)
    whole = rank(spec, s, body)
    assert set(ids(whole)) == {a, b, c, d} and whole["request_id"] == "rank"  # "nope" is unknown
    assert len(rank(spec, s, {**body, "k": 2})["items"]) == 2
    assert ids(rank(spec, s, {**body, "exclude": [a, c]})) == [i for i in ids(whole) if i in {b, d}]
    assert rank(spec, s, {**body, "request_id": "q-rank-1"})["request_id"] == "q-rank-1"
    assert rank(spec, s, {**body, "user_id": "u-1", "placement": None})["items"]
    assert ids(whole)[0] not in ids(rank(spec, s, {**body, "item_id": ids(whole)[0]}))
    # A list page has no item in view: the session's latest item is ranked like the others.
    assert shop.seen in ids(rank(spec, s, {"session_id": me, "items": [a, shop.seen]}))
    # A repeated id is one item, for k as well.
    assert ids(rank(spec, s, {"session_id": me, "items": [a, a, b], "k": 2})) in ([a, b], [b, a])
    assert (
        "more than the 2 items"
        in call(s, "POST", "/rank", {**body, "items": [a, a, b], "k": 3}).json()["error"]
    )
    placement = uid("shelf")
    kafka.send(s.topic_config, placement, {"exclude": [b]})
    try:
        until(lambda: b not in ids(rank(spec, s, {**body, "placement": placement})), "rules")
    finally:
        kafka.send(s.topic_config, placement, None)


RANK = tuple(openapi.RANK_FIELDS)


@pytest.mark.parametrize(
    ("method", "path", "body", "query", "named", "valid"),
    [
        ("GET", "/recommendations", None, {"session_id": "s", "size": "3"}, "size", "query"),
        (
            "GET",
            "/recommendations",
            None,
            {"session_id": "s", "exclude[]": "x"},
            "exclude[]",
            "query",
        ),
        ("POST", "/rank", {"session_id": "s", "items": ["a"], "context": {}}, {}, "context", RANK),
        ("POST", "/rank", {"session_id": "s", "items": ["a"]}, {"k": "1"}, "k", ("JSON body",)),
        ("GET", "/openapi.json", None, {"format": "yaml"}, "format", ()),
    ],
)
def test_an_undocumented_parameter_is_a_400_naming_it_and_the_valid_ones(
    spec: dict[str, Any],
    settings: Settings,
    method: str,
    path: str,
    body: Any,
    query: dict[str, Any],
    named: str,
    valid: Any,
) -> None:
    reply = call(settings, method, path, body, **query)
    assert reply.status == 400
    error = checked(spec, method, path, reply)["error"]
    if valid == "query":
        valid = [p["name"] for p in spec["paths"][path]["get"]["parameters"]]
    assert named in error and all(v in error for v in valid), error


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ({"k": "5"}, "session_id"),
        ({"session_id": "s", "k": "many"}, "k"),
        ({"session_id": "s", "k": "0"}, "k=0"),
        ({"session_id": "s", "k": "100000"}, "k"),
        ({"session_id": "s", "k": ["1", "2"]}, "k"),
        ({"session_id": "s", "placement": ""}, "placement"),
        ({"session_id": "s", "item_id": "x" * 129}, "item_id"),
        ({"session_id": "s", "exclude": "a,"}, "exclude[1]"),
        ({"session_id": "s", "exclude": "\x01"}, "exclude[0]"),
        ({"session_id": "s", "exclude": ",".join("x" * 1001)}, "exclude"),
        ({"session_id": "s", "request_id": ["a", "b"]}, "request_id"),
        ({"session_id": "s", "user_id": ""}, "user_id"),
    ],
)
def test_a_bad_query_value_is_a_400_saying_what_is_allowed(
    spec: dict[str, Any], settings: Settings, query: dict[str, Any], named: str
) -> None:
    reply = call(settings, "GET", "/recommendations", **query)
    assert reply.status == 400
    assert named in checked(spec, "GET", "/recommendations", reply)["error"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "JSON"),
        (b"[]", "JSON object"),
        ({"session_id": "s"}, "items"),
        ({"session_id": "s", "items": []}, "items"),
        ({"session_id": "s", "items": [1, 2]}, "items[0]"),
        ({"session_id": "s", "items": ["a", ""]}, "items[1]"),
        ({"items": ["a"]}, "session_id"),
        ({"session_id": None, "items": ["a"]}, "session_id"),
        ({"session_id": "s", "items": ["a", "b"], "k": 3}, "k=3"),
        ({"session_id": "s", "items": ["a", "b"], "k": 0}, "k=0"),
        ({"session_id": "s", "items": ["a", "b"], "k": "2"}, "k"),
        ({"session_id": "s", "items": ["a"], "exclude": "a"}, "exclude"),
        ({"session_id": "s", "items": ["a"], "placement": ""}, "placement"),
    ],
)
def test_a_bad_rank_body_is_a_400_saying_what_is_allowed(
    spec: dict[str, Any], settings: Settings, body: Any, named: str
) -> None:
    reply = call(settings, "POST", "/rank", body)
    assert reply.status == 400
    assert named in checked(spec, "POST", "/rank", reply)["error"]


def test_the_web_servers_own_limits_are_as_documented(
    spec: dict[str, Any], settings: Settings
) -> None:
    big = b'{"session_id": "s", "items": ["' + b"x" * (1 << 20) + b'"]}'
    reply = call(settings, "POST", "/rank", big)
    assert (reply.status, reply.content_type) == (413, "text/plain")
    assert "text/plain" in spec["paths"]["/rank"]["post"]["responses"]["413"]["content"]
    reply = call(settings, "GET", "/recommendations", session_id="s", exclude="x" * 8200)
    assert (reply.status, reply.content_type) == (400, "text/plain")
    assert "8,190 bytes" in spec["paths"]["/recommendations"]["get"]["description"]


def test_documented_example_values_pass_the_documented_schemas(spec: dict[str, Any]) -> None:
    """The parameters the tests above send are valid by the document itself."""
    by_name = {
        p["name"]: p["schema"] for p in spec["paths"]["/recommendations"]["get"]["parameters"]
    }
    for name, value in {"session_id": "s-1", "k": 2, "exclude": ["a", "b"], "item_id": "i"}.items():
        jsonschema.Draft202012Validator(by_name[name]).validate(value)
    schema = {**spec["components"]["schemas"]["RankRequest"], "components": spec["components"]}
    body = {"session_id": "s", "items": ["a", "b"], "k": 2, "exclude": ["a"], "placement": None}
    jsonschema.Draft202012Validator(schema).validate(body)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**body, "context": {}})
