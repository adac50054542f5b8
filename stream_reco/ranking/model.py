"""The learned re-ranker: linear weights learned listwise with a river optimiser, as plain data."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import orjson
from river import optim

from stream_reco.ranking import blend

Features = Mapping[str, float]
EDGE_RATE = 0.002  # the edge averages roughly the last 500 examples
EDGE_AT = 20  # ranks the edge counts: what the evaluation counts
SCALE = 10.0  # a fresh model's weights: the blend's, this many times larger
# 2: listwise weights (a fresh model starts at SCALE x the blend); bump when the stored shape
# or meaning changes: an unknown format is refused, not guessed, and learning starts over.
FORMAT = 2


class ModelFormatError(ValueError):
    """Stored model data that this version cannot read."""


@dataclass(frozen=True)
class Weights:
    """A published model: what query workers score with. Plain numbers, never pickle."""

    version: int
    examples: int
    weights: Mapping[str, float] = field(default_factory=dict)
    # How much higher these weights than the fixed blend put the item the shopper chose
    # (reciprocal rank in the first 20, as MRR@20 counts it), averaged over recent examples,
    # each judged before it was learned. Workers only rank with a model whose edge is positive.
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


def stored_version(raw: bytes) -> int:
    """The version a stored model document claims, even one this code cannot read (0 if none):
    a learner starting over continues the numbering, so no two models share a version."""
    try:
        doc = orjson.loads(raw)
        return max(int(doc["version"]), 0) if isinstance(doc, dict) else 0
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return 0


def blend_weights() -> Weights:
    """Version 0: the fixed blend, so a new model starts from what already works."""
    return Weights(0, 0, dict(blend.DEFAULT))


class Learner:
    """Listwise learning to rank: each example is a list of candidates of which the shopper
    went to one, and the loss is the softmax cross-entropy of that one (the rank of the true
    next item is what the evaluation measures; softmax weighs the candidates above it most).
    river's optimizer steps the weights, which stay a plain dict of numbers.

    >>> learner = Learner(blend_weights(), lr=0.5)
    >>> learner.learn({"seq": 0.1, "pop": 1.0}, [{"seq": 0.9, "pop": 0.0}])
    >>> learner.snapshot().weights["pop"] > SCALE * blend_weights().weights["pop"]
    True
    """

    def __init__(self, start: Weights, lr: float = 0.05, blend: Weights | None = None) -> None:
        self.optimizer = optim.SGD(lr)
        # A fresh start scales the blend up: same order, but scores far enough apart for a
        # softmax to tell the best candidate from the rest. A published model is already so.
        scale = 1.0 if start.version > 0 else SCALE
        self.weights = {name: w * scale for name, w in start.weights.items()}
        self.version, self.examples, self.edge = start.version, start.examples, start.edge
        self.blend = blend or blend_weights()  # what the model must beat to take over

    def learn(self, positive: Features, negatives: Sequence[Features], weight: int = 1) -> None:
        """One example; `weight` > 1 for stronger labels (a click on a shown item). It is
        judged before it is learned, so the edge is measured on examples not yet seen."""
        current = Weights(0, 0, self.weights)
        gain = _reciprocal(current, positive, negatives, False) - _reciprocal(
            self.blend, positive, negatives, True
        )
        self.edge = (1 - EDGE_RATE) * self.edge + EDGE_RATE * gain
        self.examples += 1
        if not negatives:
            return
        listed = [positive, *negatives]
        scores = [current.score(x) for x in listed]
        top = max(scores)
        exps = [math.exp(s - top) for s in scores]
        total = sum(exps)
        grad: dict[str, float] = {}
        for e, x in zip(exps, listed, strict=True):
            share = weight * e / total
            for name, v in x.items():
                grad[name] = grad.get(name, 0.0) + share * v
        for name, v in positive.items():
            grad[name] = grad.get(name, 0.0) - weight * v
        for name in grad:
            self.weights.setdefault(name, 0.0)
        self.optimizer.step(self.weights, grad)

    def snapshot(self) -> Weights:
        """The current weights as a new version, ready to publish."""
        self.version += 1
        weights = {k: float(v) for k, v in self.weights.items() if v}
        return Weights(self.version, self.examples, weights, round(self.edge, 6))


def _reciprocal(
    w: Weights, positive: Features, negatives: Sequence[Features], session_first: bool
) -> float:
    """1/rank of the chosen item among the listed ones under these weights, 0 below the
    first EDGE_AT (what HR@20 and MRR@20 count). `session_first`: the fixed blend's order,
    session-based candidates before the rest."""
    active = blend.active_sources(w.weights) if session_first else frozenset()

    def key(x: Features) -> tuple[bool, float]:
        return (bool(active) and active.isdisjoint(x), -w.score(x))

    mine = key(positive)
    keys = [key(n) for n in negatives]
    # A tie is a coin flip when served (ties go by item id): half a place, for both rankers,
    # or the blend, which weighs no derived feature and ties more often, would gain from it.
    above = sum(k < mine for k in keys) + 0.5 * sum(k == mine for k in keys)
    return 1.0 / (above + 1) if above < EDGE_AT else 0.0
