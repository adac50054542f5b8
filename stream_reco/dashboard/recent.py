"""What the live dashboard shows beyond the counters: recent latencies and the last answers
per session (the explorer), kept in bounded memory per worker."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

RECENT_ANSWERS = 2000  # latencies kept for the dashboard's percentiles, per trigger
LAST_SESSIONS = 1000  # sessions whose last answers the dashboard's explorer can show
ANSWERS_PER_SESSION = 3


class LastAnswers:
    """The last answers per session, for the dashboard's explorer: the store keeps only the
    shown list of the latest answer, and the session's next event consumes it. Bounded (the
    sessions answered most recently) and per worker: it knows what this worker answered."""

    def __init__(self, sessions: int = LAST_SESSIONS, per: int = ANSWERS_PER_SESSION) -> None:
        self.sessions, self.per = sessions, per
        self._by: OrderedDict[str, deque[Mapping[str, Any]]] = OrderedDict()

    def add(self, doc: Mapping[str, Any]) -> None:
        sid = str(doc.get("session_id"))
        kept = self._by.pop(sid, None)
        if kept is None:
            kept = deque(maxlen=self.per)
            if len(self._by) >= self.sessions:
                self._by.popitem(last=False)
        kept.append(doc)
        self._by[sid] = kept  # now the most recent

    def of(self, session_id: str) -> list[Mapping[str, Any]]:
        """Newest first."""
        return list(reversed(self._by.get(session_id, ())))


LAST = LastAnswers()
RECENT: dict[str, deque[float]] = {}  # trigger -> the latest answers' latencies (seconds)


def seen(trigger: str, seconds: float, doc: Mapping[str, Any]) -> None:
    """An answer sent: its latency for the percentiles, itself for the explorer. O(1)."""
    kept = RECENT.get(trigger)
    if kept is None:
        kept = RECENT[trigger] = deque(maxlen=RECENT_ANSWERS)
    kept.append(seconds)
    LAST.add(doc)


def percentiles(trigger: str, qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> dict[str, Any]:
    """The latest answers' latency percentiles in milliseconds (None before any answer)."""
    ordered = sorted(RECENT.get(trigger, ()))
    out: dict[str, Any] = {"n": len(ordered)}
    for q in qs:
        at = min(int(q * len(ordered)), len(ordered) - 1)
        out[f"p{round(q * 100)}_ms"] = round(ordered[at] * 1000, 3) if ordered else None
    return out
