"""Responses: the picks a recommendation returns, how they are explained, the wire value."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_reco.candidates import Candidate
from stream_reco.events import CatalogItem
from stream_reco.openapi import DEFAULT_REQUEST_ID
from stream_reco.ranking import diversity, explain, model
from stream_reco.runtime import Runtime

VARIANT = "default"  # the variant of an answer no experiment runs on (its experiment: null)


@dataclass(frozen=True, slots=True)
class Pick:
    item_id: str
    score: float
    reason: str
    features: dict[str, float] = field(default_factory=dict)
    slot: str = "relevance"
    contributions: list[tuple[str, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Answer:
    """A ranked list and how it was made: which model, and how far it had to degrade."""

    picks: list[Pick]
    model_version: int = 0
    degraded: str | None = None  # None, "blend" (model skipped) or "popular" (sources skipped)
    # What the learner hears of: each pick and passed-over candidate with its features.
    shown: list[tuple[str, dict[str, float]]] = field(default_factory=list)
    # Every allowed candidate in the first ordering stage's order (a reference, no copy): what
    # the evaluator measures the candidate set's recall on. Never sent.
    ranked: Sequence[tuple[Candidate, float]] = ()
    # The session's latest event time, under an experiment: where its attribution window opens.
    clock_ms: int | None = None


def pick(
    cand: Candidate | None,
    slot: diversity.Slot,
    meta: dict[str, CatalogItem],
    scorer: model.Weights,
) -> Pick:
    if cand is None:  # promoted by the rules without being a candidate
        return Pick(slot.item_id, 0.0, "promoted", {}, "promoted")
    why = "promoted" if slot.slot == "promoted" else explain.reason(cand, meta)
    return Pick(
        slot.item_id,
        float(f"{slot.score:.6g}"),  # significant digits: tiny cold-start scores stay apart
        why,
        cand.features,
        slot.slot,
        scorer.contributions(cand.features),
    )


def fallback(live: Runtime, block: set[str], k: int, only: Sequence[str] | None) -> Answer:
    """The worker's cached popular list: in stock and not blocked, without touching Redis."""
    allowed = set(only) if only is not None else None
    picks = [
        Pick(i, 0.0, "popular", {}, "relevance")
        for i, info in live.fallback
        if i not in block and (info is None or info.in_stock) and (allowed is None or i in allowed)
    ][:k]
    return Answer(picks, 0, "popular")


def response(
    session_id: str,
    trigger: str,
    answer: Answer,
    started: float,
    request_id: str | None = None,
    recommendation_id: str | None = None,
    tested: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The `reco-responses` value (docs/contract.md); `tested`: the experiment and variant
    that served it, if any."""
    return {
        "request_id": request_id,
        "session_id": session_id,
        "trigger": trigger,
        "recommendation_id": recommendation_id or uuid.uuid4().hex,
        "items": [
            {
                "item_id": p.item_id,
                "score": p.score,
                "reason": p.reason,
                "slot": p.slot,
                "contributions": [{"feature": f, "value": v} for f, v in p.contributions],
            }
            for p in answer.picks
        ],
        "experiment": tested[0] if tested else None,
        "variant": tested[1] if tested else VARIANT,
        "model_version": answer.model_version,
        "degraded": answer.degraded,
        "ts": _now_ms(),
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


def recommendation_id(session_id: str, request_id: str | None, event_id: str | None) -> str:
    """An answer's id (32 hex): derived from what asked, so a redelivered request or trigger
    answered again carries the same id and its impression counts once; random only when
    nothing names the ask (HTTP without its own request_id sends a constant one)."""
    if request_id is not None and request_id not in DEFAULT_REQUEST_ID.values():
        ask = f"r{len(request_id)}:{request_id}:{session_id}"
    elif event_id is not None:
        ask = f"e{len(event_id)}:{event_id}:{session_id}"
    else:
        return uuid.uuid4().hex
    return hashlib.blake2b(ask.encode(), digest_size=16).hexdigest()
