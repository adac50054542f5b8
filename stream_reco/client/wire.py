"""What a client sends, checked exactly as the worker checks it: events and requests."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from stream_reco.config import Settings
from stream_reco.errors import StreamRecoError
from stream_reco.events import Rejected, decode_event, decode_request

# The worker's default limits, for a client not built from the worker's settings.
DEFAULTS = Settings()


class _Refused(StreamRecoError, ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidEvent(_Refused):
    """An event the worker would dead-letter; `reason` is the worker's own reason."""


class InvalidRequest(_Refused):
    """A request the worker would dead-letter, so never answer; `reason` says why."""


def encode_request(
    request_id: str,
    session_id: str,
    k: int | None = None,
    *,
    placement: str | None = None,
    exclude: Iterable[str] = (),
    user_id: str | None = None,
    max_k: int = DEFAULTS.max_k,
) -> bytes:
    """The request's wire bytes, checked as the worker checks them (InvalidRequest if not)."""
    if isinstance(exclude, str | bytes):  # one id would go out as a list of its characters
        raise InvalidRequest("invalid request: exclude must be a list of item ids, not a string")
    doc: dict[str, Any] = {"request_id": request_id, "session_id": session_id}
    optional = {"k": k, "placement": placement, "user_id": user_id, "exclude": list(exclude)}
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


def check_timeout(seconds: float, error: type[StreamRecoError]) -> None:
    """Raise `error` unless `seconds` is a finite positive number (a client or request timeout)."""
    if not (isinstance(seconds, int | float) and math.isfinite(seconds) and seconds > 0):
        raise error(f"timeout={seconds!r} must be a positive number of seconds")
