"""Wire schemas: decode and validate every inbound message, encode responses and dead letters."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_reco.config import EVENT_TYPES

# The field rules live in wire_fields; these names are re-exported because callers have always
# imported the limits and helpers from here.
from stream_reco.wire_fields import BRACES as BRACES
from stream_reco.wire_fields import CONTROL as CONTROL
from stream_reco.wire_fields import MAX_ATTRIBUTES_BYTES as MAX_ATTRIBUTES_BYTES
from stream_reco.wire_fields import MAX_CONTEXT_BYTES as MAX_CONTEXT_BYTES
from stream_reco.wire_fields import MAX_EMBEDDING as MAX_EMBEDDING
from stream_reco.wire_fields import MAX_EXCLUDE as MAX_EXCLUDE
from stream_reco.wire_fields import MAX_ID_LEN as MAX_ID_LEN
from stream_reco.wire_fields import MAX_MESSAGE_BYTES as MAX_MESSAGE_BYTES
from stream_reco.wire_fields import MAX_PRICE as MAX_PRICE
from stream_reco.wire_fields import MAX_QUANTITY as MAX_QUANTITY
from stream_reco.wire_fields import MAX_TAGS as MAX_TAGS
from stream_reco.wire_fields import MAX_TS_MS as MAX_TS_MS
from stream_reco.wire_fields import MIN_TS_MS as MIN_TS_MS
from stream_reco.wire_fields import PSEUDONYM_CHARS as PSEUDONYM_CHARS
from stream_reco.wire_fields import (
    Invalid,
    check_context,
    check_embedding,
    check_object,
    id_field,
    int_field,
    load_object,
    not_utf8,
    number_field,
    text_field,
    ts_field,
    user_field,
)
from stream_reco.wire_fields import load_json as load_json
from stream_reco.wire_fields import pseudonym as pseudonym

MAX_DEADLETTER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    type: str
    session_id: str
    item_id: str
    ts: int
    user_id: str | None = None
    quantity: int = 1
    price: float | None = None
    recommendation_id: str | None = None


@dataclass(frozen=True, slots=True)
class CatalogItem:
    item_id: str
    title: str = ""
    category: str = ""
    brand: str = ""
    price: float | None = None
    in_stock: bool = True
    tags: tuple[str, ...] = ()
    margin: float | None = None
    embedding: tuple[float, ...] = ()  # for the item's vector only; not kept with its metadata


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A null catalogue value: the item is removed."""

    item_id: str


