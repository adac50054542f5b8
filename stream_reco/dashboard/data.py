"""The live dashboard's JSON: rates from the worker's counters, latency percentiles, dead
letters, experiments, trending items, the ranker, and one session explored."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from stream_reco import metrics
from stream_reco.dashboard import recent
from stream_reco.errors import ERRORS, StoreError
from stream_reco.storage.protocol import Store

RATE_WINDOW_S = 5.0  # events/s over about this long: live, yet not jumping with each batch
TRENDING = 10
TRENDING_EVERY_S = 2.0  # several open pages must not each read Redis at every poll
STORE_WAIT_S = 1.0
Z95 = 1.959964


class Rates:
    """Per-second rates of a few totals from samples taken whenever the page polls."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, dict[str, float]]] = deque(maxlen=64)

    def update(self, totals: dict[str, float], now: float | None = None) -> dict[str, float]:
        now = time.monotonic() if now is None else now
        while len(self._samples) > 1 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()  # keep one sample at least the window old
        if not self._samples or now - self._samples[-1][0] >= 0.2:
            self._samples.append((now, totals))
        then, old = self._samples[0]
        span = now - then
        return {k: (v - old.get(k, 0.0)) / span if span > 0 else 0.0 for k, v in totals.items()}


class Board:
    """What /dashboard/data serves, for one worker."""

    def __init__(self, obs: metrics.Observer) -> None:
        self.obs = obs
        self.rates = Rates()
        self._trending: list[dict[str, Any]] = []
        self._trending_at = -math.inf

    async def snapshot(self) -> dict[str, Any]:
        events = _by_labels(metrics.EVENTS, ("type", "outcome"))
        dead = _by_labels(metrics.DEAD_LETTERS, ("topic", "reason"))
        applied = sum(n for (_, outcome), n in events.items() if outcome == "applied")
        totals = {"events": sum(events.values()), "applied": applied, "dead": sum(dead.values())}
        rates = self.rates.update(totals)
        model = self.obs.live.model
        experiments, trending = await asyncio.gather(self.obs.read_experiments(), self.trending())
        return {
            "ts": int(time.time() * 1000),
            "events": {
                "total": totals["events"],
                "per_s": round(rates["events"], 2),
                "applied_per_s": round(rates["applied"], 2),
                "by_type": _nested(events),
            },
            "latency": {"request": recent.percentiles("request"), "push": _push_percentiles()},
            "dead_letters": {
                "total": totals["dead"],
                "per_s": round(rates["dead"], 2),
                "top": [
                    {"topic": t, "reason": r, "count": n}
                    for (t, r), n in sorted(dead.items(), key=lambda x: -x[1])[:10]
                ],
            },
            "degraded": {lvl: n for (lvl,), n in _by_labels(metrics.DEGRADED, ("level",)).items()},
            "ranker": {
                "in_use": self.obs.ranker(),
                "model_version": model.version,
                "model_examples": model.examples,
            },
            "lag": {f"{lp.name} {lp.topic}": sum(lp.lag.values()) for lp in self.obs.loops},
            "experiments": [variant_row(r) for r in experiments],
            "trending": trending,
        }

    async def trending(self) -> list[dict[str, Any]]:
        """The most popular items now (decayed popularity), with titles; cached briefly."""
        if time.monotonic() - self._trending_at < TRENDING_EVERY_S:
            return self._trending
        self._trending_at = time.monotonic()
        store = self.obs.store()
        try:
            async with asyncio.timeout(STORE_WAIT_S):
                top = await store.read_popular(TRENDING)
                meta = await store.read_items([i for i, _ in top])
        except (TimeoutError, StoreError):
            ERRORS["dashboard_read"] += 1
            return self._trending  # the last list read: the page stays up in an outage
        self._trending = [
            {
                "item_id": i,
                "score": round(score, 3),
                "title": meta[i].title if i in meta else "",
                "category": meta[i].category if i in meta else "",
            }
            for i, score in top
        ]
        return self._trending


async def session(store: Store, session_id: str) -> dict[str, Any]:
    """One session as the store keeps it, with the last answers this worker gave it."""
    async with asyncio.timeout(STORE_WAIT_S):
        view = await store.read_session(session_id)
    answers = [
        {
            "recommendation_id": a.get("recommendation_id"),
            "trigger": a.get("trigger"),
            "ts": a.get("ts"),
            "variant": a.get("variant"),
            "model_version": a.get("model_version"),
            "degraded": a.get("degraded"),
            "items": [
                {k: i.get(k) for k in ("item_id", "score", "reason", "slot")}
                for i in a.get("items") or ()
            ],
        }
        for a in recent.LAST.of(session_id)
    ]
    return {
        "found": view.events > 0 or bool(answers),
        "session": view.to_json(),
        "answers": answers,
    }


def variant_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An experiments summary row (experiments.report.summary) for the page: each rate as its
    value and 95 % interval, computed here from the counts when the row has none."""
    out: dict[str, Any] = {k: v for k, v in row.items() if not isinstance(v, Mapping)}
    for name, interval in (("ctr", "ctr_interval"), ("revenue_per_session", "revenue_interval")):
        given = row.get(name)
        if isinstance(given, Mapping):  # {value, low, high[, lift, p_value, needed]}
            out[name], out[interval] = given.get("value"), [given.get("low"), given.get("high")]
            out[f"{name}_p_value"] = given.get("p_value")
    shown, clicks = row.get("impressions"), row.get("clicks")
    if "ctr" not in out and _positive(shown) and isinstance(clicks, int | float):
        out["ctr"] = clicks / shown
        out["ctr_interval"] = list(wilson(int(min(clicks, shown)), int(shown)))
    sessions, revenue = row.get("sessions"), row.get("revenue")
    if (
        "revenue_per_session" not in out
        and _positive(sessions)
        and isinstance(revenue, int | float)
    ):
        out["revenue_per_session"] = revenue / sessions
    return out


def _positive(x: object) -> bool:
    return isinstance(x, int | float) and x > 0


def wilson(hits: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: sound at small counts, unlike p ± z·se."""
    if n <= 0:
        return (0.0, 1.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _push_percentiles() -> dict[str, Any]:
    return recent.percentiles("add_to_cart")


def _by_labels(metric: Any, labels: Sequence[str]) -> dict[tuple[str, ...], float]:
    """A labelled counter's totals by label values, read from the metric itself."""
    out: dict[tuple[str, ...], float] = {}
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith("_total"):
                out[tuple(s.labels[k] for k in labels)] = s.value
    return out


def _nested(counts: Mapping[tuple[str, ...], float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (outer, inner), n in counts.items():
        out.setdefault(outer, {})[inner] = n
    return out
