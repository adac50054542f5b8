"""Forward time decay (Cormode et al., ICDE 2009): event time in, order-preserving weights out."""

from __future__ import annotations

# Doubles end near 2**1024; addends stay below 2**960 so that sums of up to 2**64 of them are
# still finite. The store must be re-based (every score times a constant, landmark moved)
# before event time gets this far past the landmark: 960 half-lives of the shortest half-life.
MAX_EXPONENT = 960.0


class LandmarkTooOld(ValueError):
    """Event time is so far past the landmark that forward weights would overflow."""


def exponent(ts_ms: int, landmark_ms: int, half_life_s: float) -> float:
    """Half-lives between the landmark and `ts_ms` (negative for events before the landmark)."""
    return (ts_ms - landmark_ms) / (half_life_s * 1000.0)


def forward_weight(weight: float, ts_ms: int, landmark_ms: int, half_life_s: float) -> float:
    """What an event of `weight` at `ts_ms` adds to a forward-decayed sum."""
    e = exponent(ts_ms, landmark_ms, half_life_s)
    if e > MAX_EXPONENT:
        raise LandmarkTooOld(
            f"event time is {e:.0f} half-lives past the decay landmark; re-base the store"
        )
    return weight * 2.0 ** max(e, -MAX_EXPONENT)


def value_at(stored: float, at_ms: int, landmark_ms: int, half_life_s: float) -> float:
    """The decayed value at event time `at_ms` of a forward-decayed sum `stored`."""
    # Clamped like forward_weight: far before the landmark the value is 0, not an overflow.
    return stored * 2.0 ** min(-exponent(at_ms, landmark_ms, half_life_s), MAX_EXPONENT)
