"""The Python client for services and storefronts: catalogue, rules, events, recommendations."""

from __future__ import annotations

from stream_reco.client.core import RecoClient
from stream_reco.client.responses import RecoTimeout, ResponseFuture
from stream_reco.client.wire import (
    InvalidEvent,
    InvalidItem,
    InvalidRequest,
    InvalidRules,
    encode_event,
    encode_item,
    encode_request,
    encode_rules,
)

__all__ = [
    "InvalidEvent",
    "InvalidItem",
    "InvalidRequest",
    "InvalidRules",
    "RecoClient",
    "RecoTimeout",
    "ResponseFuture",
    "encode_event",
    "encode_item",
    "encode_request",
    "encode_rules",
]
