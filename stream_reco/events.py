"""Wire schemas: decode and validate every inbound message, encode responses and dead letters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream_reco.config import EVENT_TYPES

MAX_MESSAGE_BYTES = 64 * 1024
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never in an id: stored entries use \x1f as separator
# Nor braces, in the ids keys are made of (session, event and item ids): Redis keys wrap an id
# in them (storage/keys.py), so a session id with one could share another session's keys.
BRACES = re.compile(r"[{}]")
MAX_DEADLETTER_BYTES = 64 * 1024
MAX_EMBEDDING = 4096
MAX_ATTRIBUTES_BYTES = 4096
MAX_ID_LEN = 128
MAX_CONTEXT_BYTES = 4096
MAX_EXCLUDE = 1000
MAX_TAGS = 50
MIN_TS_MS = 946_684_800_000  # 2000-01-01: earlier is almost surely seconds, not ms
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
MAX_PRICE = 1e9
MAX_QUANTITY = 10_000
PSEUDONYM_CHARS = 32  # hex of the keyed hash kept: 128 bits, no collision among real users


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


class _Invalid(ValueError):
    pass


def load_json(raw: bytes) -> Any:
    """A message's JSON, within the size limit every input topic shares; ValueError if not."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise _Invalid(f"message is {len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _Invalid(_not_utf8(raw, "value") or f"not valid JSON: {exc}") from None


