"""The HTTP API's surface: its parameters, limits and OpenAPI 3.1 document (served by web.py)."""

from __future__ import annotations

from typing import Any

from stream_reco import __version__
from stream_reco.config import Settings
from stream_reco.events import MAX_EXCLUDE, MAX_ID_LEN
from stream_reco.ranking.diversity import SLOTS

MAX_RANK_ITEMS = 1000
# The request_id an answer carries when the caller gave none (HTTP needs none to match it).
DEFAULT_REQUEST_ID = {"/recommendations": "http", "/rank": "rank"}
# An id as the decoders accept it: 1..128 characters, none of them a control character.
ID_PATTERN = r"^[^\u0000-\u001f\u007f]*$"
KEY_ID_PATTERN = (
    r"^[^\u0000-\u001f\u007f{}]*$"  # session and item ids: Redis keys wrap them in braces
)
# Each name is a field of the reco-requests document (docs/contract.md), except `items`.
QUERY_PARAMS: dict[str, str] = {
    "session_id": "the shopper's session",
    "k": "how many items at most",
    "placement": "where the answer is shown (e.g. `product_page`); selects that placement's "
    "rules (docs/rules.md)",
    "exclude": "items never to return; repeat the parameter and/or separate ids with commas "
    "(`exclude=a&exclude=b,c`), so an id containing a comma cannot be excluded here",
    "item_id": "the item of the page the answer is shown on (a product page's item): not "
    "recommended unless the placement's rules set `exclude_item_in_view: false`",
    "request_id": "echoed in the answer; default `http`",
    "user_id": "the signed-in shopper; validated, not used for ranking yet",
}
RANK_FIELDS: dict[str, str] = {
    "items": "the item ids to order; duplicates count once",
    "session_id": "the shopper's session whose state orders them",
    "k": "how many items at most: 1..the number of `items` (and `STREAM_RECO_MAX_K`); "
    "default all of them (up to `STREAM_RECO_MAX_K`)",
    "exclude": "items never to return, even when listed in `items`",
    "placement": "where the answer is shown; selects that placement's rules (docs/rules.md)",
    "item_id": "the item of the page the answer is shown on: not returned unless the "
    "placement's rules set `exclude_item_in_view: false`",
    "request_id": "echoed in the answer; default `rank`",
    "user_id": "the signed-in shopper; validated, not used for ranking yet",
}
REQUIRED = {"session_id"}  # of the query; the /rank body also requires `items`
ERROR: dict[str, Any] = {
    "type": "object",
    "description": "Why the request was refused.",
    "required": ["error"],
    "properties": {"error": {"type": "string", "minLength": 1}},
    "additionalProperties": False,
}


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a worker with these settings (its `k` limits)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "stream-reco HTTP API",
            "version": __version__,
            "description": "Recommendations for a shopper's session, answered by a worker in "
            "process: the same answers as the reco-requests topic (docs/contract.md). Bad "
            "input, including an unknown parameter, is a 400 whose `error` says why.",
        },
        "paths": {
            "/recommendations": {"get": _guarded(_recommendations(settings), settings)},
            "/rank": {"post": _guarded(_rank(settings), settings)},
            "/openapi.json": {"get": _self()},
            "/": {"get": _index()},
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "STREAM_RECO_HTTP_TOKEN; required when the worker sets it",
                }
            },
            "schemas": {
                "Recommendation": recommendation_schema(settings),
                "RankRequest": _rank_body(settings),
                "Error": ERROR,
            },
        },
    }


def id_schema(description: str = "", *, key: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN}
    out["pattern"] = KEY_ID_PATTERN if key else ID_PATTERN
    return {**out, "description": description} if description else out


def recommendation_schema(settings: Settings) -> dict[str, Any]:
    """A `reco-responses` value, field for field as docs/contract.md's table has it."""
    item = {
        "type": "object",
        "required": ["item_id", "score", "reason", "slot", "contributions"],
        "properties": {
            "item_id": {"type": "string"},
            "score": {"type": "number", "description": "comparable within one answer only"},
            "reason": {"type": "string"},
            "slot": {"enum": list(SLOTS)},
            "contributions": {
                "type": "array",
                "maxItems": 3,
                "items": {
                    "type": "object",
                    "required": ["feature", "value"],
                    "properties": {"feature": {"type": "string"}, "value": {"type": "number"}},
                },
            },
        },
    }
    fields: dict[str, Any] = {
        "request_id": {"type": ["string", "null"], "description": "null for a push"},
        "session_id": {"type": "string"},
        "trigger": {"enum": ["request", "add_to_cart"]},
        "recommendation_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LEN},
        "items": {"type": "array", "maxItems": settings.max_k, "items": item},
        "experiment": {
            "type": ["string", "null"],
            "description": "the A/B experiment this answer was served under; null when none runs "
            "on its placement (docs/experiments.md)",
        },
        "variant": {
            "type": "string",
            "description": "the experiment's variant that served it (`holdout` for the holdout); "
            "`default` when no experiment runs",
        },
        "model_version": {"type": "integer", "minimum": 0},
        "degraded": {"enum": [None, "blend", "popular"]},
        "ts": {"type": "integer", "description": "epoch milliseconds"},
        "latency_ms": {"type": "number", "minimum": 0},
    }
    return {
        "type": "object",
        "description": "The reco-responses value (docs/contract.md); later versions may add "
        "fields.",
        "required": list(fields),
        "properties": {**fields, "event_id": {"type": "string", "description": "pushes only"}},
    }


