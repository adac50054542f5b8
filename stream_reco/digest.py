"""State digests: what a store holds, per kind of state, comparable between two replays."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from stream_reco.config import Settings
from stream_reco.errors import ConfigError
from stream_reco.storage import connect

FORMAT = 2  # 2: a session's event ids replace the per-event dedup marks
TOP = 20  # members compared per key of an order-dependent kind
SCAN_COUNT = 1000
# Order-dependent kinds agree when their keys' top members overlap this much on average.
DEFAULT_AGREEMENT = 0.98


@dataclass(frozen=True)
class Kind:
    """One kind of state: how it is read, and whether replays must agree on it exactly."""

    redis_type: str  # list | hash | set | zset | string | none (count only)
    exact: bool  # order-independent: two replays of the same events hold the same content
    why: str


# Keyed by `<scope>:<name>` (scope s: session, i: item, g: global). Kinds not listed (shown
# lists, examples, leases, the model, vectors, the catalogue log, each partition's last applied
# offset) depend on requests, timing, which worker held a lease or which topic the events
# came through, not on the events: not digested.
KINDS: dict[str, Kind] = {
    "s:recent": Kind("list", True, "a session's events in its own order, capped by count"),
    "s:cart": Kind("hash", True, "sums of quantities"),
    "s:bought": Kind("set", True, "a set"),
    "s:info": Kind(
        "hash", True, "event count, newest time, user (the session's last), bot guard state"
    ),
    "s:items": Kind("set", True, "a set, capped by count in the session's own order"),
    "s:ids": Kind("list", True, "a session's last event ids, in its own order, capped by count"),
    "i:co": Kind("zset", False, "capped: which neighbour is trimmed depends on arrival order"),
    "i:next": Kind("zset", False, "capped like i:co"),
    "i:sessions": Kind(
        "zset_all", True, "the most recent sessions by their newest time: the same in any order"
    ),
    "i:meta": Kind("hash", True, "the latest catalogue record (compacted topic)"),
    "g:pop": Kind("zset", False, "capped: the tail depends on arrival order"),
    "g:pop:cat": Kind(
        "zset", False, "capped like g:pop; an event counts for its item's category when applied"
    ),
    "g:clock": Kind("string", True, "the newest event time"),
    "g:applied": Kind("string", True, "events applied, each once"),
}
PROFILE_NOTE = b"joined"  # storage/profiles.JOINED, as Redis returns it
_KEY = re.compile(r"^(?P<scope>[si]):\{(?P<id>[^}]*)\}:(?P<name>.*)$")


def kind_of(key: str, prefix: str) -> str | None:
    """The kind a key belongs to, None for state not digested."""
    if not key.startswith(prefix + ":"):
        return None
    rest = key[len(prefix) + 1 :]
    if rest.startswith("g:{g}:"):
        name = rest[6:]
        kind = "g:pop:cat" if name.startswith("pop:cat:") else f"g:{name}"
    else:
        found = _KEY.match(rest)
        if found is None:
            return None
        kind = f"{found['scope']}:{found['name']}"
    return kind if kind in KINDS else None


def take(settings: Settings, say: Any = None) -> dict[str, Any]:
    """The digest of everything under the settings' key prefix: per kind, its key count, a
    hash of its content (exact kinds) or each key's top members (order-dependent kinds)."""
    client = connect.sync_client(settings)
    # By key: SCAN may return a key twice. Exact kinds keep a hash per key, not its content.
    exact: dict[str, dict[str, bytes]] = {}
    tops: dict[str, dict[str, str]] = {}
    try:
        for n, (key, kind, content) in enumerate(_read(client, settings.key_prefix), 1):
            if KINDS[kind].exact:
                exact.setdefault(kind, {})[key] = hashlib.sha256(content).digest()
            else:
                tops.setdefault(kind, {})[key] = content.decode()
            if say is not None and n % 100_000 == 0:
                say(f"digest: {n:,} keys read")
    finally:
        client.close()
    if not exact and not tops:
        raise ConfigError(
            f"nothing to digest under STREAM_RECO_KEY_PREFIX={settings.key_prefix!r}: "
            "a wrong prefix, or a store that applied no event"
        )
    kinds: dict[str, dict[str, Any]] = {}
    for kind, by_key in exact.items():
        h = hashlib.sha256()
        for key in sorted(by_key):
            h.update(key.encode() + b"\0" + by_key[key])
        kinds[kind] = {"keys": len(by_key), "exact": True, "sha256": h.hexdigest()}
    for kind, top in tops.items():
        kinds[kind] = {"keys": len(top), "exact": False, "top": top}
    return {"format": FORMAT, "key_prefix": settings.key_prefix, "kinds": kinds}


