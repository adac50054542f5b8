"""A batch of events as apply-script calls, and how far the store applied each partition."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stream_reco.config import Settings
from stream_reco.decay import log_weight
from stream_reco.errors import StoreRewound
from stream_reco.events import Event
from stream_reco.state import entry
from stream_reco.storage import connect
from stream_reco.storage.keys import Keys

# Events per script call: one packed command instead of one per event, while each call stays
# short because Redis answers no query while a script runs.
EVENTS_PER_CALL = 64
LOOKUP_S = 5.0  # how long reading the store's offsets may take before it counts as failed


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event was read: the store remembers each partition's last applied offset, so
    a redelivery from anywhere in the topic's retention changes nothing."""

    stream: str  # the topic by name and id: a topic deleted and made again starts over
    partition: int
    offset: int

    @property
    def marker(self) -> str:
        return marker(self.stream, self.partition)


def marker(stream: str, partition: int) -> str:
    """The field a partition's last applied offset is kept under."""
    return f"{stream}:{partition}"


class Applied(list[bool]):
    """Per event whether it was applied now (the list itself, as the store always answered),
    and `flags`: per event the reason its session is flagged as a bot ('' none, bots.py), for
    an event seen before too (the session's sticky flag): such an event updated its session
    only and taught nothing shared, and whatever follows it (learner, profiles, attribution)
    must not learn from it either."""

    def __init__(
        self,
        applied: Iterable[bool],
        flags: Sequence[str],
        committed: Iterable[bool] | None = None,
    ) -> None:
        super().__init__(applied)
        # "!": this event flagged its session; "=": seen before, its session's sticky flag.
        self.flags = tuple(f.lstrip("!=") for f in flags)
        # The reasons of the sessions this batch flagged ("!" marks the event that did it),
        # counted once: only where this call committed the event (`committed`, default: the
        # events applied now; a cluster also commits what an unfinished try applied).
        done = list(self) if committed is None else list(committed)
        self.newly = tuple(f[1:] for f, d in zip(flags, done, strict=True) if d and f[:1] == "!")

    def flagged(self, n: int) -> bool:
        return self.flags[n] != ""


def reply(values: Iterable[Any]) -> Applied:
    """apply_event.lua's answer: 1 applied, 0 seen before, or a flagged session's reason
    ("=" before it: seen before)."""
    applied: list[bool] = []
    flags: list[str] = []
    for v in values:
        text = v.decode() if isinstance(v, bytes) else ""
        applied.append(text[:1] != "=" if text else int(v) == 1)
        flags.append(text)
    return Applied(applied, flags)


def learn_flags(learn: bool | Sequence[bool], n: int) -> list[int]:
    """Per event whether it may teach shared state (1/0), from one answer or one per event."""
    if isinstance(learn, bool):
        return [int(learn)] * n
    if len(learn) != n:
        raise ValueError(f"learn: {len(learn)} flags for {n} events (one per event, or one bool)")
    return [int(bool(v)) for v in learn]


def rows(
    settings: Settings,
    events: Sequence[Event],
    at: Sequence[Position | None],
    learn: bool | Sequence[bool],
) -> list[bytes]:
    """One JSON row per event, as apply_event.lua reads them."""
    flags = learn_flags(learn, len(events))
    out: list[bytes] = []
    for e, p, flag in zip(events, at, flags, strict=True):
        w = settings.weight(e.type)
        out.append(
            orjson.dumps(
                [
                    e.event_id,
                    e.session_id,
                    e.type,
                    e.item_id,
                    str(e.ts),
                    e.quantity,
                    e.user_id or "",
                    flag,
                    # Any event time works, in any order: decayed sums are kept in log space.
                    log_weight(w, e.ts, settings.cooc_half_life_s),
                    log_weight(w, e.ts, settings.pop_half_life_s),
                    entry(e.item_id, e.type, e.ts).decode(),
                    p.marker if p is not None else "",
                    str(p.offset) if p is not None else "",
                ]
            )
        )
    return out


def calls(
    events: Sequence[bytes], at: Sequence[Position | None], reached: Mapping[str, int]
) -> list[list[bytes]]:
    """The script calls of one batch: per call its events, what the calls before it in the
    same pipeline were to apply per partition (Redis runs every call of a pipeline even when
    one fails: a later call must not move an offset past events never applied), and, for the
    first, how far this worker had applied each of its partitions (`reached`): a store behind
    that lost acknowledged writes (a restart from an older snapshot). Each partition is
    checked against `reached` in the first call it appears in."""
    out: list[list[bytes]] = []
    before: dict[str, int] = {}
    for n in range(0, len(events), EVENTS_PER_CALL):
        mine = {p.marker for p in at[n : n + EVENTS_PER_CALL] if p is not None}
        earlier = {m: str(o) for m, o in before.items() if m in mine}
        known = {m: str(reached[m]) for m in mine if m in reached and m not in before}
        body = b"[" + b",".join(events[n : n + EVENTS_PER_CALL]) + b"]"
        out.append([body, orjson.dumps(earlier), orjson.dumps(known)])
        for p in at[n : n + EVENTS_PER_CALL]:
            if p is not None:
                before[p.marker] = p.offset
    return out


def rewound(exc: Exception) -> StoreRewound | None:
    """The script's refusal to apply on a store that lost writes, as an error to act on."""
    text = str(exc)
    at = text.find("REWOUND ")
    if at < 0:
        return None
    # A pipeline quotes the reply inside its own message: keep the reply's words only.
    detail = re.split(r"""['"]""", text[at + 8 :])[0].rstrip(",) ")
    return StoreRewound(f"the store lost writes it had acknowledged: {detail}")


def resume_at(settings: Settings, stream: str, partitions: Sequence[int]) -> dict[int, int]:
    """Per partition, the offset after the last one the store applied (absent: none yet):
    where a consumer taking these partitions over starts, rather than at the group's commit,
    so events a restored or restarted Redis lost are read again."""
    if not partitions:
        return {}
    # Bounded: it runs inside the consumer's rebalance callback, which must not hang.
    client = connect.sync_client(settings, socket_timeout=LOOKUP_S, socket_connect_timeout=LOOKUP_S)
    try:
        fields = [marker(stream, p) for p in partitions]
        got = client.hmget(Keys(settings.key_prefix).global_("offsets"), fields)
    finally:
        client.close()
    return {p: int(v) + 1 for p, v in zip(partitions, got, strict=True) if v is not None}
