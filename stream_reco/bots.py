"""The bot and abuse guard's rules, as storage/bots.lua applies them inside each session's part of
the apply, and a replica of them in Python to measure human sessions against (docs/reliability.md,
"Bot and abuse guard"): `python -m stream_reco.bots FILE.csv ...` prints the distributions."""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stream_reco.config import Settings

MINUTE_MS = 60_000
# The rules in the order they are checked; bots.lua reads each limit as cfg.bot_<reason>.
REASONS = ("rate", "items", "carts", "repeats", "burst")


# The packed part of a session's guard state, as bots.lua writes it (BOT_PACK), then the flag.
PACKED = struct.Struct("<diiiiiiidi")


def state(raw: bytes | None) -> tuple[tuple[float, ...], str]:
    """A session's guard state as stored (the `bot` field of its info hash): the counts and the
    flag ('' none); None: nothing counted yet."""
    if not raw:
        return (), ""
    return PACKED.unpack_from(raw), raw[PACKED.size :].decode()


@dataclass(frozen=True, slots=True)
class Limits:
    """What a session may do before it is flagged; 0 switches a rule off."""

    events_per_min: int
    new_items_per_min: int
    carts_per_min: int
    repeats: int
    events_per_s: int
    past: int = 15  # previous events a new item is checked against (those session.lua reads)

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        past = min(settings.session_max_events, 3 * settings.cooc_window)
        if not settings.bot_guard:
            return cls(0, 0, 0, 0, 0, past)
        return cls(
            settings.bot_max_events_per_min,
            settings.bot_max_new_items_per_min,
            settings.bot_max_carts_per_min,
            settings.bot_max_repeats,
            settings.bot_max_events_per_s,
            past,
        )

    @property
    def values(self) -> tuple[int, ...]:
        """The limits in REASONS order."""
        return (
            self.events_per_min,
            self.new_items_per_min,
            self.carts_per_min,
            self.repeats,
            self.events_per_s,
        )

    def script_config(self) -> dict[str, int]:
        """The limits as the apply scripts' static config reads them."""
        return {
            "bot_on": any(self.values),
            **{f"bot_{r}": limit for r, limit in zip(REASONS, self.values, strict=True)},
        }


@dataclass(slots=True)
class Watch:
    """One session's detector state, as bots.lua keeps it (a replica: the measurements use it).
    Minute buckets in event time, the window slides over the current and the previous one."""

    minute: int = -1
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])  # events, new items, carts
    before: list[int] = field(default_factory=lambda: [0, 0, 0])  # the same, previous minute
    repeats: int = 0
    second: int = -1
    in_second: int = 0
    flag: str = ""
    peaks: list[float] = field(default_factory=lambda: [0.0] * len(REASONS))

    def see(self, ts: int, new_item: bool, cart: bool, same_as_last: bool, lim: Limits) -> str:
        """Count one event; the reason its session is flagged ("" none), sticky once set."""
        m = ts // MINUTE_MS
        if m > self.minute:
            self.before = self.counts if m == self.minute + 1 else [0, 0, 0]
            self.counts, self.minute = [0, 0, 0], m
        for n, on in enumerate((True, new_item, cart)):
            self.counts[n] += int(on)
        self.repeats = self.repeats + 1 if same_as_last else 1
        if ts // 1000 > self.second:
            self.second, self.in_second = ts // 1000, 0
        self.in_second += 1
        # The previous minute weighs what of it is still within the last 60 s, from the
        # bucket's start (self.minute), not the event's own minute: a late (out of order) event,
        # before its bucket's start, sees all of it (the safe side: it can only flag sooner).
        left = 1 - max(0, ts - self.minute * MINUTE_MS) / MINUTE_MS
        rates = [c + b * left for c, b in zip(self.counts, self.before, strict=True)]
        now = [*rates, float(self.repeats), float(self.in_second)]
        self.peaks = [max(p, v) for p, v in zip(self.peaks, now, strict=True)]
        if not self.flag:
            for reason, value, limit in zip(REASONS, now, lim.values, strict=True):
                if limit > 0 and value > limit:
                    self.flag = reason
                    break
        return self.flag


def replay(items: Sequence[str], ts: Sequence[int], types: Sequence[str], lim: Limits) -> Watch:
    """One session's events through the detector, in order."""
    w = Watch()
    past: list[tuple[str, str]] = []
    for item, t, kind in zip(items, ts, types, strict=True):
        new = all(p[0] != item for p in past)
        same = bool(past) and past[0] == (item, kind)
        w.see(t, new, kind == "add_to_cart", same, lim)
        past.insert(0, (item, kind))
        del past[lim.past :]
    return w


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def describe(
    name: str, sessions: Iterable[tuple[Sequence[str], Sequence[int], Sequence[str]]], lim: Limits
) -> dict[str, object]:
    """Per session its peak rates; their 99th/99.9th percentile and maximum, and how many
    sessions the limits would flag."""
    peaks: list[list[float]] = []
    flagged = 0
    for items, ts, types in sessions:
        w = replay(items, ts, types, lim)
        peaks.append(w.peaks)
        flagged += bool(w.flag)
    out: dict[str, object] = {"data": name, "sessions": len(peaks), "flagged": flagged}
    names = ("events_per_min", "new_items_per_min", "carts_per_min", "repeats", "events_per_s")
    for n, what in enumerate(names):
        column = [p[n] for p in peaks]
        out[what] = {
            "p99": round(percentile(column, 0.99), 1),
            "p99.9": round(percentile(column, 0.999), 1),
            "max": round(max(column, default=0.0), 1),
        }
    return out


def main(paths: Sequence[str]) -> None:
    # Imported here: the store imports this module on the hot path, the reader is for this
    # command only.
    import orjson

    from stream_reco.evaluation.data import read_sessions

    lim = Limits.of(Settings.from_env())
    for path in paths:
        logs = read_sessions(Path(path))
        rows = ((s.items, s.ts, s.types) for s in logs)
        print(orjson.dumps(describe(path, rows, lim)).decode())


if __name__ == "__main__":
    main(sys.argv[1:])
