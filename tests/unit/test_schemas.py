"""The shipped JSON Schemas track the decoders and the contract: a document a schema accepts is
decoded, one it refuses is rejected, and the contract's examples are valid."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

from stream_reco import events, schemas
from stream_reco.config import EVENT_TYPES, Settings
from stream_reco.ranking import policy
from stream_reco.response import Answer, Pick, fallback, response
from stream_reco.runtime import Runtime

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
DEFAULTS = Settings()
DRAFT = "https://json-schema.org/draft/2020-12/schema"
TS = 1_700_000_000_000


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(schemas.load(name))


def valid(name: str, doc: Any) -> bool:
    return validator(name).is_valid(doc)


# -- the decoders, one per input schema ----------------------------------------------------


def _catalog(doc: Any) -> object:
    item_id = doc.get("item_id") if isinstance(doc, dict) else None
    return events.decode_catalog(item_id.encode() if isinstance(item_id, str) else None, _raw(doc))


def _raw(doc: Any) -> bytes:
    return orjson.dumps(doc)


DECODERS: dict[str, tuple[Callable[[Any], object], type]] = {
    "event": (lambda doc: events.decode_event(_raw(doc)), events.Event),
    "catalog": (_catalog, events.CatalogItem),
    "request": (
        lambda doc: events.decode_request(_raw(doc), DEFAULTS.default_k, DEFAULTS.max_k),
        events.Request,
    ),
    "config": (lambda doc: policy.decode_config(b"default", _raw(doc)), policy.RulesUpdate),
}


def decoded(name: str, doc: Any) -> object:
    decode, kind = DECODERS[name]
    result = decode(doc)
    assert isinstance(result, kind), (doc, result)
    if isinstance(result, policy.RulesUpdate):
        policy.RulesConfig().apply(result).for_placement("default")  # the policy builds too
    return result


def rejected_by_decoder(name: str, doc: Any) -> str:
    result = DECODERS[name][0](doc)
    assert isinstance(result, events.Rejected), (doc, result)
    return result.reason


# -- every schema is a schema, shipped and printable -----------------------------------------


@pytest.mark.parametrize("name", schemas.NAMES)
def test_every_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = schemas.load(name)
    assert schema["$schema"] == DRAFT
    Draft202012Validator.check_schema(schema)
    assert schemas.TOPICS[name] in schema["title"]


def test_every_shipped_file_is_listed() -> None:
    shipped = {p.name for p in resources.files(schemas).iterdir() if p.name.endswith(".json")}
    assert shipped == {f"{name}.json" for name in schemas.NAMES}


def test_unknown_schema_is_refused_with_the_known_names() -> None:
    with pytest.raises(schemas.UnknownSchema, match="event, catalog"):
        schemas.load("events")


def test_python_m_prints_a_schema() -> None:
    run = [sys.executable, "-m", "stream_reco.schemas"]
    out = subprocess.run([*run, "request"], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == schemas.load("request")
    listing = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    assert "reco-deadletter" in listing
    assert subprocess.run([*run, "nope"], capture_output=True, text=True).returncode == 2


# -- the schemas name the decoders' fields and limits ----------------------------------------


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("event", _fields(events.Event) | {"context"}),
        ("catalog", _fields(events.CatalogItem) | {"attributes"}),
        ("request", _fields(events.Request) | {"context"}),
        ("config", set(policy.PARSERS)),
    ],
)
def test_schema_names_every_field_the_decoder_reads(name: str, fields: set[str]) -> None:
    assert set(schemas.load(name)["properties"]) == fields


def _at(name: str, path: str) -> Any:
    node: Any = schemas.load(name)
    for part in path.split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


@pytest.mark.parametrize(
    ("name", "path", "expected"),
    [
        *[(n, "$defs/id/maxLength", events.MAX_ID_LEN) for n in ("event", "catalog", "request")],
        ("response", "$defs/id/maxLength", events.MAX_ID_LEN),
        ("config", "$defs/names/items/maxLength", events.MAX_ID_LEN),
        ("config", "$defs/names/maxItems", policy.MAX_IDS),
        ("event", "properties/type/enum", list(EVENT_TYPES)),
        ("event", "properties/ts/minimum", events.MIN_TS_MS),
        ("event", "properties/ts/maximum", events.MAX_TS_MS),
        ("event", "properties/quantity/maximum", events.MAX_QUANTITY),
        ("event", "properties/price/maximum", events.MAX_PRICE),
        ("catalog", "properties/tags/maxItems", events.MAX_TAGS),
        ("catalog", "properties/embedding/maxItems", events.MAX_EMBEDDING),
        ("request", "properties/exclude/maxItems", events.MAX_EXCLUDE),
        ("request", "properties/k/maximum", DEFAULTS.max_k),
        ("config", "properties/margin_boost/maximum", policy.MAX_BOOST),
        ("config", "properties/discovery_share/anyOf/1/minimum", policy.DISCOVERY_RANGE[0]),
        ("config", "properties/discovery_share/anyOf/1/maximum", policy.DISCOVERY_RANGE[1]),
        ("config", "properties/event_weights/propertyNames/enum", list(EVENT_TYPES)),
        ("deadletter", "$defs/base64/maxLength", 4 * -(-events.MAX_DEADLETTER_BYTES // 3)),
    ],
)
def test_schema_limits_are_the_decoders_constants(name: str, path: str, expected: Any) -> None:
    assert _at(name, path) == expected


# -- what a schema accepts, the decoder accepts ----------------------------------------------

SCALAR = {
    "type": ["null", "boolean", "integer", "number", "string"],
    "minimum": -1e15,
    "maximum": 1e15,
    "maxLength": 8,
}


def bounded(node: Any) -> Any:
    """A copy of a schema that only draws small documents, so examples stay fast: arrays of a
    few items, and free-form objects (context, attributes, unknown fields) of a few scalars,
    which keeps them under the byte limits a schema cannot state."""
    if isinstance(node, list):
        return [bounded(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: bounded(v) for k, v in node.items()}
    if "maxItems" in out:
        out["maxItems"] = min(out["maxItems"], 4)
    types = out.get("type", [])
    if "object" in (types if isinstance(types, list) else [types]):
        if out.get("additionalProperties", True) is True:
            out["additionalProperties"] = SCALAR
        out.setdefault("maxProperties", len(out.get("properties", {})) + 3)
    return out


EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.parametrize("name", sorted(DECODERS))
@EXAMPLES
@given(data=st.data())
def test_every_schema_valid_document_is_decoded(name: str, data: st.DataObject) -> None:
    doc = data.draw(from_schema(bounded(schemas.load(name))), label=name)
    assert valid(name, doc)  # the bounded copy draws nothing the shipped schema refuses
    decoded(name, doc)


# -- what the decoder rejects, the schema refuses --------------------------------------------

EVENT = {"event_id": "e-1", "type": "view", "session_id": "s-1", "item_id": "i-1", "ts": TS}
ITEM = {"item_id": "i-1", "title": "Mug", "tags": ["blue"], "embedding": [0.5, -1]}
REQUEST = {"request_id": "r-1", "session_id": "s-1", "k": 5, "exclude": ["i-2"]}
RULES = {"category_cap": 3, "promoted": ["i-7"], "event_weights": {"view": 1}}
BASE = {"event": EVENT, "catalog": ITEM, "request": REQUEST, "config": RULES}
LONG = "x" * (events.MAX_ID_LEN + 1)


def _bad() -> Iterator[tuple[str, dict[str, Any], str]]:
    """(schema, changes to its base document, a word the decoder's reason must contain)."""
    for name in ("event", "request"):
        ids = ("event_id", "session_id", "item_id") if name == "event" else ("request_id",)
        for field in ids:
            for value in ("", LONG, "a\x1fb", "nl\n", "del\x7f", 42, None):
                yield name, {field: value}, field
        yield name, {"user_id": ""}, "user_id"
        yield name, {"context": [1]}, "context"
        yield name, {"context": "page=pdp"}, "context"
    yield "event", {"type": "sniff"}, "type"
    yield "event", {"type": "VIEW"}, "type"
    yield "event", {"type": None}, "type"
    yield "event", {"recommendation_id": 7}, "recommendation_id"
    for ts in (TS // 1000, events.MIN_TS_MS - 1, events.MAX_TS_MS + 1, -1, str(TS), True):
        yield "event", {"ts": ts}, "ts"
    for quantity in (0, -1, events.MAX_QUANTITY + 1, 1.5, True, "2"):
        yield "event", {"quantity": quantity}, "quantity"
    for price in (-0.01, 1e10, "9.99", True):
        yield "event", {"price": price}, "price"
    yield "catalog", {"item_id": LONG}, "item_id"
    yield "catalog", {"item_id": "i\t1"}, "item_id"
    yield "catalog", {"title": "t" * 513}, "title"
    yield "catalog", {"category": "c" * (events.MAX_ID_LEN + 1)}, "category"
    yield "catalog", {"brand": 5}, "brand"
    yield "catalog", {"price": -1}, "price"
    yield "catalog", {"margin": 2e9}, "margin"
    for in_stock in (1, "true", None):
        yield "catalog", {"in_stock": in_stock}, "in_stock"
    for tags in ("blue", [1], ["ok", None], ["t"] * (events.MAX_TAGS + 1)):
        yield "catalog", {"tags": tags}, "tags"
    for emb in ([], ["x"], [True], [0.0] * (events.MAX_EMBEDDING + 1), {"a": 1}):
        yield "catalog", {"embedding": emb}, "embedding"
    yield "catalog", {"attributes": [1]}, "attributes"
    yield "request", {"session_id": LONG}, "session_id"
    for k in (0, -3, DEFAULTS.max_k + 1, 2.5, "5", True):
        yield "request", {"k": k}, "k"
    for exclude in ("i-1", {"i-1": True}, [1], [""], [LONG], ["a\nb"]):
        yield "request", {"exclude": exclude}, "exclude"
    yield "request", {"exclude": [f"i{n}" for n in range(events.MAX_EXCLUDE + 1)]}, "exclude"
    yield "request", {"placement": ""}, "placement"
    yield "request", {"item_id": LONG}, "item_id"
    yield "config", {"colour": "red"}, "unknown fields"
    for cap in (-1, policy.MAX_IDS + 1, 2.5, True, "3"):
        yield "config", {"category_cap": cap}, "category_cap"
    for name, value in (("mmr_lambda", 1.5), ("mmr_lambda", None), ("margin_boost", 11)):
        yield "config", {name: value}, name
    for share in (0.1, 0.3, -0.0001, True):
        yield "config", {"discovery_share": share}, "discovery_share"
    for field in ("promoted", "exclude", "exclude_categories", "exclude_brands"):
        for value in ("i-1", [""], [1], [LONG], ["a\x00"], None):
            yield "config", {field: value}, field
    for weights in ({"like": 1}, {"view": -1}, {"view": "1"}, [1]):
        yield "config", {"event_weights": weights}, "event_weights"
    yield "config", {"session_half_life_s": -1}, "session_half_life_s"
    yield "config", {"exclude_item_in_view": 0}, "exclude_item_in_view"
    yield "config", {"exclude_item_in_view": "no"}, "exclude_item_in_view"


BAD = list(_bad())


@pytest.mark.parametrize(("name", "change", "word"), BAD, ids=[f"{n}-{w}" for n, _, w in BAD])
def test_every_documented_rejection_is_refused_by_both(
    name: str, change: dict[str, Any], word: str
) -> None:
    doc = BASE[name] | change
    decoded(name, BASE[name])
    assert not valid(name, doc), doc
    assert word in rejected_by_decoder(name, doc)


@pytest.mark.parametrize("name", sorted(DECODERS))
@pytest.mark.parametrize("doc", [[1, 2], "view", 3, True])  # JSON null: a removal, see below
def test_a_value_that_is_not_an_object_is_refused_by_both(name: str, doc: Any) -> None:
    assert not valid(name, doc)
    rejected_by_decoder(name, doc)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_required_fields_are_required_by_both_and_the_rest_optional(name: str) -> None:
    required = set(schemas.load(name).get("required", []))
    for field in BASE[name]:
        doc = {k: v for k, v in BASE[name].items() if k != field}
        if field in required:
            assert not valid(name, doc), field
            assert field in rejected_by_decoder(name, doc)
        else:
            assert valid(name, doc), field
            decoded(name, doc)


@pytest.mark.parametrize("char", [chr(c) for c in [*range(0x20), 0x7F]])
def test_no_control_character_in_an_id(char: str) -> None:
    doc = EVENT | {"item_id": f"a{char}"}
    assert not valid("event", doc)
    rejected_by_decoder("event", doc)
    assert valid("event", EVENT | {"item_id": "a\u0080é\u2028"})  # only C0 and DEL are controls


@pytest.mark.parametrize(
    ("name", "field"),
    [("event", "event_id"), ("event", "session_id"), ("event", "item_id"), ("catalog", "item_id"),
     ("request", "session_id"), ("request", "item_id")],
)  # fmt: skip
@pytest.mark.parametrize("char", ["{", "}"])
def test_no_brace_in_an_id_keys_are_made_of(name: str, field: str, char: str) -> None:
    doc = BASE[name] | {field: f"a{char}b"}
    assert not valid(name, doc)
    assert field in rejected_by_decoder(name, doc)


@pytest.mark.parametrize(("name", "field"), [("event", "user_id"), ("request", "placement")])
def test_braces_in_other_ids_are_fine(name: str, field: str) -> None:
    doc = BASE[name] | {field: "{3F25-04E1}"}
    assert valid(name, doc)
    decoded(name, doc)


# -- what a schema cannot say, it says in words ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "doc", "words"),
    [
        ("event", EVENT | {"ts": float(TS)}, "fraction"),
        ("event", EVENT | {"context": {"blob": "x" * events.MAX_CONTEXT_BYTES}}, "4096 bytes"),
        ("event", EVENT | {"blob": "x" * events.MAX_MESSAGE_BYTES}, "65536 bytes"),
        ("request", REQUEST | {"k": 5.0}, "fraction"),
        ("catalog", ITEM | {"attributes": {"blob": "x" * events.MAX_ATTRIBUTES_BYTES}}, "4096"),
        ("config", RULES | {"category_cap": 3.0}, "fraction"),
    ],
)
def test_limits_beyond_json_schema_are_stated_in_the_schema(
    name: str, doc: dict[str, Any], words: str
) -> None:
    assert valid(name, doc)
    rejected_by_decoder(name, doc)
    assert words in schemas.load(name)["$comment"]


def test_catalogue_key_rules_are_stated_in_the_schema() -> None:
    assert valid("catalog", ITEM)
    mismatch = events.decode_catalog(b"i-2", _raw(ITEM))
    assert isinstance(mismatch, events.Rejected) and "does not match" in mismatch.reason
    assert "equals item_id" in schemas.load("catalog")["$comment"]


def test_catalogue_and_config_schemas_say_how_a_removal_is_sent() -> None:
    for name in ("catalog", "config"):
        assert "null value (a Kafka tombstone)" in schemas.load(name)["description"]
    assert events.decode_catalog(b"i-1", None) == events.Tombstone("i-1")
    assert policy.decode_config(b"default", None) == policy.RulesUpdate("default", None)


# -- the contract's examples are valid ---------------------------------------------------------

JSON_BLOCK = re.compile(r"^```json\n(.*?)^```", re.M | re.S)


def contract_examples(topic: str) -> list[Any]:
    text = CONTRACT.read_text(encoding="utf-8")
    start = text.index(f"\n## `{topic}`\n")
    end = text.find("\n## ", start + 1)
    return [json.loads(block) for block in JSON_BLOCK.findall(text[start:end])]


@pytest.mark.parametrize("name", schemas.NAMES)
def test_contract_examples_are_valid(name: str) -> None:
    examples = contract_examples(schemas.TOPICS[name])
    if name != "config":  # its values are in docs/rules.md
        assert examples, f"no ```json example in the {schemas.TOPICS[name]} section"
    for doc in examples:
        validator(name).validate(doc)
        if name in DECODERS:
            decoded(name, doc)


# -- what the worker writes is valid -----------------------------------------------------------


def _answer() -> Answer:
    return Answer(
        [
            Pick("i-2", 0.9, "often chosen with Mug (i-1) in your cart", {}, "relevance",
                 [("cooc", 0.4), ("seq", 0.3), ("pop", 0.01)]),
            Pick("i-3", 0.0, "promoted", {}, "promoted"),
            Pick("i-4", 0.2, "trending in kitchen", {}, "discovery", [("trending", 0.2)]),
        ],
        model_version=3,
        degraded="blend",
    )  # fmt: skip


def test_responses_built_by_the_worker_are_valid() -> None:
    started = time.perf_counter()
    answer = response("s-1", "request", _answer(), started, "r-1")
    live = Runtime(fallback=[("i-5", None), ("i-6", events.CatalogItem("i-6"))])
    popular = response("s-1", "request", fallback(live, set(), 5, None), started, "r-2")
    push = response("s-1", "add_to_cart", _answer(), started) | {"event_id": "e-9"}
    empty = response("s-1", "request", Answer([]), started, "r-3")
    for doc in (answer, popular, push, empty):
        validator("response").validate(orjson.loads(orjson.dumps(doc)))
    assert popular["degraded"] == "popular" and len(popular["items"]) == 2
    assert not valid("response", {k: v for k, v in push.items() if k != "event_id"})
    assert not valid("response", answer | {"request_id": None})
    assert not valid("response", answer | {"degraded": "slow"})


@EXAMPLES
@given(
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=200),
    partition=st.integers(0, 1000),
    offset=st.integers(0, 2**62),
)
def test_dead_letters_written_by_the_worker_are_valid(
    key: bytes | None, value: bytes | None, partition: int, offset: int
) -> None:
    raw = events.dead_letter("invalid event: bad", "reco-events", partition, offset, key, value, TS)
    validator("deadletter").validate(orjson.loads(raw))


