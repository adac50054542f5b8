"""What a client sends, checked exactly as the worker checks it: events, requests, catalogue
records and rules."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from stream_reco.config import Settings
from stream_reco.errors import StreamRecoError
from stream_reco.events import Rejected, decode_catalog, decode_event, decode_request
from stream_reco.ranking.policy import decode_config

# The worker's default limits, for a client not built from the worker's settings.
DEFAULTS = Settings()


class _Refused(StreamRecoError, ValueError):
    def __init__(self, reason: str, where: str = "") -> None:
        super().__init__(f"{where}: {reason}" if where else reason)
        self.reason = reason


class InvalidEvent(_Refused):
    """An event the worker would dead-letter; `reason` is the worker's own reason."""


class InvalidRequest(_Refused):
    """A request the worker would dead-letter, so never answer; `reason` says why."""


class InvalidItem(_Refused):
    """A catalogue record the worker would dead-letter; `reason` is the worker's own reason,
    the message also says which item of the batch it was."""


class InvalidRules(_Refused):
    """A rules message the worker would dead-letter; `reason` is the worker's own reason."""


def encode_request(
    request_id: str,
    session_id: str,
    k: int | None = None,
    *,
    placement: str | None = None,
    exclude: Iterable[str] = (),
    user_id: str | None = None,
    item_id: str | None = None,
    max_k: int = DEFAULTS.max_k,
) -> bytes:
    """The request's wire bytes, checked as the worker checks them (InvalidRequest if not);
    `item_id` is the item on the page the answer will be shown on, if any."""
    if isinstance(exclude, str | bytes):  # one id would go out as a list of its characters
        raise InvalidRequest("invalid request: exclude must be a list of item ids, not a string")
    doc: dict[str, Any] = {"request_id": request_id, "session_id": session_id}
    optional = {
        "k": k,
        "placement": placement,
        "user_id": user_id,
        "item_id": item_id,
        "exclude": list(exclude),
    }
    doc.update((name, value) for name, value in optional.items() if value not in (None, []))
    try:
        raw = orjson.dumps(doc)
    except TypeError as exc:
        raise InvalidRequest(f"invalid request: {exc}") from None
    checked = decode_request(raw, default_k=1, max_k=max_k)  # default_k only stands in for k
    if isinstance(checked, Rejected):
        raise InvalidRequest(checked.reason)
    return raw


def encode_event(
    event: Mapping[str, Any], max_future_s: int = DEFAULTS.max_future_s
) -> tuple[str, bytes]:
    """(session_id, wire bytes) of an event checked as the worker checks it (InvalidEvent if
    not); `max_future_s` is the worker's STREAM_RECO_MAX_FUTURE_S."""
    try:
        raw = orjson.dumps(event if isinstance(event, dict) else dict(event))
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"invalid event: {exc}") from None
    checked = decode_event(raw, int(time.time() * 1000) + max_future_s * 1000)
    if isinstance(checked, Rejected):
        raise InvalidEvent(checked.reason)
    return checked.session_id, raw


def encode_item(item: Mapping[str, Any]) -> tuple[str, bytes]:
    """(item_id, wire bytes) of a catalogue record checked as the worker checks it, keyed by
    its own item_id as compaction needs (InvalidItem if not)."""
    doc = dict(item) if isinstance(item, Mapping) else item  # not a mapping: the worker says so
    try:
        raw = orjson.dumps(doc)
    except (TypeError, ValueError) as exc:
        raise InvalidItem(f"invalid catalogue record: {exc}") from None
    item_id = doc.get("item_id") if isinstance(doc, dict) else None
    key = item_id.encode() if isinstance(item_id, str) else None
    checked = decode_catalog(key, raw)
    if isinstance(checked, Rejected):
        raise InvalidItem(checked.reason)
    return checked.item_id, raw


def encode_removal(item_id: str) -> str:
    """The key of the tombstone that removes `item_id` from the catalogue (InvalidItem if it
    is not an id the worker accepts)."""
    if not isinstance(item_id, str):
        raise InvalidItem(f"invalid catalogue record: item_id must be a string, not {item_id!r}")
    checked = decode_catalog(item_id.encode(), None)
    if isinstance(checked, Rejected):
        raise InvalidItem(checked.reason)
    return checked.item_id


def encode_rules(key: str, overrides: Mapping[str, Any] | None) -> tuple[str, bytes | None]:
    """(key, wire value) of a reco-config message checked as the worker checks it (InvalidRules
    if not): `overrides` for "default" or a placement, or None to drop that key's overrides."""
    if not isinstance(key, str):
        raise InvalidRules(f"invalid rules message: key must be a string, not {key!r}")
    doc = dict(overrides) if isinstance(overrides, Mapping) else overrides
    try:
        raw = None if doc is None else orjson.dumps(doc)
    except (TypeError, ValueError) as exc:
        raise InvalidRules(f"invalid rules message: {exc}") from None
    checked = decode_config(key.encode(), raw)
    if isinstance(checked, Rejected):
        raise InvalidRules(checked.reason)
    return checked.key, raw


def check_timeout(seconds: float, error: type[StreamRecoError]) -> None:
    """Raise `error` unless `seconds` is a finite positive number (a client or request timeout)."""
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise error(f"timeout={seconds!r} must be a positive number of seconds")
