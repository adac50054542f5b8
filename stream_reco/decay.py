"""Time decay kept in log space: event time in, order-preserving scores out, nothing to re-base."""

from __future__ import annotations

import math
from collections.abc import Sequence

# A decayed sum  V(t) = sum_i w_i * 2^((t_i - t) / h)  is stored as its base-2 logarithm at the
# Unix epoch:  s = log2 sum_i w_i * 2^(t_i / h).  Adding an event is a log-sum-exp, done in the
# apply script; V(t) = 2^(s - t / h). This is forward decay (Cormode et al., ICDE 2009) with the
# landmark fixed at the epoch and the sum kept as a logarithm, so it never overflows and does not
# depend on which event a store saw first: any event time, in any order, gives the same scores.
# Ranking a sorted set by s ranks it by V at any single time, like a forward-decayed sum.
# 2^x for a double: 0 below the first, infinite above the second.
MIN_EXPONENT = -1074.0
MAX_EXPONENT = 1023.0


def half_lives(ts_ms: int, half_life_s: float) -> float:
    """Half-lives between the Unix epoch and `ts_ms`."""
    return ts_ms / (half_life_s * 1000.0)


def log_weight(weight: float, ts_ms: int, half_life_s: float) -> float | None:
    """What an event of `weight` at `ts_ms` adds, as a logarithm (None: it adds nothing)."""
    if not weight > 0 or not math.isfinite(weight):
        return None
    return math.log2(weight) + half_lives(ts_ms, half_life_s)


def add(stored: float | None, log_w: float) -> float:
    """The stored log-sum after adding `log_w` (the apply script's arithmetic, for tests and
    tools): log2(2^stored + 2^log_w), computed without leaving log space."""
    if stored is None:
        return log_w
    hi, lo = max(stored, log_w), min(stored, log_w)
    return hi + math.log2(1.0 + _pow2(lo - hi))


def value_at(stored: float, at_ms: int, half_life_s: float) -> float:
    """The decayed value at event time `at_ms` of a stored log-sum."""
    return _pow2(stored - half_lives(at_ms, half_life_s))


def relative(scores: Sequence[float]) -> list[float]:
    """Stored log-sums as values relative to the first (a best-first list's top): what every
    reader needs, since each list is normalised by its top item anyway."""
    if not scores:
        return []
    top = scores[0]
    return [_pow2(s - top) for s in scores]


def _pow2(e: float) -> float:
    """2^e, 0 far below and the largest double far above: never an overflow error."""
    return 0.0 if e < MIN_EXPONENT else 2.0 ** min(e, MAX_EXPONENT)