@dataclass(frozen=True, slots=True)
class Request:
    request_id: str
    session_id: str
    k: int
    user_id: str | None = None
    placement: str | None = None
    exclude: frozenset[str] = field(default_factory=frozenset)
    item_id: str | None = None  # the item on the page the answer is shown on, if any


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message was refused; goes to the dead-letter topic with the original bytes."""

    reason: str


def decode_event(
    raw: bytes | None, latest_ts: int = MAX_TS_MS, user_key: str = ""
) -> Event | Rejected:
    """Parse and validate one `reco-events` value; `ts` may not be later than `latest_ts`
    (a future-dated event would outweigh every real one under forward decay). With a
    `user_key` (STREAM_RECO_USER_ID_KEY), the user id comes back as its pseudonym."""
    try:
        doc = load_object(raw)
        kind = doc.get("type")
        if kind not in EVENT_TYPES:
            raise Invalid(f"type must be one of {list(EVENT_TYPES)}, got {kind!r}")
        check_context(doc)
        return Event(
            event_id=id_field(doc, "event_id", key=True),  # type: ignore[arg-type]
            type=kind,
            session_id=id_field(doc, "session_id", key=True),  # type: ignore[arg-type]
            item_id=id_field(doc, "item_id", key=True),  # type: ignore[arg-type]
            ts=ts_field(doc, latest_ts),
            user_id=user_field(doc, user_key),
            quantity=int_field(doc, "quantity", 1, MAX_QUANTITY, default=1),
            price=number_field(doc, "price", 0.0, MAX_PRICE),
            recommendation_id=id_field(doc, "recommendation_id", optional=True),
        )
    except Invalid as exc:
        return Rejected(f"invalid event: {exc}")


def decode_catalog(key: bytes | None, raw: bytes | None) -> CatalogItem | Tombstone | Rejected:
    """Parse one `reco-catalog` record; a null/empty value is a tombstone for its key."""
    try:
        # Checked first: a tombstone decoded with replacement characters could remove an item
        # whose id really contains them, and a record's key would only be called a mismatch.
        if key and (bad := not_utf8(key, "key")):
            raise Invalid(bad)
        if raw is None or len(raw) == 0 or raw.strip() == b"null":
            if not key:
                raise Invalid("tombstone without a key: cannot tell which item to remove")
            removed = id_field({"item_id": key.decode()}, "item_id")
            return Tombstone(removed)  # type: ignore[arg-type]
        doc = load_object(raw)
        tags = doc.get("tags")
        tags = [] if tags is None else tags
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise Invalid("tags must be a list of strings")
        if len(tags) > MAX_TAGS:
            raise Invalid(f"more than {MAX_TAGS} tags")
        in_stock = doc.get("in_stock", True)
        if not isinstance(in_stock, bool):
            raise Invalid("in_stock must be true or false")
        check_embedding(doc)
        check_object(doc, "attributes", MAX_ATTRIBUTES_BYTES)
        item_id: str = id_field(doc, "item_id", key=True)  # type: ignore[assignment]
        if key and key != item_id.encode():
            # Compaction and tombstones act on the key: a mismatch would orphan the item.
            raise Invalid(f"key {key[:MAX_ID_LEN]!r} does not match item_id {item_id!r}")
        return CatalogItem(
            item_id=item_id,
            title=text_field(doc, "title"),
            category=text_field(doc, "category", MAX_ID_LEN),
            brand=text_field(doc, "brand", MAX_ID_LEN),
            price=number_field(doc, "price", 0.0, MAX_PRICE),
            in_stock=in_stock,
            tags=tuple(t[:MAX_ID_LEN] for t in tags),
            margin=number_field(doc, "margin", -1e9, 1e9),
            embedding=tuple(float(x) for x in doc.get("embedding") or ()),
        )
    except Invalid as exc:
        return Rejected(f"invalid catalogue record: {exc}")


def decode_request(
    raw: bytes | None, default_k: int, max_k: int, user_key: str = ""
) -> Request | Rejected:
    """Parse one `reco-requests` value (the user id pseudonymised with a `user_key`)."""
    try:
        doc = load_object(raw)
        check_context(doc)
        exclude = doc.get("exclude")
        exclude = [] if exclude is None else exclude
        if not isinstance(exclude, list):
            raise Invalid("exclude must be a list of item ids")
        if len(exclude) > MAX_EXCLUDE:
            raise Invalid(f"exclude has more than {MAX_EXCLUDE} ids")
        for n, x in enumerate(exclude):
            id_field({f"exclude[{n}]": x}, f"exclude[{n}]")
        k = doc.get("k")
        return Request(
            request_id=id_field(doc, "request_id"),  # type: ignore[arg-type]
            session_id=id_field(doc, "session_id", key=True),  # type: ignore[arg-type]
            k=default_k if k is None else int_field(doc, "k", 1, max_k),
            user_id=user_field(doc, user_key),
            placement=id_field(doc, "placement", optional=True),
            exclude=frozenset(exclude),
            item_id=id_field(doc, "item_id", optional=True, key=True),
        )
    except Invalid as exc:
        return Rejected(f"invalid request: {exc}")


def encode(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def dead_letter(
    reason: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: bytes | None,
    ts_ms: int,
) -> bytes:
    """The dead-letter record: enough to find, understand and replay the original message.
    Bytes are cut at MAX_DEADLETTER_BYTES so a dead letter always fits Kafka's message limit;
    size and sha256 still identify the original."""
    return orjson.dumps(
        {
            "source_topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": _b64(key),
            "value_b64": _b64(value),
            "value_size": None if value is None else len(value),
            "value_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
            "value_truncated": value is not None and len(value) > MAX_DEADLETTER_BYTES,
            "reason": reason,
            "ts": ts_ms,
        }
    )


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw[:MAX_DEADLETTER_BYTES]).decode()
