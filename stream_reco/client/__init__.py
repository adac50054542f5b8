"""The Python client for services and storefronts: send events, ask for recommendations."""

from __future__ import annotations

from stream_reco.client.core import RecoClient
from stream_reco.client.responses import RecoTimeout, ResponseFuture
from stream_reco.client.wire import InvalidEvent, InvalidRequest, encode_event, encode_request

__all__ = [
    "InvalidEvent",
    "InvalidRequest",
    "RecoClient",
    "RecoTimeout",
    "ResponseFuture",
    "encode_event",
    "encode_request",
]