def test_a_cut_dead_letter_is_valid() -> None:
    value = b"\xff" * (events.MAX_DEADLETTER_BYTES + 10)
    doc = orjson.loads(events.dead_letter("too big", "reco-events", 0, 1, b"k", value, TS))
    validator("deadletter").validate(doc)
    assert doc["value_truncated"] and doc["value_size"] == len(value)
    assert not valid("deadletter", doc | {"value_sha256": "XYZ"})
    assert not valid("deadletter", doc | {"value_b64": "not base64!"})


# -- the contract's field tables name exactly what the schemas describe ------------------------
FIELD_ROW = re.compile(r"^\|\s*`([a-z_0-9]+(?:\[\]\.[a-z_0-9]+)?)`\s*\|", re.M)


def _table_fields(topic: str) -> set[str]:
    text = CONTRACT.read_text(encoding="utf-8")
    start = text.index(f"\n## `{topic}`\n")
    end = text.find("\n## ", start + 1)
    return set(FIELD_ROW.findall(text[start:end]))


@pytest.mark.parametrize("name", ["event", "catalog", "request", "response", "deadletter"])
def test_contract_tables_list_exactly_the_schema_fields(name: str) -> None:
    schema = schemas.load(name)
    fields = set(schema["properties"])
    if name == "response":
        item = schema["properties"]["items"]["items"]["properties"]
        fields |= {f"items[].{f}" for f in item}
    assert _table_fields(schemas.TOPICS[name]) == fields