def _not_utf8(raw: bytes, what: str) -> str | None:
    """Why `raw` is not UTF-8, or None if it is. orjson's own message for bad bytes talks of
    surrogates at char 0 wherever the byte is, which sends the producer looking elsewhere."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"{what} is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            f"encode the {what} as UTF-8"
        )
    return None


def _load(raw: bytes | None) -> dict[str, Any]:
    if raw is None or len(raw) == 0:
        raise _Invalid("empty message")
    doc = load_json(raw)
    if not isinstance(doc, dict):
        raise _Invalid(f"expected a JSON object, got {type(doc).__name__}")
    return doc


def _id(doc: dict[str, Any], name: str, *, optional: bool = False, key: bool = False) -> str | None:
    value = doc.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise _Invalid(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LEN:
        raise _Invalid(f"{name} is longer than {MAX_ID_LEN} characters")
    if CONTROL.search(value):
        raise _Invalid(f"{name} contains control characters")
    if key and BRACES.search(value):
        raise _Invalid(f"{name} contains {{ or }}, which Redis keys wrap ids in")
    return value


def _int(doc: dict[str, Any], name: str, lo: int, hi: int, default: int | None = None) -> int:
    value = doc.get(name)
    if value is None:
        value = default
    # bool is an int subclass; true/false is never a count or a timestamp.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Invalid(f"{name} must be an integer")
    if not lo <= value <= hi:
        raise _Invalid(f"{name}={value} is outside {lo}..{hi}")
    return value


def _ts(doc: dict[str, Any], latest_ts: int) -> int:
    """The event time; a value in the range once multiplied by 1000 was sent in seconds, the
    commonest producer mistake, so the message says so."""
    try:
        return _int(doc, "ts", MIN_TS_MS, latest_ts)
    except _Invalid as exc:
        value = doc.get("ts")
        if type(value) is int and MIN_TS_MS <= value * 1000 <= MAX_TS_MS:
            raise _Invalid(
                f"{exc}: ts is epoch milliseconds and {value} looks like seconds; "
                f"send {value * 1000} (seconds x 1000)"
            ) from None
        raise


def _number(doc: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Invalid(f"{name} must be a number")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise _Invalid(f"{name}={value} is outside {lo}..{hi}")
    return float(value)


def _object(doc: dict[str, Any], name: str, limit: int) -> None:
    value = doc.get(name)
    if value is None:
        return
    if not isinstance(value, dict):
        raise _Invalid(f"{name} must be a JSON object")
    if len(orjson.dumps(value)) > limit:
        raise _Invalid(f"{name} is larger than {limit} bytes")


def _context(doc: dict[str, Any]) -> None:
    _object(doc, "context", MAX_CONTEXT_BYTES)


def _embedding(doc: dict[str, Any]) -> None:
    """Checked now so bad vectors never reach the ANN index a later version builds from them."""
    value = doc.get("embedding")
    if value is None:
        return
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_EMBEDDING:
        raise _Invalid(f"embedding must be a list of 1..{MAX_EMBEDDING} numbers")
    for x in value:
        if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
            raise _Invalid("embedding must contain finite numbers only")


def _text(doc: dict[str, Any], name: str, limit: int = 512) -> str:
    value = doc.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _Invalid(f"{name} must be a string")
    if len(value) > limit:
        raise _Invalid(f"{name} is longer than {limit} characters")
    return value


def pseudonym(user_key: str, user_id: str) -> str:
    """The user id as the engine stores and uses it when STREAM_RECO_USER_ID_KEY is set: a
    keyed hash (HMAC-SHA256, hex, cut to PSEUDONYM_CHARS), the same for the same id and key,
    and not reversible nor guessable from a list of ids without the key."""
    mac = hmac.new(user_key.encode(), user_id.encode(), hashlib.sha256)
    return mac.hexdigest()[:PSEUDONYM_CHARS]


def _user(doc: dict[str, Any], user_key: str) -> str | None:
    """The validated user id, pseudonymised when a key is given (never by a client: the
    worker holds the key, so ids are hashed once and the same way)."""
    user_id = _id(doc, "user_id", optional=True)
    if user_id is not None and not user_key and user_id.startswith("}"):
        # Unhashed, the id is the hash tag of its user's keys (`u:{<id>}:...`): a leading `}`
        # empties the tag, and each key would land in a slot of its own on a Redis Cluster.
        # Braces further in leave every key of the user on one slot (a braced GUID is fine).
        raise _Invalid("user_id starts with }, which ends the Redis key's hash tag")
    return pseudonym(user_key, user_id) if user_key and user_id is not None else user_id


def decode_event(
    raw: bytes | None, latest_ts: int = MAX_TS_MS, user_key: str = ""
) -> Event | Rejected:
    """Parse and validate one `reco-events` value; `ts` may not be later than `latest_ts`
    (a future-dated event would outweigh every real one under forward decay). With a
    `user_key` (STREAM_RECO_USER_ID_KEY), the user id comes back as its pseudonym."""
    try:
        doc = _load(raw)
        kind = doc.get("type")
        if kind not in EVENT_TYPES:
            raise _Invalid(f"type must be one of {list(EVENT_TYPES)}, got {kind!r}")
        _context(doc)
        return Event(
            event_id=_id(doc, "event_id", key=True),  # type: ignore[arg-type]
            type=kind,
            session_id=_id(doc, "session_id", key=True),  # type: ignore[arg-type]
            item_id=_id(doc, "item_id", key=True),  # type: ignore[arg-type]
            ts=_ts(doc, latest_ts),
            user_id=_user(doc, user_key),
            quantity=_int(doc, "quantity", 1, MAX_QUANTITY, default=1),
            price=_number(doc, "price", 0.0, MAX_PRICE),
            recommendation_id=_id(doc, "recommendation_id", optional=True),
        )
    except _Invalid as exc:
        return Rejected(f"invalid event: {exc}")


def decode_catalog(key: bytes | None, raw: bytes | None) -> CatalogItem | Tombstone | Rejected:
    """Parse one `reco-catalog` record; a null/empty value is a tombstone for its key."""
    try:
        # Checked first: a tombstone decoded with replacement characters could remove an item
        # whose id really contains them, and a record's key would only be called a mismatch.
        if key and (bad := _not_utf8(key, "key")):
            raise _Invalid(bad)
        if raw is None or len(raw) == 0 or raw.strip() == b"null":
            if not key:
                raise _Invalid("tombstone without a key: cannot tell which item to remove")
            return Tombstone(_id({"item_id": key.decode()}, "item_id"))  # type: ignore[arg-type]
        doc = _load(raw)
        tags = doc.get("tags")
        tags = [] if tags is None else tags
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _Invalid("tags must be a list of strings")
        if len(tags) > MAX_TAGS:
            raise _Invalid(f"more than {MAX_TAGS} tags")
        in_stock = doc.get("in_stock", True)
        if not isinstance(in_stock, bool):
            raise _Invalid("in_stock must be true or false")
        _embedding(doc)
        _object(doc, "attributes", MAX_ATTRIBUTES_BYTES)
        item_id: str = _id(doc, "item_id", key=True)  # type: ignore[assignment]
        if key and key != item_id.encode():
            # Compaction and tombstones act on the key: a mismatch would orphan the item.
            raise _Invalid(f"key {key[:MAX_ID_LEN]!r} does not match item_id {item_id!r}")
        return CatalogItem(
            item_id=item_id,
            title=_text(doc, "title"),
            category=_text(doc, "category", MAX_ID_LEN),
            brand=_text(doc, "brand", MAX_ID_LEN),
            price=_number(doc, "price", 0.0, MAX_PRICE),
            in_stock=in_stock,
            tags=tuple(t[:MAX_ID_LEN] for t in tags),
            margin=_number(doc, "margin", -1e9, 1e9),
            embedding=tuple(float(x) for x in doc.get("embedding") or ()),
        )
    except _Invalid as exc:
        return Rejected(f"invalid catalogue record: {exc}")


def decode_request(
    raw: bytes | None, default_k: int, max_k: int, user_key: str = ""
) -> Request | Rejected:
    """Parse one `reco-requests` value (the user id pseudonymised with a `user_key`)."""
    try:
        doc = _load(raw)
        _context(doc)
        exclude = doc.get("exclude")
        exclude = [] if exclude is None else exclude
        if not isinstance(exclude, list):
            raise _Invalid("exclude must be a list of item ids")
        if len(exclude) > MAX_EXCLUDE:
            raise _Invalid(f"exclude has more than {MAX_EXCLUDE} ids")
        for n, x in enumerate(exclude):
            _id({f"exclude[{n}]": x}, f"exclude[{n}]")
        k = doc.get("k")
        return Request(
            request_id=_id(doc, "request_id"),  # type: ignore[arg-type]
            session_id=_id(doc, "session_id", key=True),  # type: ignore[arg-type]
            k=default_k if k is None else _int(doc, "k", 1, max_k),
            user_id=_user(doc, user_key),
            placement=_id(doc, "placement", optional=True),
            exclude=frozenset(exclude),
            item_id=_id(doc, "item_id", optional=True, key=True),
        )
    except _Invalid as exc:
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
