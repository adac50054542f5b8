"""HTTP on the Faust web server: the same answers as the request topic, plus re-ranking."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust
import orjson
from faust.web import Request, Response, View

from stream_reco import pipeline
from stream_reco.config import Settings
from stream_reco.events import Rejected, decode_request
from stream_reco.runtime import Runtime
from stream_reco.storage.redis_store import RedisStore

MAX_RANK_ITEMS = 1000


def add_views(
    app: faust.App, settings: Settings, live: Runtime, store: Callable[[], RedisStore]
) -> None:
    """GET /recommendations and POST /rank; bad input is a 400 with the reason, never a 500."""

    @app.page("/recommendations")
    class Recommendations(View):
        async def get(self, request: Request) -> Response:
            q = request.query
            doc: dict[str, Any] = {"request_id": q.get("request_id") or "http"}
            doc["session_id"] = q.get("session_id")
            if q.get("k") is not None:
                try:
                    doc["k"] = int(q["k"])
                except ValueError:
                    return self.json({"error": "k must be an integer"}, status=400)
            if q.get("placement"):
                doc["placement"] = q["placement"]
            req = decode_request(orjson.dumps(doc), settings.default_k, settings.max_k)
            if isinstance(req, Rejected):
                return self.json({"error": req.reason}, status=400)
            answer = await pipeline.handle_request(store(), settings, req, live)
            return self.json(answer)

    @app.page("/rank")
    class Rank(View):
        async def post(self, request: Request) -> Response:
            try:
                body = orjson.loads(await request.read())
            except orjson.JSONDecodeError as exc:
                return self.json({"error": f"body is not JSON: {exc}"}, status=400)
            items = body.get("items") if isinstance(body, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                return self.json({"error": "items must be a list of item ids"}, status=400)
            if len(items) > MAX_RANK_ITEMS:
                return self.json({"error": f"at most {MAX_RANK_ITEMS} items"}, status=400)
            doc = {k: body.get(k) for k in ("request_id", "session_id", "placement") if k in body}
            doc.setdefault("request_id", "rank")
            doc["k"] = min(len(items), settings.max_k) or 1
            req = decode_request(orjson.dumps(doc), settings.default_k, settings.max_k)
            if isinstance(req, Rejected):
                return self.json({"error": req.reason}, status=400)
            answer = await pipeline.answer_session(
                store(),
                settings,
                live,
                req.session_id,
                req.k,
                request_id=req.request_id,
                placement=req.placement,
                only=items,
            )
            return self.json(answer)
