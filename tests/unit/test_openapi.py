"""The OpenAPI document is valid, says what the handlers' parsers accept, and agrees with
docs/contract.md's HTTP section and reco-responses table."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from multidict import MultiDict
from openapi_spec_validator import validate

from stream_reco import openapi, response, web
from stream_reco.config import Settings
from stream_reco.response import Answer, Pick

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
SCHEMAS = Path(__file__).resolve().parents[2] / "stream_reco" / "schemas"
# A parameter table row: | `name` | type | yes/no | constraints |
PARAM = re.compile(r"^\|\s*`([a-z_]+)`\s*\|[^|]*\|\s*(yes|no)\s*\|")
ROUTE = re.compile(r"^\|\s*`([A-Z]+) (/[^`]*)`\s*\|")
FIELD = re.compile(r"^\|\s*`([a-z_]+)`\s*\|")
SETTINGS = Settings()
SPEC = openapi.document(SETTINGS)


def _section(text: str, heading: str, level: str = "##") -> str:
    start = text.index(f"\n{level} {heading}\n")
    end = text.find(f"\n{level} ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _http() -> str:
    return _section(CONTRACT.read_text(encoding="utf-8"), "HTTP")


def _params(heading: str) -> dict[str, bool]:
    rows = _section(_http(), heading, "###").splitlines()
    return {m[1]: m[2] == "yes" for line in rows if (m := PARAM.match(line))}


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(SPEC)
    assert SPEC["openapi"] == "3.1.0"


def test_k_limits_follow_the_worker_settings() -> None:
    s = dataclasses.replace(SETTINGS, default_k=3, max_k=7)
    spec = openapi.document(s)
    validate(spec)
    k = next(p for p in spec["paths"]["/recommendations"]["get"]["parameters"] if p["name"] == "k")
    assert (k["schema"]["default"], k["schema"]["maximum"]) == (3, 7)
    assert spec["components"]["schemas"]["RankRequest"]["properties"]["k"]["maximum"] == 7


def test_the_contract_lists_exactly_the_documented_routes() -> None:
    listed = {(m[1], m[2]) for line in _http().splitlines() if (m := ROUTE.match(line))}
    assert listed == {(m.upper(), p) for p, ops in SPEC["paths"].items() for m in ops}


def test_the_contract_lists_exactly_the_query_parameters() -> None:
    op = SPEC["paths"]["/recommendations"]["get"]
    assert _params("GET /recommendations") == {p["name"]: p["required"] for p in op["parameters"]}


def test_the_contract_lists_exactly_the_rank_body_fields() -> None:
    body = SPEC["components"]["schemas"]["RankRequest"]
    want = {name: name in body["required"] for name in body["properties"]}
    assert _params("POST /rank") == want


def test_the_answer_schema_has_the_fields_of_the_reco_responses_table() -> None:
    table = _section(CONTRACT.read_text(encoding="utf-8"), "`reco-responses`")
    rows = [m[1] for line in table.splitlines() if (m := FIELD.match(line))]
    schema = openapi.recommendation_schema(SETTINGS)
    assert set(rows) == set(schema["properties"])
    item = re.findall(r"^\|\s*`items\[\]\.([a-z_]+)`", table, re.M)
    assert set(item) == set(schema["properties"]["items"]["items"]["properties"])


@pytest.mark.skipif(not (SCHEMAS / "response.json").exists(), reason="no shipped JSON Schema")
def test_the_answer_schema_agrees_with_the_shipped_json_schema() -> None:
    from stream_reco import schemas

    shipped, mine = schemas.load("response"), openapi.recommendation_schema(SETTINGS)
    assert set(shipped["required"]) == set(mine["required"])
    assert set(shipped["properties"]) == set(mine["properties"])
    for name in ("trigger", "degraded"):
        assert shipped["properties"][name]["enum"] == mine["properties"][name]["enum"]
    item, my_item = shipped["properties"]["items"]["items"], mine["properties"]["items"]["items"]
    assert item["required"] == my_item["required"]
    assert item["properties"]["slot"] == my_item["properties"]["slot"]


def _answers() -> list[dict[str, Any]]:
    picks = [
        Pick(
            "a",
            0.9,
            "often chosen with Pan (p) you viewed",
            {"cooc": 1.0},
            "relevance",
            [("cooc", 0.4)],
        ),
        Pick("b", 0.0, "promoted", {}, "promoted"),
        Pick("c", 0.1, "trending in kitchen", {}, "discovery"),
    ]
    return [
        response.response("s", "request", Answer(picks, 2, None), 0.0, "q-1"),
        response.response("s", "request", Answer([], 0, "popular"), 0.0, "http"),
        {**response.response("s", "add_to_cart", Answer(picks[:1]), 0.0), "event_id": "e-1"},
    ]


@pytest.mark.parametrize("doc", _answers())
def test_what_the_worker_answers_validates_against_the_answer_schema(doc: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(openapi.recommendation_schema(SETTINGS)).validate(doc)


def test_each_query_parameter_reaches_the_request() -> None:
    given = {
        "session_id": "s-1",
        "k": "4",
        "placement": "product_page",
        "exclude": "a,b",
        "item_id": "i-1",
        "request_id": "q-1",
        "user_id": "u-1",
    }
    assert set(given) == {p["name"] for p in SPEC["paths"]["/recommendations"]["get"]["parameters"]}
    query = MultiDict([*given.items(), ("exclude", "c")])
    req = web.request_from_query(query, SETTINGS)
    want = {**given, "k": 4, "exclude": frozenset("abc")}
    assert {n: getattr(req, n) for n in given} == want


def test_query_defaults_are_the_documented_ones() -> None:
    req = web.request_from_query(MultiDict(session_id="s"), SETTINGS)
    params = {
        p["name"]: p["schema"] for p in SPEC["paths"]["/recommendations"]["get"]["parameters"]
    }
    assert (req.k, req.request_id) == (params["k"]["default"], params["request_id"]["default"])
    assert (req.placement, req.item_id, req.user_id, req.exclude) == (None, None, None, frozenset())


@pytest.mark.parametrize(
    ("query", "says"),
    [
        (
            [("session_id", "s"), ("limit", "3")],
            "unknown query parameter limit: GET /recommendations takes session_id, k,",
        ),
        ([("session_id", "s"), ("k", " 3")], "k must be an integer 1..100"),
        ([("session_id", "s"), ("k", "5_0")], "k must be an integer 1..100"),
        ([("session_id", "s"), ("k", "101")], "k=101 is outside 1..100"),
        (
            [("session_id", "s"), ("placement", "a"), ("placement", "b")],
            "placement is given 2 times",
        ),
        ([("session_id", "s"), ("exclude", "a,,b")], "exclude[1] must be a non-empty string"),
        ([("k", "3")], "session_id must be a non-empty string"),
    ],
)
def test_a_bad_query_is_refused_with_what_is_allowed(
    query: list[tuple[str, str]], says: str
) -> None:
    with pytest.raises(web.BadInput, match=re.escape(says)):
        web.request_from_query(MultiDict(query), SETTINGS)


def test_each_rank_field_reaches_the_request() -> None:
    body = {
        "items": ["a", "b", "c"],
        "session_id": "s-1",
        "k": 2,
        "exclude": ["c"],
        "placement": "category_page",
        "item_id": "i-1",
        "request_id": "q-1",
        "user_id": "u-1",
    }
    assert set(body) == set(SPEC["components"]["schemas"]["RankRequest"]["properties"])
    req, items = web.rank_request(orjson.dumps(body), SETTINGS)
    assert items == body["items"]
    want = {n: frozenset(v) if n == "exclude" else v for n, v in body.items() if n != "items"}
    assert {n: getattr(req, n) for n in want} == want


def test_rank_defaults_are_the_documented_ones() -> None:
    props = SPEC["components"]["schemas"]["RankRequest"]["properties"]
    many = [f"i{n}" for n in range(SETTINGS.max_k + 5)]
    for items, k in ((["a", "b", "c"], 3), (many, SETTINGS.max_k)):
        body = {"session_id": "s", "items": items, "placement": None, "exclude": None}
        req, _ = web.rank_request(orjson.dumps(body), SETTINGS)
        assert (req.k, req.request_id) == (k, props["request_id"]["default"])
        assert (req.placement, req.exclude) == (None, frozenset())


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (
            {"session_id": "s", "items": ["a"], "context": {}},
            "unknown body field context: POST /rank takes items,",
        ),
        ({"session_id": "s", "items": ["a", "b"], "k": 3}, "k=3 is more than the 2 items"),
        ({"session_id": "s", "items": ["a"] * 1001}, "items must be a list of 1..1000"),
        ({"session_id": "s", "items": ["a", "x" * 129]}, "items[1] must be an item id"),
        ({"session_id": "s", "items": ["a"], "k": True}, "k must be an integer"),
    ],
)
def test_a_bad_rank_body_is_refused_with_what_is_allowed(body: dict[str, Any], says: str) -> None:
    with pytest.raises(web.BadInput, match=re.escape(says)):
        web.rank_request(orjson.dumps(body), SETTINGS)


def test_the_document_refuses_braces_exactly_where_the_worker_does() -> None:
    import re

    from stream_reco.schemas import load

    params = {
        p["name"]: p["schema"] for p in SPEC["paths"]["/recommendations"]["get"]["parameters"]
    }
    body = SPEC["components"]["schemas"]["RankRequest"]["properties"]
    key_pattern = load("request")["$defs"]["key_id"]["not"]["pattern"]
    for schema in (
        params["session_id"],
        params["item_id"],
        body["session_id"],
        body["items"]["items"],
    ):
        assert not re.fullmatch(schema["pattern"], "a{b") and re.search(key_pattern, "a{b")
    for schema in (params["placement"], params["user_id"], body["user_id"]):
        assert re.fullmatch(schema["pattern"], "{3F25}")
