"""Wire field rules: the size and range limits of inbound messages and the check of each field."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from typing import Any

import orjson

MAX_MESSAGE_BYTES = 64 * 1024
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never in an id: stored entries use \x1f as separator
# Nor braces, in the ids keys are made of (session, event and item ids): Redis keys wrap an id
# in them (storage/keys.py), so a session id with one could share another session's keys.
BRACES = re.compile(r"[{}]")
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


class Invalid(ValueError):
    """A message or field outside the contract; its text becomes the Rejected reason."""


def load_json(raw: bytes) -> Any:
    """A message's JSON, within the size limit every input topic shares; ValueError if not."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Invalid(f"message is {len(raw)} bytes, more than {MAX_MESSAGE_BYTES}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Invalid(not_utf8(raw, "value") or f"not valid JSON: {exc}") from None


def not_utf8(raw: bytes, what: str) -> str | None:
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


def load_object(raw: bytes | None) -> dict[str, Any]:
    """A message's top-level JSON object; Invalid if empty, oversized, not JSON or not an object."""
    if raw is None or len(raw) == 0:
        raise Invalid("empty message")
    doc = load_json(raw)
    if not isinstance(doc, dict):
        raise Invalid(f"expected a JSON object, got {type(doc).__name__}")
    return doc


def id_field(
    doc: dict[str, Any], name: str, *, optional: bool = False, key: bool = False
) -> str | None:
    """An id: a short non-empty string without controls (nor braces if keys are made of it)."""
    value = doc.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise Invalid(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LEN:
        raise Invalid(f"{name} is longer than {MAX_ID_LEN} characters")
    if CONTROL.search(value):
        raise Invalid(f"{name} contains control characters")
    if key and BRACES.search(value):
        raise Invalid(f"{name} contains {{ or }}, which Redis keys wrap ids in")
    return value


def int_field(doc: dict[str, Any], name: str, lo: int, hi: int, default: int | None = None) -> int:
    """An integer in lo..hi, `default` when absent."""
    value = doc.get(name)
    if value is None:
        value = default
    # bool is an int subclass; true/false is never a count or a timestamp.
    if not isinstance(value, int) or isinstance(value, bool):
        raise Invalid(f"{name} must be an integer")
    if not lo <= value <= hi:
        raise Invalid(f"{name}={value} is outside {lo}..{hi}")
    return value


def ts_field(doc: dict[str, Any], latest_ts: int) -> int:
    """The event time; a value in the range once multiplied by 1000 was sent in seconds, the
    commonest producer mistake, so the message says so."""
    try:
        return int_field(doc, "ts", MIN_TS_MS, latest_ts)
    except Invalid as exc:
        value = doc.get("ts")
        if type(value) is int and MIN_TS_MS <= value * 1000 <= MAX_TS_MS:
            raise Invalid(
                f"{exc}: ts is epoch milliseconds and {value} looks like seconds; "
                f"send {value * 1000} (seconds x 1000)"
            ) from None
        raise


def number_field(doc: dict[str, Any], name: str, lo: float, hi: float) -> float | None:
    """An optional finite number in lo..hi."""
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Invalid(f"{name} must be a number")
    if not (math.isfinite(value) and lo <= value <= hi):
        raise Invalid(f"{name}={value} is outside {lo}..{hi}")
    return float(value)


def check_object(doc: dict[str, Any], name: str, limit: int) -> None:
    """An optional JSON object of at most `limit` bytes once encoded."""
    value = doc.get(name)
    if value is None:
        return
    if not isinstance(value, dict):
        raise Invalid(f"{name} must be a JSON object")
    if len(orjson.dumps(value)) > limit:
        raise Invalid(f"{name} is larger than {limit} bytes")


def check_context(doc: dict[str, Any]) -> None:
    check_object(doc, "context", MAX_CONTEXT_BYTES)


def check_embedding(doc: dict[str, Any]) -> None:
    """Checked now so bad vectors never reach the ANN index a later version builds from them."""
    value = doc.get("embedding")
    if value is None:
        return
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_EMBEDDING:
        raise Invalid(f"embedding must be a list of 1..{MAX_EMBEDDING} numbers")
    for x in value:
        if not isinstance(x, int | float) or isinstance(x, bool) or not math.isfinite(x):
            raise Invalid("embedding must contain finite numbers only")


def text_field(doc: dict[str, Any], name: str, limit: int = 512) -> str:
    """An optional string of at most `limit` characters, "" when absent."""
    value = doc.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string")
    if len(value) > limit:
        raise Invalid(f"{name} is longer than {limit} characters")
    return value


def pseudonym(user_key: str, user_id: str) -> str:
    """The user id as the engine stores and uses it when STREAM_RECO_USER_ID_KEY is set: a
    keyed hash (HMAC-SHA256, hex, cut to PSEUDONYM_CHARS), the same for the same id and key,
    and not reversible nor guessable from a list of ids without the key."""
    mac = hmac.new(user_key.encode(), user_id.encode(), hashlib.sha256)
    return mac.hexdigest()[:PSEUDONYM_CHARS]


def user_field(doc: dict[str, Any], user_key: str) -> str | None:
    """The validated user id, pseudonymised when a key is given (never by a client: the
    worker holds the key, so ids are hashed once and the same way)."""
    user_id = id_field(doc, "user_id", optional=True)
    if user_id is not None and not user_key and user_id.startswith("}"):
        # Unhashed, the id is the hash tag of its user's keys (`u:{<id>}:...`): a leading `}`
        # empties the tag, and each key would land in a slot of its own on a Redis Cluster.
        # Braces further in leave every key of the user on one slot (a braced GUID is fine).
        raise Invalid("user_id starts with }, which ends the Redis key's hash tag")
    return pseudonym(user_key, user_id) if user_key and user_id is not None else user_id
