"""Session logs for evaluation: read the CSV format, synthesise event times, cut train/test."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from stream_reco.config import EVENT_TYPES
from stream_reco.errors import StreamRecoError
from stream_reco.events import BRACES, CONTROL

# Files without timestamps: file order is time order, one synthetic second per row from here.
SYNTHETIC_START_MS = 1_577_836_800_000  # 2020-01-01
SYNTHETIC_STEP_MS = 1000
DAY_MS = 86_400_000


class DataError(StreamRecoError):
    """An input file is not in the evaluation format; the message names file and line."""


@dataclass(frozen=True, slots=True)
class SessionLog:
    """One session's events in time order."""

    session_id: str
    items: tuple[str, ...]
    ts: tuple[int, ...]  # epoch ms
    types: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class Row:
    session_id: str
    item_id: str
    ts: int
    type: str


def read_rows(path: Path, start_ms: int = SYNTHETIC_START_MS) -> list[Row]:
    """Rows of a `session_id,item_id[,timestamp][,type]` CSV, with event times in ms."""
    try:
        handle = open(path, newline="")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    with handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        for needed in ("session_id", "item_id"):
            if needed not in header:
                raise DataError(f"{path}: header must name session_id and item_id, got {header}")
        col = {name: header.index(name) for name in header}
        return list(_rows(path, reader, col, start_ms))


def _rows(
    path: Path, reader: Iterable[list[str]], col: dict[str, int], start_ms: int
) -> Iterator[Row]:
    s, i = col["session_id"], col["item_id"]
    t, k = col.get("timestamp"), col.get("type")
    for line, rec in enumerate(reader, start=2):
        if not rec:
            continue
        try:
            ts = (
                int(float(rec[t]) * 1000)
                if t is not None
                else start_ms + (line - 2) * SYNTHETIC_STEP_MS
            )
            kind = rec[k].strip() if k is not None and rec[k].strip() else "view"
            sid, item = rec[s].strip(), rec[i].strip()
        except (IndexError, ValueError) as exc:
            raise DataError(f"{path}:{line}: {exc}: {rec}") from exc
        if not sid or not item:
            raise DataError(f"{path}:{line}: empty session_id or item_id")
        if CONTROL.search(sid) or CONTROL.search(item):
            raise DataError(f"{path}:{line}: control characters in session_id or item_id")
        if BRACES.search(sid) or BRACES.search(item):
            raise DataError(
                f"{path}:{line}: {{ or }} in session_id or item_id (keys wrap ids in them)"
            )
        if kind not in EVENT_TYPES:
            raise DataError(f"{path}:{line}: type {kind!r} is not one of {EVENT_TYPES}")
        yield Row(sid, item, ts, kind)


def sessions(rows: Iterable[Row]) -> list[SessionLog]:
    """Group rows by session (first appearance order), each session in file order."""
    grouped: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        grouped[r.session_id].append(r)
    return [
        SessionLog(
            sid, tuple(r.item_id for r in rs), tuple(r.ts for r in rs), tuple(r.type for r in rs)
        )
        for sid, rs in grouped.items()
    ]


def read_sessions(path: Path, start_ms: int = SYNTHETIC_START_MS) -> list[SessionLog]:
    return sessions(read_rows(path, start_ms))


def end_ms(logs: Iterable[SessionLog]) -> int:
    """The latest event time, so a test file without timestamps can start after its train file."""
    return max((max(s.ts) for s in logs if s.ts), default=SYNTHETIC_START_MS)


def split(rows: list[Row], days: float) -> tuple[list[SessionLog], list[SessionLog]]:
    """Train/test by time: sessions that start in the last `days` days are test. Test clicks on
    items never seen in train are dropped (nothing could predict them), then test sessions
    shorter than 2 (nothing left to predict)."""
    logs = sessions(rows)
    if not logs:
        raise DataError("no events to split")
    cut = end_ms(logs) - int(days * DAY_MS)
    train = [s for s in logs if min(s.ts) < cut]
    known = {item for s in train for item in s.items}
    test = []
    for s in logs:
        if min(s.ts) < cut:
            continue
        keep = [n for n, item in enumerate(s.items) if item in known]
        if len(keep) >= 2:
            test.append(
                SessionLog(
                    s.session_id, *(tuple(v[n] for n in keep) for v in (s.items, s.ts, s.types))
                )
            )
    if not train or not test:
        raise DataError(
            f"cutting the last {days} days leaves {len(train)} train and {len(test)} test sessions"
        )
    return train, test


def write_sessions(path: Path, logs: Iterable[SessionLog]) -> int:
    """Write the evaluation CSV (with timestamp in epoch seconds and type); returns rows written."""
    n = 0
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["session_id", "item_id", "timestamp", "type"])
        for s in logs:
            for item, ts, kind in zip(s.items, s.ts, s.types, strict=True):
                out.writerow([s.session_id, item, f"{ts / 1000:.3f}", kind])
                n += 1
    return n
