"""HTTP on the Faust web server: the same answers as the request topic, re-ranking, the
OpenAPI document of both (openapi.py), Prometheus metrics and the live dashboard."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Collection, Mapping
from importlib import resources
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View
from multidict import MultiMapping

from stream_reco import events, metrics, openapi, pipeline
from stream_reco.config import Settings
from stream_reco.dashboard import data
from stream_reco.errors import ERRORS, StoreError, StreamRecoError
from stream_reco.events import BRACES, CONTROL, MAX_ID_LEN, Rejected, decode_request
from stream_reco.health import PATHS as HEALTH_PATHS
from stream_reco.openapi import DEFAULT_REQUEST_ID, MAX_RANK_ITEMS, QUERY_PARAMS, RANK_FIELDS
from stream_reco.runtime import Runtime
from stream_reco.storage.protocol import Store

# Faust's built-in /router and /table views serve table routing and table contents: a worker
# has no Faust tables, so they would only expose the cluster's layout. Faust's index `/` stays
# (a liveness check); it cannot be switched off.
FAUST_BUILTINS_OFF = {"web_router_enabled": False, "web_tables_enabled": False}
# int() alone would also take " 5", "+5" and "5_0"; nine digits keep it far from its size limit.
INTEGER = re.compile(r"-?[0-9]{1,9}")
EXPLORE_PARAMS = {"session_id": "the session to show"}
# For operators and their tools, on every worker; not part of the answers' API (openapi.py).
OBSERVABILITY = ("/metrics", "/dashboard", "/dashboard/data", "/dashboard/session", *HEALTH_PATHS)


class BadInput(StreamRecoError):
    """HTTP input refused with a 400; the message says what is allowed."""


def add_views(
    app: faust.App, settings: Settings, live: Runtime, store: Callable[[], Store]
) -> None:
    """GET /recommendations, POST /rank and GET /openapi.json; bad input is a 400 whose
    `error` says why, never a 500 nor silently ignored."""
    spec = openapi.document(settings)

    @app.page("/recommendations")
    class Recommendations(View):
        async def get(self, request: Request) -> Response:
            if (refused := _refused(self, request, settings)) is not None:
                return refused
            try:
                req = request_from_query(request.query, settings)  # type: ignore[arg-type]
            except BadInput as exc:
                return self.error(400, str(exc))
            answer = await pipeline.handle_request(store(), settings, req, live)
            _count(answer)
            return self.json(answer)

    @app.page("/rank")
    class Rank(View):
        async def post(self, request: Request) -> Response:
            if (refused := _refused(self, request, settings)) is not None:
                return refused
            try:
                _no_query(request.query, "POST /rank takes its parameters in the JSON body")
                req, items = rank_request(await request.read(), settings)
            except BadInput as exc:
                return self.error(400, str(exc))
            answer = await pipeline.answer_session(
                store(),
                settings,
                live,
                req.session_id,
                req.k,
                request_id=req.request_id,
                exclude=req.exclude,
                placement=req.placement,
                only=items,
                item_id=req.item_id,
                user_id=req.user_id,
            )
            _count(answer)
            return self.json(answer)

    @app.page("/openapi.json")
    class OpenAPI(View):
        async def get(self, request: Request) -> Response:
            try:
                _no_query(request.query, "GET /openapi.json takes no query parameters")
            except BadInput as exc:
                return self.error(400, str(exc))
            return self.json(spec)


def add_observability(
    app: faust.App, settings: Settings, obs: metrics.Observer, store: Callable[[], Store]
) -> None:
    """On every worker, whatever its role: GET /metrics (Prometheus' text format) and the live
    dashboard: its page, /dashboard/data (polled by the page) and /dashboard/session (the
    explorer: a session's state and last answers). With a bearer token set, both data views
    need it: the data shows revenue per variant, the explorer a session's activity. /metrics
    and the page itself (no data: it sends the token it is given) stay open, for scrapers."""
    board = data.Board(obs)
    page = resources.files("stream_reco.dashboard").joinpath("index.html").read_text("utf-8")

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(await obs.scrape(), content_type=metrics.CONTENT_TYPE)

    @app.page("/dashboard")
    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            return self.html(page)

    @app.page("/dashboard/data")
    class Data(View):
        async def get(self, request: Request) -> Response:
            if (refused := _refused(self, request, settings)) is not None:
                return refused
            try:
                _no_query(request.query, "GET /dashboard/data takes no query parameters")
            except BadInput as exc:
                return self.error(400, str(exc))
            return self.json(await board.snapshot())

    @app.page("/dashboard/session")
    class Explore(View):
        async def get(self, request: Request) -> Response:
            if (refused := _refused(self, request, settings)) is not None:
                return refused
            try:
                session_id = session_from_query(request.query, settings)  # type: ignore[arg-type]
            except BadInput as exc:
                return self.error(400, str(exc))
            try:
                return self.json(await data.session(store(), session_id))
            except (TimeoutError, StoreError):
                return self.error(503, "the store did not answer in time; try again")


def _count(answer: Mapping[str, Any]) -> None:
    """An HTTP answer into the metrics: a counting bug must never turn an answer into a 500
    (as metrics.WatchedSink does for the topics)."""
    try:
        metrics.answered(answer, "http")
    except Exception as exc:
        ERRORS["metrics"] += 1
        metrics.COUNTING.failed("counting an HTTP answer", exc, trace=True)


def session_from_query(query: MultiMapping[str], settings: Settings) -> str:
    """The explorer's `session_id`, valid as a request's session id is (the same decoder)."""
    _known(query, EXPLORE_PARAMS, "GET /dashboard/session", "query parameter")
    given = query.getall("session_id", [])
    if len(given) != 1:
        raise BadInput(f"give session_id once (given {len(given)} times), e.g. ?session_id=s-1")
    doc = {"request_id": "dashboard", "session_id": given[0]}
    return _decode(doc, settings).session_id


def _refused(view: View, request: Request, settings: Settings) -> Response | None:
    """With STREAM_RECO_HTTP_TOKEN set, a 401 for a request without `Authorization: Bearer
    <token>`: anyone who can reach the port could otherwise ask for any session's answers."""
    if not settings.http_token:
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # Header bytes arrive surrogate-escaped: any of them compares, none raises.
    token = given.strip().encode("utf-8", "surrogateescape")
    expected = settings.http_token.encode("utf-8", "surrogateescape")
    if scheme.lower() == "bearer" and hmac.compare_digest(token, expected):
        return None
    why = "missing or wrong bearer token (Authorization: Bearer <STREAM_RECO_HTTP_TOKEN>)"
    return view.json(
        {"error": why}, status=401, headers={"WWW-Authenticate": 'Bearer realm="stream-reco"'}
    )


def request_from_query(query: MultiMapping[str], settings: Settings) -> events.Request:
    """GET /recommendations' query as the reco-requests document it stands for, decoded by the
    topic's own decoder: HTTP and Kafka accept exactly the same values."""
    _known(query, QUERY_PARAMS, "GET /recommendations", "query parameter")
    doc: dict[str, Any] = {"request_id": DEFAULT_REQUEST_ID["/recommendations"]}
    for name in QUERY_PARAMS:
        values = query.getall(name, [])
        if name == "exclude":
            if values:
                doc[name] = [i for v in values for i in v.split(",")]
        elif len(values) > 1:
            raise BadInput(f"{name} is given {len(values)} times; give it once")
        elif values and name == "k":
            doc[name] = _integer(name, values[0], settings.max_k)
        elif values:
            doc[name] = values[0]
    return _decode(doc, settings)


def rank_request(raw: bytes, settings: Settings) -> tuple[events.Request, list[str]]:
    """POST /rank's body: the request its fields stand for, and the items to order."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadInput('the body must be a JSON object, e.g. {"session_id": "s-1", "items": [...]}')
    _known(body, RANK_FIELDS, "POST /rank", "body field")
    items = _item_ids(body.get("items"))
    # null is "absent", as on the topic; `items` is not part of a reco-requests document.
    doc = {n: v for n, v in body.items() if n != "items" and v is not None}
    doc.setdefault("request_id", DEFAULT_REQUEST_ID["/rank"])
    doc.setdefault("k", min(len(items), settings.max_k))
    req = _decode(doc, settings)
    if req.k > len(items):
        raise BadInput(f"k={req.k} is more than the {len(items)} items given to rank")
    return req, items


def _decode(doc: dict[str, Any], settings: Settings) -> events.Request:
    req = decode_request(
        orjson.dumps(doc), settings.default_k, settings.max_k, settings.user_id_key
    )
    if isinstance(req, Rejected):
        raise BadInput(req.reason)
    return req


def _known(given: Collection[str], valid: Mapping[str, str], where: str, what: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise BadInput(
            f"unknown {what}{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}: "
            f"{where} takes {', '.join(valid)}"
        )


def _no_query(query: Collection[str], why: str) -> None:
    if query:
        raise BadInput(f"unknown query parameters {', '.join(sorted(set(query)))}: {why}")


def _integer(name: str, value: str, hi: int) -> int:
    if not INTEGER.fullmatch(value):
        raise BadInput(f"{name} must be an integer 1..{hi}, got {value!r}")
    return int(value)


def _item_ids(value: Any) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_RANK_ITEMS:
        raise BadInput(f"items must be a list of 1..{MAX_RANK_ITEMS} item ids")
    for n, x in enumerate(value):
        bad = not isinstance(x, str) or not 1 <= len(x) <= MAX_ID_LEN
        if bad or CONTROL.search(x) or BRACES.search(x):
            raise BadInput(
                f"items[{n}] must be an item id: a string of 1..{MAX_ID_LEN} characters "
                "without control characters or braces"
            )
    return list(dict.fromkeys(value))  # a repeated id is one item: k counts distinct ones
