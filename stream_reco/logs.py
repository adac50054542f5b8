"""Worker log lines that stay readable under load: counted summaries, trouble and recovery."""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Protocol

Clock = Callable[[], float]
EVERY_S = 10.0  # at most one line per interval from each summary: an outage cannot flood the log
MAX_KEYS = 50  # distinct reasons counted per topic between two lines; beyond, by their kind
TOP = 5  # reasons named in one line; the rest are counted as "other"
KIND_CHARS = 120
OTHER = "other reasons"
LOG = logging.getLogger("stream_reco")

# A reason quotes what it names from the message (`got 'teleport'`, `key 'k1' does not match
# item_id 'k2'`): quoted text, lists and numbers are the message's values, maybe personal data.
# A quote ends only at an unescaped quote (repr and JSON escape the quotes inside with a
# backslash), else at the end of the reason: a value cut short, even right after a backslash,
# is masked to the end rather than let the rest of it through.
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*(?:'|\\?\Z)|\"(?:[^\"\\]|\\.)*(?:\"|\\?\Z)", re.S)
_LIST = re.compile(r"\[[^\]]*(?:\]|$)")
_NUMBER = re.compile(r"(?<![A-Za-z_-])\d[\d.,_]*")


def reason_kind(reason: str) -> str:
    """A dead-letter reason without the message's values (quoted text, lists, numbers): which
    kind of problem it was, safe to log and to group by."""
    kind = _NUMBER.sub("…", _LIST.sub("[…]", _QUOTED.sub("'…'", reason)))
    return kind if len(kind) <= KIND_CHARS else kind[: KIND_CHARS - 1] + "…"


class ManualClock:
    """A clock that moves only when told: for tests of anything that takes a `clock`."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _Summary(Protocol):
    def tick(self) -> None: ...

    def flush(self) -> None: ...


_LIVE: weakref.WeakSet[_Summary] = weakref.WeakSet()


def tick() -> None:
    """Write every line that is due (a worker's timer calls this every second or so), so a
    burst followed by silence is still reported."""
    for summary in list(_LIVE):
        summary.tick()


def flush() -> None:
    """Write every line held back, due or not (a stopping worker)."""
    for summary in list(_LIVE):
        summary.flush()


class Tally:
    """Counts by topic and reason (dead letters), written as one line per topic at most once
    per interval. Counting is a dict update; reasons are cleaned and formatted only when a
    line is written. The first count after a quiet interval is written at once."""

    def __init__(
        self,
        what: str,
        *,
        level: int = logging.WARNING,
        every_s: float = EVERY_S,
        clock: Clock = time.monotonic,
        log: logging.Logger = LOG,
    ) -> None:
        self.what, self.level, self.every_s = what, level, every_s
        self._clock, self._log = clock, log
        self._counts: dict[str, Counter[str]] = {}  # topic -> raw reason -> count
        self._since: dict[str, float] = {}  # topic -> its first count since its last line
        self._due = float("-inf")
        _LIVE.add(self)

    def add(self, topic: str, reason: str) -> None:
        reasons = self._counts.get(topic)
        if reasons is None:
            reasons = self._counts[topic] = Counter()
            self._since[topic] = self._clock()
        if reason not in reasons and len(reasons) >= MAX_KEYS:
            # Reasons that differ only by their values: count them by their head instead.
            head = reason.partition(":")[0]
            reason = head if head in reasons or len(reasons) < 2 * MAX_KEYS else OTHER
        reasons[reason] += 1
        if self._clock() >= self._due:
            self.flush()

    def tick(self) -> None:
        if self._counts and self._clock() >= self._due:
            self.flush()

    def flush(self) -> None:
        """Write what was counted (one line per topic) and start a new interval."""
        if not self._counts:
            return
        now = self._clock()
        counts, self._counts = self._counts, {}
        for topic, reasons in counts.items():
            kinds: Counter[str] = Counter()
            for reason, n in reasons.items():
                kinds[reason if reason == OTHER else reason_kind(reason)] += n
            total = sum(kinds.values())
            span = now - self._since.pop(topic, now)
            within = f" in {span:.1f} s" if total > 1 else ""
            self._log.log(
                self.level, "%s from %s: %d%s: %s", self.what, topic, total, within, _top(kinds)
            )
        self._due = now + self.every_s


class Trouble:
    """One dependency's failures (Redis, the Kafka producer, a consumer): the first is written
    at once (WARNING), later ones as one summary per interval, and the first success after
    them as one INFO line. A success while all is well costs one attribute check. Safe to
    call from librdkafka's callback threads."""

    def __init__(
        self,
        name: str,
        *,
        every_s: float = EVERY_S,
        clock: Clock = time.monotonic,
        log: logging.Logger = LOG,
    ) -> None:
        self.name, self.every_s = name, every_s
        self._clock, self._log = clock, log
        self.failing = False
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()  # failed calls since the last line, by kind
        self._latest: object = None  # the latest failure (formatted only when written)
        self._trace = False
        self._total = 0  # failures since the trouble began
        self._started = self._ended = 0.0
        self._recovery = False  # it works again and that is not written yet
        self._lines = 0  # lines written about this trouble
        self._due = float("-inf")
        _LIVE.add(self)

    def failed(self, what: str, error: object, *, trace: bool = False) -> None:
        """A failed call: `what` (a call, a topic: never a message's content) and its error;
        `trace` writes the traceback of an exception with the trouble's first line."""
        with self._lock:
            now = self._clock()
            if not self.failing:
                self.failing = True
                if not self._recovery:  # else a relapse before the recovery was written
                    self._started, self._total, self._lines = now, 0, 0
                self._recovery = False
            if what not in self._counts and len(self._counts) >= MAX_KEYS:
                what = "other"
            self._counts[what] += 1
            self._total += 1
            self._latest, self._trace = error, trace
            if now >= self._due:
                self._write(now)

    def ok(self) -> None:
        """A call that worked: if there was trouble, it is over."""
        if self.failing:
            with self._lock:
                if self.failing:
                    now = self._clock()
                    self.failing, self._recovery, self._ended = False, True, now
                    if now >= self._due:
                        self._write(now)

    def tick(self) -> None:
        with self._lock:
            if self._pending() and self._clock() >= self._due:
                self._write(self._clock())

    def flush(self) -> None:
        with self._lock:
            if self._pending():
                self._write(self._clock())

    def _pending(self) -> bool:
        return self._recovery or (self.failing and bool(self._counts))

    def _write(self, now: float) -> None:
        if self._recovery:
            self._log.info(
                "%s works again after %d failures over %.1f s; the last: %s",
                self.name,
                self._total,
                self._ended - self._started,
                self._latest,
            )
            self._recovery = False
        elif not self._lines:
            exc = self._latest if self._trace and isinstance(self._latest, BaseException) else None
            what = next(iter(self._counts)) if len(self._counts) == 1 else _top(self._counts)
            self._log.warning(
                "%s trouble: %s failed: %s (further failures: one line per %.0f s)",
                self.name,
                what,
                self._latest,
                self.every_s,
                exc_info=exc,
            )
        else:
            self._log.warning(
                "%s trouble for %.0f s: %d failures since the last line (%s); the last: %s",
                self.name,
                now - self._started,
                sum(self._counts.values()),
                _top(self._counts),
                self._latest,
            )
        self._lines += 1
        self._counts = Counter()
        self._due = now + self.every_s


class Throttled:
    """One kind of news (a model version) at most once per interval: the latest of those held
    back is written when the interval ends, with how many it stands for."""

    def __init__(
        self,
        *,
        every_s: float = EVERY_S,
        clock: Clock = time.monotonic,
        log: logging.Logger = LOG,
        level: int = logging.INFO,
    ) -> None:
        self.every_s, self.level = every_s, level
        self._clock, self._log = clock, log
        self._held: tuple[str, tuple[object, ...]] | None = None
        self._skipped = 0
        self._due = float("-inf")
        _LIVE.add(self)

    def note(self, fmt: str, *args: object) -> None:
        self._held = (fmt, args)
        self._skipped += 1
        self.tick()

    def tick(self) -> None:
        if self._clock() >= self._due:
            self.flush()

    def flush(self) -> None:
        if self._held is None:
            return
        (fmt, args), self._held = self._held, None
        more = self._skipped - 1
        suffix = f" (and {more} earlier since the last line)" if more else ""
        self._log.log(self.level, fmt + "%s", *args, suffix)
        self._skipped = 0
        self._due = self._clock() + self.every_s


def _top(counts: Counter[str]) -> str:
    """`n × kind` for the most frequent kinds, the rest as one `other` entry."""
    top = counts.most_common(TOP)
    rest = sum(counts.values()) - sum(n for _, n in top)
    parts = [f"{n} × {kind}" for kind, n in top]
    if rest:
        parts.append(f"{rest} × other")
    return "; ".join(parts)


DEAD_LETTERS = Tally("dead letters")
REDIS = Trouble("Redis")
KAFKA_PRODUCER = Trouble("Kafka producer")
PROCESSING = Trouble("message processing")
# What follows an applied event (pushes, feedback): its failures cost only that effect.
AFTER_APPLY = Trouble("after applying events")
