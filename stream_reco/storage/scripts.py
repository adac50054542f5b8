"""The event scripts' Lua, assembled from shared parts so one function serves both the single
node's one-call apply and a cluster's per-slot steps."""

from __future__ import annotations

from functools import cache
from importlib import resources

# Every event script reads its static config first; the parts' functions close over it.
_HEAD = "local cfg = cjson.decode(ARGV[1])\n"
_PARTS = ("common.lua", "bots.lua", "session.lua", "items.lua")


def _text(name: str) -> str:
    return resources.files("stream_reco.storage").joinpath(name).read_text()


@cache
def event_script(body: str) -> str:
    """The script `body` (a file beside this one) with the shared parts before it."""
    return _HEAD + "".join(_text(p) for p in _PARTS) + _text(body)
