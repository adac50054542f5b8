"""What one measured window adds up to: latencies, counts and rates, as plain numbers."""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between the closest ranks."""
    if not values:
        return math.nan
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    where = (len(ordered) - 1) * q / 100.0
    low = math.floor(where)
    high = min(low + 1, len(ordered) - 1)
    below, above = ordered[low], ordered[high]
    # Written out so +inf (a request never answered) gives inf, never inf - inf = nan.
    if where == low or below == above:
        return below
    return below + (above - below) * (where - low)


def ratio(value: float | None, floor: float | None) -> float | None:
    """How many times the floor a figure is; None when either side is missing or zero."""
    if value is None or floor is None or not math.isfinite(value) or not math.isfinite(floor):
        return None
    if floor <= 0:
        return None
    return round(value / floor, 2)


def _ms(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def latency_summary(latencies_ms: Sequence[float], unanswered: int = 0) -> dict[str, Any]:
    """p50/p95/p99/max in ms over every request sent, an unanswered one counting as +inf:
    an open-loop figure must not get better because the slowest requests never came back.
    A percentile that falls among the unanswered, like an empty window's, is None (JSON has
    no inf or NaN); `complete` and `saturated` say which it is."""
    every = [*latencies_ms, *([math.inf] * unanswered)]
    summary: dict[str, Any] = {
        "p50_ms": _ms(percentile(every, 50)),
        "p95_ms": _ms(percentile(every, 95)),
        "p99_ms": _ms(percentile(every, 99)),
        "max_ms": _ms(max(every)) if every else None,
    }
    summary["unanswered"] = unanswered
    summary["complete"] = unanswered == 0
    # More than ~1 % never answered: p99 lies beyond the timeout, the path is saturated.
    summary["saturated"] = bool(every) and summary["p99_ms"] is None
    # What the answers that did come looked like, for a window whose p99 is beyond reach.
    summary["answered_p99_ms"] = _ms(percentile(latencies_ms, 99))
    summary["answered_max_ms"] = _ms(max(latencies_ms)) if latencies_ms else None
    return summary


INGEST_SHORT_SHARE = 0.95  # below this share of the nominal rate, the background fell short


def ingest_short(nominal: float, sent_per_s: float | None) -> bool:
    """True when the background generator sent clearly less than the nominal ingest rate the
    entry is filed under (the generator, not the engine, then set the load)."""
    if sent_per_s is None or nominal <= 0:
        return False
    return sent_per_s < INGEST_SHORT_SHARE * nominal


NOTE_KINDS = ("degraded", "coalesced")


class Recorder:
    """One window's outcomes, filled from several threads (sender, client poll thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.latencies_ms: list[float] = []
        self.errors: Counter[str] = Counter()
        # Answered, but worth knowing: a fallback answer, a push shared with a later cart.
        self.notes: Counter[str] = Counter({kind: 0 for kind in NOTE_KINDS})

    def on_sent(self, n: int = 1) -> None:
        with self._lock:
            self.sent += n

    def on_answer(self, latency_s: float) -> None:
        with self._lock:
            self.latencies_ms.append(latency_s * 1000.0)

    def on_error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def note(self, kind: str) -> None:
        with self._lock:
            self.notes[kind] += 1

    @property
    def answered(self) -> int:
        return len(self.latencies_ms)

    def entry(self, rate: float, ingest_rate: float, **extra: Any) -> dict[str, Any]:
        """The JSON entry the issue specifies (latencies over everything sent), then the
        completeness flags, error kinds, notes, `ingest_short` and the `extra` figures."""
        with self._lock:
            lat = list(self.latencies_ms)
            errors = dict(self.errors)
            notes = dict(self.notes)
            sent = self.sent
        summary = latency_summary(lat, unanswered=max(sent - len(lat), 0))
        percentiles = {k: summary.pop(k) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")}
        return {
            "rate": rate,
            "ingest_rate": ingest_rate,
            **percentiles,
            "sent": sent,
            "answered": len(lat),
            "errors": sum(errors.values()),
            **summary,
            "error_kinds": errors,
            **notes,
            "ingest_short": ingest_short(ingest_rate, extra.get("ingest_sent_per_s")),
            **extra,
        }


def steady_rate(
    samples: Sequence[tuple[float, int]], total: int, low: float = 0.1, high: float = 0.9
) -> float | None:
    """Events/s between the moments `low` and `high` of `total` were done, read off
    (time, done) samples by linear interpolation: start-up and tail are left out."""
    if total <= 0:
        return None
    t_low = _crossing(samples, low * total)
    t_high = _crossing(samples, high * total)
    if t_low is None or t_high is None or t_high <= t_low:
        return None
    return (high - low) * total / (t_high - t_low)


def _crossing(samples: Sequence[tuple[float, int]], level: float) -> float | None:
    """When the done count first reached `level`, interpolated between two samples."""
    for (t0, n0), (t1, n1) in zip(samples, samples[1:], strict=False):
        if n0 < level <= n1:
            return t0 + (t1 - t0) * (level - n0) / (n1 - n0)
    if samples and samples[0][1] >= level:
        return samples[0][0]
    return None


def first_to_last_rate(samples: Sequence[tuple[float, int]], total: int) -> float | None:
    """Events/s from the first sample with progress to the first with everything done."""
    started = next((i for i, (_, n) in enumerate(samples) if n > 0), None)
    done = next((t for t, n in samples if n >= total), None)
    if started is None or done is None:
        return None
    # The last sample before progress bounds when the first event was applied.
    t0 = samples[max(started - 1, 0)][0]
    n0 = samples[max(started - 1, 0)][1]
    return (total - n0) / (done - t0) if done > t0 else None
