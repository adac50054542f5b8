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
# Examples waiting for the learner, in memory, older ones dropped past either bound: a count,
# and the feature values they hold (about 100 bytes each in Python), so about 20 MB at most.
FRESH_MAX = 1_000
FRESH_VALUES_MAX = 200_000


def from_ranked(
    ranked: Sequence[tuple[Candidate, float]], target: str, depth: int = DEPTH
) -> Example | None:
    """The true next item against the other candidates of the first `depth` (at most DEPTH);
    None when the candidates did not hold it (no order of them could have been right)."""
    head = ranked[: min(depth, DEPTH)]
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
            raise ValueError("give exactly one of share= and per_s=")
        self.share, self.per_s, self.clock = share, per_s, clock
        # Up to a second's worth saved up, and at least one whole example, so a rate below one
        # a second still makes one now and then.
        self.burst = max(per_s or 0.0, 1.0)
        self.tokens, self.at = 0.0, clock()

    def pick(self, events: Sequence[Event]) -> list[Event]:
        firsts: dict[str, Event] = {}
        for e in events:
            firsts.setdefault(e.session_id, e)
        share, per_s = self.share, self.per_s or 0.0
        if share is not None:
            return [e for e in firsts.values() if sampled(e.event_id, share)]
        now = self.clock()
        self.tokens = min(self.tokens + (now - self.at) * per_s, self.burst)
        self.at = now
        n = int(self.tokens)
        self.tokens -= n
        return list(firsts.values())[:n]


class Fresh:
    """Examples made in this worker, waiting for its learner; bounded, oldest dropped."""

    def __init__(
        self, sampler: Sampler, limit: int = FRESH_MAX, values_max: int = FRESH_VALUES_MAX
    ) -> None:
        self.sampler, self.limit, self.values_max = sampler, limit, values_max
        self.waiting: deque[Example] = deque()
        self.values = 0  # feature values held by the waiting examples
        self.wanted = False  # only the worker that holds the learner lease makes examples

    def pick(self, events: Sequence[Event]) -> list[Event]:
        """The events of this batch to make examples of (none unless this worker learns)."""
        return self.sampler.pick(events) if self.wanted else []

    def add(self, made: Sequence[Example]) -> None:
        for x in made:
            self.waiting.append(x)
            self.values += _values(x)
        while self.waiting and (len(self.waiting) > self.limit or self.values > self.values_max):
            self.values -= _values(self.waiting.popleft())

    def take(self, n: int) -> list[Example]:
        out: list[Example] = []
        while self.waiting and len(out) < n:
            out.append(self.waiting.popleft())
            self.values -= _values(out[-1])
        return out

    def clear(self) -> None:
        self.waiting.clear()
        self.values = 0


def _values(x: Example) -> int:
    return len(x.positive) + sum(len(n) for n in x.negatives)


def sampled(event_id: str, share: float) -> bool:
    """Whether this event is in a `share` of events, the same ones every run (by its id)."""
    return zlib.crc32(event_id.encode()) / 2**32 < share
