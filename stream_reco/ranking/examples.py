"""Examples from the stream itself: each sampled event labels what its session's candidates
were just before it, so the ranker learns every shop's own data, shown lists or not."""

from __future__ import annotations

import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence

from stream_reco.candidates import Candidate
from stream_reco.events import Event
from stream_reco.ranking.feedback import Example

# Candidates an example lists, best first by the serving order: the softmax learns most from
# those above the true item, and the evaluation counts the first 20.
DEPTH = 100
FRESH_MAX = 2_000  # examples waiting for the learner, in memory: older ones are dropped


def from_ranked(ranked: Sequence[tuple[Candidate, float]], target: str) -> Example | None:
    """The true next item against the other candidates of the first DEPTH; None when the
    candidates did not hold it (no order of them could have been right)."""
    head = ranked[:DEPTH]
    hit = next((n for n, (c, _) in enumerate(head) if c.item_id == target), None)
    if hit is None or len(head) < 2:
        return None
    negatives = [dict(c.features) for n, (c, _) in enumerate(head) if n != hit]
    return Example(dict(head[hit][0].features), negatives)


class Sampler:
    """Which events become examples: at most one per session per batch (its first, whose
    session state is exactly what came before it), then either a deterministic `share` of
    them (replays: the same events every run) or at most `per_s` a second (a worker: learning
    costs a candidate gather per example, so its rate is capped, not its share)."""

    def __init__(
        self,
        *,
        share: float | None = None,
        per_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (share is None) == (per_s is None):
            raise ValueError("give a share or a rate per second, not both")
        self.share, self.per_s, self.clock = share, per_s, clock
        self.tokens, self.at = 0.0, clock()

    def pick(self, events: Sequence[Event]) -> list[Event]:
        firsts: dict[str, Event] = {}
        for e in events:
            firsts.setdefault(e.session_id, e)
        if self.share is not None:
            return [e for e in firsts.values() if sampled(e.event_id, self.share)]
        now = self.clock()
        assert self.per_s is not None
        self.tokens = min(self.tokens + (now - self.at) * self.per_s, self.per_s)
        self.at = now
        n = int(self.tokens)
        self.tokens -= n
        return list(firsts.values())[:n]


class Fresh:
    """Examples made in this worker, waiting for its learner; bounded, oldest dropped."""

    def __init__(self, sampler: Sampler, limit: int = FRESH_MAX) -> None:
        self.sampler = sampler
        self.waiting: deque[Example] = deque(maxlen=limit)
        self.wanted = False  # only the worker that holds the learner lease makes examples

    def pick(self, events: Sequence[Event]) -> list[Event]:
        """The events of this batch to make examples of (none unless this worker learns)."""
        return self.sampler.pick(events) if self.wanted else []

    def add(self, made: Sequence[Example]) -> None:
        self.waiting.extend(made)

    def take(self, n: int) -> list[Example]:
        out: list[Example] = []
        while self.waiting and len(out) < n:
            out.append(self.waiting.popleft())
        return out


def sampled(event_id: str, share: float) -> bool:
    """Whether this event is in a `share` of events, the same ones every run (by its id)."""
    return zlib.crc32(event_id.encode()) / 2**32 < share
