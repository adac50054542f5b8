"""How long `forget --user` takes: a user with 200 sessions (the default profile bound) of 50
events on a store holding many other sessions (docs/privacy.md): `named_ms` until everything the
user's keys name is gone, `took_ms` with the two SCANs of the safety net (the command line), and
`background_ms` for the worker's way (`reco-privacy`): pass 1, then the SCANs in small steps
with pauses. Run against the local stack, on a key prefix of its own that it deletes at the end:

    .venv/bin/python docs/bench/forget_bench.py [--others 100000] [--runs 20] [--sessions 200]
        [--background-runs 3] [--json out.json]
    STREAM_RECO_REDIS_CLUSTER=true REDIS_URL=redis://127.0.0.1:7000/0 .venv/bin/python ...
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
import uuid
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from stream_reco import privacy  # noqa: E402
from stream_reco.bench.machine import machine  # noqa: E402
from stream_reco.config import Settings  # noqa: E402
from stream_reco.events import Event  # noqa: E402
from stream_reco.storage import connect  # noqa: E402
from stream_reco.storage.redis_store import RedisStore  # noqa: E402

TS = 1_750_000_000_000
ITEMS = 5000
BATCH = 2000


async def _apply(store: RedisStore, events: list[Event]) -> None:
    """As a worker applies them: the events, then their users' profiles (the profile lists
    the sessions a forget finds without a SCAN)."""
    for n in range(0, len(events), BATCH):
        await store.apply_events(events[n : n + BATCH])
        await store.profiles.update(events[n : n + BATCH])


def _others(n: int, per: int) -> list[Event]:
    """n background sessions of `per` views; a third of them signed in."""
    out = []
    for s in range(n):
        user = f"bg-user-{s % 20000}" if s % 3 == 0 else None
        for e in range(per):
            item = f"item-{(s * 7 + e * 13) % ITEMS}"
            out.append(Event(f"bg-{s}-{e}", "view", f"bg-{s}", item, TS + s + e, user))
    return out


def _person(user: str, sessions: int, events: int) -> list[Event]:
    out = []
    for s in range(sessions):
        for e in range(events):
            item = f"item-{(s * 101 + e * 17) % ITEMS}"
            kind = "add_to_cart" if e % 10 == 9 else "view"
            sid, eid = f"{user}-s{s}", f"{user}-{s}-{e}"
            # Two seconds apart: a shopper's pace, which the bot guard leaves alone (a
            # flagged session joins no profile, so the forget would find it by SCAN only).
            ts = TS + 10**7 + s * 200_000 + e * 2000
            out.append(Event(eid, kind, sid, item, ts, user))
    return out


async def bench(
    settings: Settings, others: int, runs: int, sessions: int, background: int
) -> dict[str, object]:
    store = RedisStore.connect(settings)
    try:
        started = time.perf_counter()
        await _apply(store, _others(others, 3))
        filled_s = time.perf_counter() - started
        keys = _keys_in_redis(settings)
        took: dict[str, list[float]] = {"named_ms": [], "took_ms": [], "wall_ms": []}
        for run in range(runs):
            user = f"forget-me-{run}"
            await _apply(store, _person(user, sessions, 50))
            req = privacy.Forget("user", user, "bench")
            t0 = time.perf_counter()
            record = await privacy.forget(store, settings, req)
            took["wall_ms"].append((time.perf_counter() - t0) * 1000)
            took["named_ms"].append(record["named_ms"])
            took["took_ms"].append(record["took_ms"])
            assert record["sessions"] == sessions, record
        for run in range(background):
            user = f"forget-me-later-{run}"
            await _apply(store, _person(user, sessions, 50))
            req = privacy.Forget("user", user, "bench")
            t0 = time.perf_counter()
            record = await privacy.forget(store, settings, req, scan=False, later=True)
            took.setdefault("worker_named_ms", []).append(record["named_ms"])
            await privacy.drain()
            took.setdefault("background_ms", []).append((time.perf_counter() - t0) * 1000)
        return {
            "other_sessions": others,
            "user_sessions": sessions,
            "profile_max_sessions": settings.profile_max_sessions,
            "keys_in_redis": keys,
            "fill_s": round(filled_s, 1),
            "runs": runs,
            "forget": {
                what: {
                    "median": round(statistics.median(ms), 1),
                    "max": round(max(ms), 1),
                    "min": round(min(ms), 1),
                }
                for what, ms in took.items()
            },
        }
    finally:
        await store.clear()
        await store.close()


def _keys_in_redis(settings: Settings) -> int:
    """Every key of the database (other prefixes too): what each SCAN walks."""
    client = connect.sync_client(settings)
    try:
        return sum(int(node.dbsize()) for node in connect.primaries(client))
    finally:
        client.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--others", type=int, default=100_000, help="other sessions in the store")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--sessions", type=int, default=200, help="the forgotten user's sessions")
    p.add_argument("--background-runs", type=int, default=3, help="forgets the worker's way")
    p.add_argument("--json", help="write the result here")
    args = p.parse_args()
    base = Settings.from_env()
    settings = dataclasses.replace(base, key_prefix=f"bench-forget-{uuid.uuid4().hex[:8]}")
    result = asyncio.run(
        bench(settings, args.others, args.runs, args.sessions, args.background_runs)
    )
    asked = {"others": args.others, "runs": args.runs, "sessions": args.sessions}
    result["machine"] = machine(settings, asked)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
