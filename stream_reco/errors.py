"""One exception hierarchy for stream-reco, rooted in StreamRecoError."""

from __future__ import annotations

from collections import Counter

# Failures handled without stopping a stream (and answers not given on purpose), by kind:
# nothing is swallowed uncounted; the metrics endpoint will export these.
ERRORS: Counter[str] = Counter()


class StreamRecoError(Exception):
    """Base of every error stream-reco raises on purpose."""


class ConfigError(StreamRecoError):
    """A setting is missing or out of range; the message names the env variable to fix."""


class StackError(StreamRecoError):
    """The local Kafka/Redis stack cannot be set up, started or reached."""


class StoreError(StreamRecoError):
    """The state store (Redis) failed after bounded retries."""


class SnapshotError(StreamRecoError):
    """An index snapshot is missing, unreadable or inconsistent; rebuild the index instead."""


class LogTrimmed(StreamRecoError):
    """Changes after a change-log position are gone (trimmed or reset); rebuild from scratch."""
