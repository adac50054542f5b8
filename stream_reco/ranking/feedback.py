"""Feedback: what a session was shown, and the training examples its next event makes of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from stream_reco.ranking.model import Features

CLICK_WEIGHT = 3  # an event naming the recommendation it came from is a surer label


@dataclass(frozen=True, slots=True)
class Example:
    positive: Features
    negatives: list[Features]
    weight: int = 1

    def to_json(self) -> bytes:
        return orjson.dumps({"p": self.positive, "n": self.negatives, "w": self.weight})

    @classmethod
    def from_json(cls, raw: bytes) -> Example | None:
        """None for anything malformed: an example is worth less than a crash."""
        try:
            doc = orjson.loads(raw)
            pos = {str(k): float(v) for k, v in doc["p"].items()}
            negs = [{str(k): float(v) for k, v in n.items()} for n in doc["n"]]
            return cls(pos, negs, max(1, min(int(doc["w"]), CLICK_WEIGHT)))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return None


def shown(recommendation_id: str, items: Sequence[tuple[str, Mapping[str, float]]]) -> bytes:
    """The shown list as stored with the session until its next event. Features are stored
    as they are: rounding them in Python cost more per answer than the bytes it saved."""
    return orjson.dumps({"id": recommendation_id, "items": [[i, f] for i, f in items]})


def example(raw_shown: bytes, item_id: str, recommendation_id: str | None) -> Example | None:
    """The next event's item against what was shown: the item the shopper went to is the
    positive, the rest negatives. None when the item was not among them (nothing to learn)."""
    try:
        doc = orjson.loads(raw_shown)
        items = {str(i): f for i, f in doc["items"]}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if item_id not in items:
        return None
    negatives = [f for i, f in items.items() if i != item_id]
    if not negatives:
        return None
    clicked = recommendation_id is not None and recommendation_id == doc.get("id")
    return Example(items[item_id], negatives, CLICK_WEIGHT if clicked else 1)