def _query_schema(name: str, settings: Settings) -> dict[str, Any]:
    if name == "k":
        return {
            "type": "integer",
            "minimum": 1,
            "maximum": settings.max_k,
            "default": settings.default_k,
        }
    if name == "exclude":
        return {"type": "array", "maxItems": MAX_EXCLUDE, "items": id_schema()}
    if name == "request_id":
        return {**id_schema(), "default": DEFAULT_REQUEST_ID["/recommendations"]}
    return id_schema(key=name in ("session_id", "item_id"))


def _recommendations(settings: Settings) -> dict[str, Any]:
    params = [
        {
            "name": name,
            "in": "query",
            "required": name in REQUIRED,
            "description": text,
            "schema": _query_schema(name, settings),
            **({"style": "form", "explode": True} if name == "exclude" else {}),
        }
        for name, text in QUERY_PARAMS.items()
    ]
    return {
        "operationId": "recommendations",
        "summary": "Top-k items for a session, each with its reason",
        "description": "A URL over 8,190 bytes is refused by the web server itself, with a "
        "plain-text 400.",
        "parameters": params,
        "responses": {"200": _answer(), "400": _refused()},
    }


def _rank_body(settings: Settings) -> dict[str, Any]:
    ids = {"type": "array", "items": id_schema()}
    props: dict[str, Any] = {
        "items": {
            "type": "array",
            "items": id_schema(key=True),
            "minItems": 1,
            "maxItems": MAX_RANK_ITEMS,
        },
        "session_id": id_schema(key=True),
        "k": {"type": ["integer", "null"], "minimum": 1, "maximum": settings.max_k},
        "exclude": {**ids, "type": ["array", "null"], "maxItems": MAX_EXCLUDE},
    }
    for name in ("placement", "item_id", "user_id", "request_id"):
        props[name] = {**id_schema(key=name == "item_id"), "type": ["string", "null"]}
    props["request_id"]["default"] = DEFAULT_REQUEST_ID["/rank"]
    return {
        "type": "object",
        "description": "null counts as absent for every field but `items` and `session_id`.",
        "required": ["items", "session_id"],
        "properties": {n: {**props[n], "description": text} for n, text in RANK_FIELDS.items()},
        "additionalProperties": False,
    }


def _rank(settings: Settings) -> dict[str, Any]:
    return {
        "operationId": "rank",
        "summary": "Order the caller's items for a session",
        "description": "Only the given items can come back, under the same exclusions and rules "
        "as any answer (never cart, bought, out-of-stock or unknown items, nor a category or "
        "brand the placement excludes). A list page has no item in view: only an explicit "
        "`item_id` is left out, never the session's latest item. Takes no query parameters.",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/RankRequest"}}
            },
        },
        "responses": {
            "200": _answer(),
            "400": _refused(),
            "413": {
                "description": "A body over 1 MiB, refused by the web server itself",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
        },
    }


def _self() -> dict[str, Any]:
    return {
        "operationId": "openapi",
        "summary": "This document; takes no query parameters",
        "responses": {
            "200": _json(
                "The OpenAPI 3.1 document", {"type": "object", "required": ["openapi", "paths"]}
            ),
            "400": _refused(),
        },
    }


def _index() -> dict[str, Any]:
    status = {"type": "object", "required": ["status"], "properties": {"status": {"const": "OK"}}}
    return {
        "operationId": "index",
        "summary": "Liveness: the worker's web server answers (Faust's index; says nothing of "
        "Kafka or Redis, ignores query parameters)",
        "responses": {"200": _json("The web server is up", status)},
    }


def _guarded(operation: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """An operation under the bearer token when this worker has one (the answers name what a
    session viewed and bought: not for anyone who can reach the port)."""
    if not settings.http_token:
        return operation
    refused = _json("Missing or wrong bearer token", {"$ref": "#/components/schemas/Error"})
    responses = {**operation["responses"], "401": refused}
    return {**operation, "security": [{"bearer": []}], "responses": responses}


def _answer() -> dict[str, Any]:
    return _json("The answer", {"$ref": "#/components/schemas/Recommendation"})


def _refused() -> dict[str, Any]:
    return _json(
        "Bad input: an unknown parameter or field, a missing one, or a value out of range",
        {"$ref": "#/components/schemas/Error"},
    )


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}
