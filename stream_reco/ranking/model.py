"""The learned re-ranker: a river linear model over candidate features, stored as plain data."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from river import linear_model, optim

from stream_reco.ranking import blend

Features = Mapping[str, float]
EDGE_RATE = 0.01  # the edge averages roughly the last 100 examples
FORMAT = 1  # bump when the stored shape changes; an unknown format is refused, not guessed


class ModelFormatError(ValueError):
    """Stored model data that this version cannot read."""


@dataclass(frozen=True)
class Weights:
    """A published model: what query workers score with. Plain numbers, never pickle."""

    version: int
    examples: int
    weights: Mapping[str, float] = field(default_factory=dict)
    # How much more often these weights than the fixed blend put the item the shopper chose
    # above the ones they passed over, averaged over recent examples (judged before learning
    # each one). Workers only rank with a model whose edge is positive.
    edge: float = 0.0

    def score(self, x: Features) -> float:
        return blend.linear(x, self.weights)

    def contributions(self, x: Features, top: int = 3) -> list[tuple[str, float]]:
        """The features that added most to this score, for explanations."""
        parts = [(name, self.weights.get(name, 0.0) * v) for name, v in x.items() if v]
        parts.sort(key=lambda nv: (-nv[1], nv[0]))
        return [(name, round(v, 6)) for name, v in parts[:top] if v > 0]

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": self.version,
            "examples": self.examples,
            "edge": self.edge,
        }
        return orjson.dumps({**doc, "weights": dict(sorted(self.weights.items()))})

    @classmethod
    def from_json(cls, raw: bytes) -> Weights:
        try:
            doc = orjson.loads(raw)
            if doc.get("format") != FORMAT:
                raise ModelFormatError(f"model format {doc.get('format')!r}, expected {FORMAT}")
            weights = {str(k): float(v) for k, v in doc["weights"].items()}
            if not all(math.isfinite(v) for v in (*weights.values(), doc.get("edge", 0.0))):
                raise ModelFormatError("model weights must be finite numbers")
            edge = float(doc.get("edge", 0.0))
            return cls(int(doc["version"]), int(doc["examples"]), weights, edge)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, ModelFormatError):
                raise
            raise ModelFormatError(f"unreadable model: {exc}") from exc


def blend_weights() -> Weights:
    """Version 0: the fixed blend, so a new model starts from what already works."""
    return Weights(0, 0, dict(blend.DEFAULT))


class Learner:
    """Pairwise learning to rank with river: for each shown list, the item the shopper went to
    should score above each item they passed over. Learning x_pos - x_neg as a positive (and
    the reverse as a negative) makes a logistic regression rank, not classify.

    >>> learner = Learner(blend_weights(), lr=0.5)
    >>> learner.learn({"seq": 0.1, "pop": 1.0}, [{"seq": 0.9, "pop": 0.0}])
    >>> learner.snapshot().weights["pop"] > blend_weights().weights["pop"]
    True
    """

    def __init__(
        self, start: Weights, lr: float = 0.05, l2: float = 1e-5, blend: Weights | None = None
    ) -> None:
        self.model = linear_model.LogisticRegression(
            optimizer=optim.SGD(lr), l2=l2, intercept_lr=0.0
        )
        for name, w in start.weights.items():
            self.model._weights[name] = w  # warm start: river keeps weights as a plain dict
        self.version, self.examples, self.edge = start.version, start.examples, start.edge
        self.blend = blend or blend_weights()  # what the model must beat to take over

    def learn(self, positive: Features, negatives: Sequence[Features], weight: int = 1) -> None:
        """One feedback example; `weight` > 1 for stronger labels (a click on a shown item)."""
        current = Weights(0, 0, {k: float(v) for k, v in dict(self.model._weights).items()})
        gain = _ordered(current, positive, negatives) - _ordered(self.blend, positive, negatives)
        self.edge = (1 - EDGE_RATE) * self.edge + EDGE_RATE * gain
        for neg in negatives:
            diff = _diff(positive, neg)
            if not diff:
                continue  # identical features teach nothing
            for _ in range(weight):
                self.model.learn_one(diff, True)
                self.model.learn_one({k: -v for k, v in diff.items()}, False)
        self.examples += 1

    def snapshot(self) -> Weights:
        """The current weights as a new version, ready to publish."""
        self.version += 1
        weights = {k: float(v) for k, v in dict(self.model._weights).items()}
        return Weights(self.version, self.examples, weights, round(self.edge, 6))


def _ordered(w: Weights, positive: Features, negatives: Sequence[Features]) -> float:
    """Share of the passed-over items these weights rank below the chosen one."""
    if not negatives:
        return 0.0
    top = w.score(positive)
    return sum(top > w.score(n) for n in negatives) / len(negatives)


def _diff(a: Features, b: Features) -> dict[str, float]:
    names = set(a) | set(b)
    out = {n: a.get(n, 0.0) - b.get(n, 0.0) for n in names}
    return {n: v for n, v in out.items() if v}