def _read(client: connect.SyncClient, prefix: str) -> Iterator[tuple[str, str, bytes]]:
    """(key without the prefix, kind, canonical content) for every digested key."""
    batch: list[tuple[str, str]] = []
    for raw in client.scan_iter(match=f"{prefix}:*", count=SCAN_COUNT):
        key = raw.decode()
        kind = kind_of(key, prefix)
        if kind is not None:
            batch.append((key, kind))
        if len(batch) >= SCAN_COUNT:
            yield from _contents(client, prefix, batch)
            batch = []
    yield from _contents(client, prefix, batch)


def _contents(
    client: connect.SyncClient, prefix: str, batch: list[tuple[str, str]]
) -> Iterator[tuple[str, str, bytes]]:
    pipe = client.pipeline(transaction=False)
    for key, kind in batch:
        t = KINDS[kind].redis_type
        if t == "list":
            pipe.lrange(key, 0, -1)
        elif t == "hash":
            pipe.hgetall(key)
        elif t == "set":
            pipe.smembers(key)
        elif t == "zset":
            pipe.zrevrange(key, 0, TOP - 1)
        elif t == "zset_all":
            pipe.zrange(key, 0, -1, withscores=True)
        elif t == "string":
            pipe.get(key)
        else:
            pipe.exists(key)
    for (key, kind), value in zip(batch, pipe.execute(), strict=True):
        if kind == "s:info" and isinstance(value, Mapping):
            # The profile step's note that the session joined its user (storage/profiles.py)
            # comes after the events are applied, best effort, like the experiments' records:
            # it is no effect of the events alone, so it is not digested.
            value = {f: v for f, v in value.items() if f != PROFILE_NOTE}
        yield key[len(prefix) + 1 :], kind, _canonical(value)


def _canonical(value: Any) -> bytes:
    """One byte string per content, the same whatever order Redis returned a set or hash in."""
    if isinstance(value, Mapping):
        return b"\x1e".join(k + b"=" + v for k, v in sorted(value.items()))
    if isinstance(value, set):
        return b"\x1e".join(sorted(value))
    if isinstance(value, list):  # a list, or a whole sorted set as (member, score) pairs
        return b"\x1e".join(v if isinstance(v, bytes) else b"%s=%r" % (v[0], v[1]) for v in value)
    if isinstance(value, bytes):
        return value
    return str(value).encode()


def compare(a: Mapping[str, Any], b: Mapping[str, Any], agreement: float) -> dict[str, Any]:
    """Per kind: whether two digests agree (exact kinds: same keys and content; the others:
    same key count and, over the keys both hold, their top members overlapping by at least
    `agreement` on average). `passed` when every kind agrees."""
    for d in (a, b):
        if d.get("format") != FORMAT:
            raise ConfigError(f"digest format {d.get('format')!r}, expected {FORMAT}")
        if not d.get("kinds"):
            raise ConfigError("a digest with no state in it: compare two stores that hold some")
    out: dict[str, Any] = {}
    for kind in sorted(set(a["kinds"]) | set(b["kinds"])):
        x, y = a["kinds"].get(kind), b["kinds"].get(kind)
        if x is None or y is None:
            out[kind] = {"agree": False, "why": "only in one digest"}
        elif KINDS[kind].exact:
            same = x["keys"] == y["keys"] and x.get("sha256") == y.get("sha256")
            out[kind] = {"agree": same, "keys": [x["keys"], y["keys"]], "exact": True}
        else:
            share = overlap(x.get("top", {}), y.get("top", {}))
            agree = x["keys"] == y["keys"] and share >= agreement
            out[kind] = {"agree": agree, "keys": [x["keys"], y["keys"]], "top_overlap": share}
    return {"kinds": out, "agreement": agreement, "passed": all(k["agree"] for k in out.values())}


def overlap(a: Mapping[str, str], b: Mapping[str, str]) -> float:
    """Mean share of top members two digests' keys have in common (1.0 with no key)."""
    shares = []
    for key in set(a) | set(b):
        x, y = _members(a.get(key, "")), _members(b.get(key, ""))
        shares.append(len(x & y) / max(len(x), len(y)) if x or y else 1.0)
    return sum(shares) / len(shares) if shares else 1.0


def _members(joined: str) -> set[str]:
    return set(joined.split("\x1e")) if joined else set()


def table(result: Mapping[str, Any]) -> str:
    lines = [f"{'kind':<12} {'agree':<6} {'keys A / B':>22}  detail"]
    for kind, r in result["kinds"].items():
        keys = "" if "keys" not in r else f"{r['keys'][0]:,} / {r['keys'][1]:,}"
        detail = r.get("why") or (
            "exact" if r.get("exact") else f"top-{TOP} overlap {r['top_overlap']:.4f}"
        )
        lines.append(f"{kind:<12} {'yes' if r['agree'] else 'NO':<6} {keys:>22}  {detail}")
    verdict = "agree" if result["passed"] else "DIFFER"
    lines.append(f"digests {verdict} (order-dependent kinds need {result['agreement']:.0%})")
    return "\n".join(lines)
