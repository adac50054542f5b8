"""The wire contract as JSON Schemas (draft 2020-12): one per message kind, shipped as data."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from stream_reco.errors import StreamRecoError

# Schema name -> the topic whose message values it describes (docs/contract.md).
TOPICS = {
    "event": "reco-events",
    "catalog": "reco-catalog",
    "request": "reco-requests",
    "response": "reco-responses",
    "config": "reco-config",
    "deadletter": "reco-deadletter",
}
NAMES = tuple(TOPICS)


class UnknownSchema(StreamRecoError, LookupError):
    """No schema has that name."""


def text(name: str) -> str:
    """The schema file `<name>.json` as shipped, e.g. to hand to another language's validator."""
    if name not in TOPICS:
        raise UnknownSchema(f"no schema {name!r}; the schemas are: {', '.join(NAMES)}")
    return resources.files(__package__).joinpath(f"{name}.json").read_text(encoding="utf-8")


def load(name: str) -> dict[str, Any]:
    """The schema as a new dict, so a caller may change its copy."""
    return json.loads(text(name))
