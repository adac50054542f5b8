"""Hostile input, generated: every decoder answers any bytes or any JSON with a value or a
reason, never an exception (which would turn one message into a retried, stalled batch)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from stream_reco.config import Settings
from stream_reco.events import (
    CatalogItem,
    Event,
    Rejected,
    Request,
    Tombstone,
    decode_catalog,
    decode_event,
    decode_request,
)
from stream_reco.ranking.policy import RulesUpdate, decode_config
from stream_reco.web import BadInput, rank_request, request_from_query

SETTINGS = Settings()
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Any JSON value: what a producer could put in a field.
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
EVENT = {
    "event_id": "e1",
    "type": "view",
    "session_id": "s1",
    "item_id": "i1",
    "ts": 1_750_000_000_000,
}
ITEM = {"item_id": "i1", "title": "A lamp", "category": "lamps", "price": 10.0, "in_stock": True}
REQUEST = {"request_id": "r1", "session_id": "s1", "k": 5}


def wire(doc: Any) -> bytes:
    """As a producer might send it: stdlib json writes any integer (and Infinity, which is
    not JSON either)."""
    return json.dumps(doc).encode()


def decoders(raw: bytes | None, key: bytes | None) -> list[object]:
    return [
        decode_event(raw),
        decode_catalog(key, raw),
        decode_request(raw, SETTINGS.default_k, SETTINGS.max_k),
        decode_config(key, raw),
    ]


def check(results: list[object]) -> None:
    for got in results:
        if isinstance(got, Rejected):
            assert isinstance(got.reason, str) and got.reason.strip()
        else:
            assert isinstance(got, Event | CatalogItem | Tombstone | Request | RulesUpdate), got


@FAST
@given(raw=st.none() | st.binary(max_size=300), key=st.none() | st.binary(max_size=40))
def test_any_bytes_are_decoded_or_refused_with_a_reason(
    raw: bytes | None, key: bytes | None
) -> None:
    check(decoders(raw, key))


@FAST
@given(doc=JSON)
def test_any_json_is_decoded_or_refused_with_a_reason(doc: Any) -> None:
    check(decoders(wire(doc), b"i1"))


@pytest.mark.parametrize("base", [EVENT, ITEM, REQUEST], ids=["event", "catalog", "request"])
@FAST
@given(data=st.data())
def test_a_valid_document_with_any_field_replaced_is_decoded_or_refused(
    base: dict[str, Any], data: st.DataObject
) -> None:
    field = data.draw(st.sampled_from([*base, "context", "quantity", "exclude", "placement"]))
    doc = {**base, field: data.draw(JSON)}
    check(decoders(wire(doc), str(doc.get("item_id")).encode()))


@FAST
@given(
    query=st.lists(
        st.tuples(
            st.sampled_from(["session_id", "k", "exclude", "placement", "item_id", "x"]),
            st.text(max_size=30),
        ),
        max_size=6,
    )
)
def test_any_query_is_a_request_or_a_bad_input(query: list[tuple[str, str]]) -> None:
    try:
        req = request_from_query(MultiDict(query), SETTINGS)
    except BadInput as exc:
        assert str(exc).strip()
    else:
        assert isinstance(req, Request)


@FAST
@given(body=st.binary(max_size=200) | JSON.map(wire))
def test_any_rank_body_is_a_request_or_a_bad_input(body: bytes) -> None:
    try:
        req, items = rank_request(body, SETTINGS)
    except BadInput as exc:
        assert str(exc).strip()
    else:
        assert isinstance(req, Request) and items and req.k <= len(items)
