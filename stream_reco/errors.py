"""One exception hierarchy for stream-reco, rooted in StreamRecoError."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from stream_reco import logs

# Failures handled without stopping a stream (and answers not given on purpose), by kind:
# nothing is swallowed uncounted. /metrics reads it at scrape time (stream_reco_failures_total,
# metrics_scrape.py), so counting stays one dict update wherever a failure is handled.
ERRORS: Counter[str] = Counter()


class StreamRecoError(Exception):
    """Base of every error stream-reco raises on purpose."""


class ConfigError(StreamRecoError):
    """A setting is missing or out of range; the message names the env variable to fix."""


class StackError(StreamRecoError):
    """The local Kafka/Redis stack cannot be set up, started or reached."""


class StoreError(StreamRecoError):
    """The state store (Redis) failed after bounded retries."""


class StoreCredentialsError(StoreError):
    """Redis refused the user or password: said at once rather than after retries; a
    running worker still holds its batches (a password being rotated), never drops them."""


class StoreRewound(StreamRecoError):
    """The store holds less than it acknowledged (restarted from an older snapshot): its
    partitions must be read again from the store's own offsets before anything is applied."""


class StoreFormatError(StreamRecoError):
    """The store holds state in a format this version does not read; it is left untouched."""


class SnapshotError(StreamRecoError):
    """An index snapshot is missing, unreadable or inconsistent; rebuild the index instead."""


class LogTrimmed(StreamRecoError):
    """Changes after a change-log position are gone (trimmed or reset); rebuild from scratch."""


@contextmanager
def survived(kind: str, trouble: logs.Trouble) -> Iterator[None]:
    """A failure that must go no further (a background step, an effect of events already
    applied): counted in ERRORS under `kind` and logged by `trouble`, its first time with a
    trace unless it is a store outage (the store reports those), then rate-limited."""
    try:
        yield
    except Exception as exc:
        ERRORS[kind] += 1
        trouble.failed(type(exc).__name__, exc, trace=not isinstance(exc, StoreError))
    else:
        trouble.ok()
