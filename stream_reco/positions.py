"""Where a consumer reads a partition from: the store's offsets, a look-back, the commit."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from stream_reco.errors import ERRORS

log = logging.getLogger(__name__)
# Given partitions, the offset to read next in each, as the store has applied them (absent:
# the store has applied nothing from that partition).
Resume = Callable[[list[int]], dict[int, int]]
LOOKUP_TIMEOUT_S = 10.0  # committed offsets and offsets by time, on (re)assignment only
MAX_WAIT_S = 10.0  # a store that stays down is asked at least this often


def from_store(
    consumer: Consumer, partitions: list[TopicPartition], resume: Resume, name: str
) -> bool:
    """Start each partition after the last event the store applied from it (the effects and
    their offsets were written together), not at the group's commit: a store restored from an
    older snapshot is caught up from Kafka, and a newer one is not made to skip the same
    events again. A partition the store never applied starts at the group's commit. False
    when the store cannot say (down, still loading): the caller must position from the store
    (`rewind`) before applying anything, never from the commit, which may be ahead of it."""
    try:
        starts = resume([tp.partition for tp in partitions])
    except Exception as exc:
        ERRORS["resume_lookup"] += 1
        log.warning("%s: the store's offsets unavailable (%s); asking again", name, exc)
        return False
    for tp in partitions:
        tp.offset = starts.get(tp.partition, tp.offset)
    consumer.assign(partitions)
    return True


def rewind(
    consumer: Consumer,
    topic: str,
    resume: Resume,
    name: str,
    *,
    lost: bool,
    stop: threading.Event,
) -> None:
    """Read every owned partition again from the store's offsets, asking until the store
    answers (or `stop`). Where the store has none: from the beginning if it `lost` writes it
    had acknowledged (it may have lost that partition's offset too), else at the commit."""
    wait = 0.25
    while not stop.is_set():
        try:
            owned = [tp.partition for tp in consumer.assignment() if tp.topic == topic]
            starts = resume(owned) if owned else {}
            missing = [TopicPartition(topic, p) for p in owned if p not in starts]
            if missing and lost:
                starts.update(dict.fromkeys((tp.partition for tp in missing), OFFSET_BEGINNING))
            elif missing:
                for tp in consumer.committed(missing, timeout=LOOKUP_TIMEOUT_S):
                    starts[tp.partition] = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            for p, offset in sorted(starts.items()):
                consumer.seek(TopicPartition(topic, p, offset))
        except Exception as exc:  # the store or the broker not answering yet: ask again
            ERRORS["resume_lookup"] += 1
            log.warning("%s: cannot position from the store yet (%s)", name, exc)
            stop.wait(wait)
            wait = min(wait * 2, MAX_WAIT_S)
            continue
        log.warning("%s: reading from the store's offsets %s", name, dict(sorted(starts.items())))
        return


def look_back(
    consumer: Consumer, partitions: list[TopicPartition], lookback_ms: int, name: str
) -> None:
    """Start each partition without a committed offset at its first message of the last
    `lookback_ms` (its end if there is none), instead of `auto.offset.reset`."""
    try:
        committed = consumer.committed(partitions, timeout=LOOKUP_TIMEOUT_S)
        since = int(time.time() * 1000) - lookback_ms  # Kafka timestamps are wall clock
        fresh = [TopicPartition(tp.topic, tp.partition, since) for tp in committed if tp.offset < 0]
        if not fresh:
            return
        found = consumer.offsets_for_times(fresh, timeout=LOOKUP_TIMEOUT_S)
    except KafkaException as exc:  # the group's start reset applies instead
        ERRORS["kafka_lookback"] += 1
        log.warning("%s: no look-back start (%s); starting at the end", name, exc)
        return
    start = {tp.partition: tp.offset if tp.offset >= 0 else OFFSET_END for tp in found}
    for tp in partitions:
        tp.offset = start.get(tp.partition, tp.offset)
    consumer.assign(partitions)
