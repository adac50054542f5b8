"""The client's checks before anything is sent: requests and events refused as the worker would."""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from stream_reco.client import (
    InvalidEvent,
    InvalidRequest,
    RecoClient,
    RecoTimeout,
    encode_event,
    encode_request,
)
from stream_reco.errors import ConfigError, StreamRecoError
from stream_reco.events import Rejected, Request, decode_event, decode_request


def event(**change: Any) -> dict[str, Any]:
    doc = {
        "event_id": "e-1",
        "type": "add_to_cart",
        "session_id": "s-1",
        "item_id": "item-1",
        "ts": int(time.time() * 1000),
        "quantity": 2,
    }
    return {k: v for k, v in {**doc, **change}.items() if v is not ...}


def test_request_sends_only_what_was_given_and_decodes_as_the_worker_reads_it() -> None:
    assert orjson.loads(encode_request("c-1", "s-1")) == {"request_id": "c-1", "session_id": "s-1"}
    raw = encode_request("c-2", "s-1", 3, placement="cart", exclude=iter(["a", "b"]), user_id="u")
    assert decode_request(raw, 10, 100) == Request(
        "c-2", "s-1", 3, user_id="u", placement="cart", exclude=frozenset({"a", "b"})
    )


@pytest.mark.parametrize(
    ("args", "options", "reason"),
    [
        (("c-1", "s-1", 0), {}, "invalid request: k=0 is outside 1..100"),
        (("c-1", "s-1", 101), {}, "invalid request: k=101 is outside 1..100"),
        (("c-1", "s-1", True), {}, "invalid request: k must be an integer"),
        (("c-1", ""), {}, "invalid request: session_id must be a non-empty string"),
        (("c-1", "s-1"), {"exclude": [""]}, "invalid request: exclude[0] must be a non-empty"),
        (("c-1", "s-1"), {"exclude": "item-1"}, "invalid request: exclude must be a list of item"),
        (("c-1", "s-1"), {"placement": "p" * 129}, "invalid request: placement is longer"),
    ],
)
def test_request_the_worker_would_dead_letter_is_refused(
    args: tuple[Any, ...], options: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidRequest) as err:
        encode_request(*args, **options)
    assert err.value.reason.startswith(reason) and str(err.value) == err.value.reason
    assert isinstance(err.value, ValueError) and isinstance(err.value, StreamRecoError)


def test_request_k_follows_the_workers_max_k() -> None:
    assert orjson.loads(encode_request("c-1", "s-1", 500, max_k=1000))["k"] == 500
    with pytest.raises(InvalidRequest):
        encode_request("c-1", "s-1", 500)


def test_request_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="invalid request"):
        encode_request("c-1", "s-1", exclude=[object()])  # type: ignore[list-item]


def test_valid_event_is_sent_as_given_keyed_by_its_session() -> None:
    doc = event(context={"page": "cart"})
    assert encode_event(doc) == ("s-1", orjson.dumps(doc))
    assert encode_event(MappingProxyType(doc)) == ("s-1", orjson.dumps(doc))


@pytest.mark.parametrize(
    "change",
    [
        {"event_id": ""},
        {"type": "like"},
        {"session_id": ...},
        {"ts": 1_000},
        {"ts": "in 2 hours"},  # past the default max_future_s
        {"quantity": 0},
        {"price": -1},
        {"context": {"x": "y" * 5000}},
    ],
)
def test_invalid_event_is_refused_with_the_workers_reason(change: dict[str, Any]) -> None:
    now = int(time.time() * 1000)
    if change.get("ts") == "in 2 hours":
        change = {"ts": now + 2 * 3600 * 1000}
    bad = event(**change)
    worker = decode_event(orjson.dumps(bad), now + 3600 * 1000)
    assert isinstance(worker, Rejected)
    with pytest.raises(InvalidEvent) as err:
        encode_event(bad)
    assert err.value.reason == worker.reason


def test_event_ts_limit_follows_max_future_s() -> None:
    later = event(ts=int(time.time() * 1000) + 2 * 3600 * 1000)
    assert encode_event(later, max_future_s=3 * 3600)[0] == "s-1"


def test_event_that_is_not_json_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="invalid event"):
        encode_event(event(price={1, 2}))


def test_timeout_is_a_timeout_error() -> None:
    assert issubclass(RecoTimeout, TimeoutError) and issubclass(RecoTimeout, StreamRecoError)


@pytest.mark.parametrize(
    "options", [{"client_id": "a-b"}, {"client_id": ""}, {"timeout": 0}, {"max_pending": 0}]
)
def test_bad_client_options_are_refused_before_connecting(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RecoClient("127.0.0.1:9092", **options)
