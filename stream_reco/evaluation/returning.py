"""Returning users, measured on simulated user ids: what a profile adds to a known user's first
answers (docs/evaluation.md, "Returning users")."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_reco import effects, pipeline
from stream_reco.config import Settings
from stream_reco.evaluation.data import DAY_MS, SessionLog, end_ms, read_rows, read_sessions, split
from stream_reco.evaluation.harness import machine
from stream_reco.evaluation.replay import PLACEMENT, eval_settings, runtime_for_evaluation
from stream_reco.events import Event
from stream_reco.runtime import Runtime
from stream_reco.storage.redis_store import RedisStore

RULES = ("overlap", "random")
PER_USER = 4  # sessions per simulated user at most
SEED = 15
# Blend weights tried for (profile, profile_co) on the validation split.
GRID = tuple((p, c) for p in (0.0, 0.05, 0.2, 1.0) for c in (0.0, 0.05, 0.2, 1.0))
BATCH = 1000
K = 20
# Every answer gets its full sources whatever the machine's load: a degraded answer would
# measure the load, not the profile (the anonymous evaluation reports its degraded share).
BUDGET_MS = 1000.0


def _hash(seed: int, text: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest())


def assign(logs: Sequence[SessionLog], rule: str, seed: int = SEED) -> dict[str, str]:
    """A user id per session (ids must be unique across `logs`), deterministic for a seed.

    `overlap`: sessions sharing their MinHash item (the item with the least seeded hash, so two
    sessions share it with a probability equal to their item sets' Jaccard similarity) belong
    to one interest group, split in time order into users of at most PER_USER sessions.
    `random`: the same number of users, sessions dealt out at random (a null check: users whose
    sessions have nothing in common)."""
    ordered = sorted(logs, key=lambda s: (min(s.ts), s.session_id))
    if rule == "random":
        rng = random.Random(seed)
        n_users = max(len(ordered) // PER_USER, 1)
        return {s.session_id: f"r{rng.randrange(n_users)}" for s in ordered}
    if rule != "overlap":
        raise ValueError(f"rule must be one of {RULES}, not {rule!r}")
    groups: dict[str, list[str]] = defaultdict(list)
    for s in ordered:
        key = min(set(s.items), key=lambda item: (_hash(seed, item), item))
        groups[key].append(s.session_id)
    out: dict[str, str] = {}
    for key, members in groups.items():
        for n, sid in enumerate(members):
            out[sid] = f"o{_hash(seed, key)}-{n // PER_USER}"
    return out


def events(log: SessionLog, scope: str, user: str) -> list[Event]:
    sid = f"{scope}/{log.session_id}"
    return [
        Event(f"{sid}/{n}", kind, sid, item, ts, user_id=user)
        for n, (item, ts, kind) in enumerate(zip(log.items, log.ts, log.types, strict=True))
    ]


@dataclass
class Score:
    """HR@K and MRR@K over some positions."""

    n: int = 0
    hits: int = 0
    rr: float = 0.0

    def add(self, target: str, recs: Sequence[str]) -> None:
        self.n += 1
        top = list(dict.fromkeys(recs))[:K]
        if target in top:
            self.hits += 1
            self.rr += 1.0 / (top.index(target) + 1)

    def as_json(self) -> dict[str, float]:
        n = max(self.n, 1)
        hr, mrr = 100 * self.hits / n, 100 * self.rr / n
        return {"n": self.n, "hr": round(hr, 2), "mrr": round(mrr, 2)}


async def _train(store: RedisStore, logs: Sequence[SessionLog], users: dict[str, str]) -> None:
    """Every train event through the worker's update and then its profile step."""
    stream = sorted((e for s in logs for e in events(s, "train", users[s.session_id])),
                    key=lambda e: e.ts)  # fmt: skip
    for n in range(0, len(stream), BATCH):
        batch = stream[n : n + BATCH]
        await pipeline.ingest(store, batch, learn=True)
        await effects.remember_users(store, batch, None)


async def _first_positions(
    store: RedisStore,
    settings: Settings,
    live: Runtime,
    logs: Sequence[SessionLog],
    users: dict[str, str],
    scope: str,
) -> dict[str, Score]:
    """Position 0 (the first item, from an empty session: the known user's first request) and
    position 1 (the protocol's first: the second item from the first) of each session; frozen,
    so the test writes no profile and no shared state."""
    got = {"pos0": Score(), "pos1": Score()}
    for log in logs:
        user = users[log.session_id]
        evs = events(log, scope, user)
        for i in (0, 1):
            if i == 1:
                await pipeline.ingest(store, evs[:1], learn=False)
            answer = await pipeline.recommend(
                store, settings, evs[i].session_id, K, placement=PLACEMENT, live=live, user_id=user
            )
            got[f"pos{i}"].add(log.items[i], [p.item_id for p in answer.picks])
    return got


def _with(settings: Settings, weights: tuple[float, float]) -> Settings:
    return dataclasses.replace(settings, blend=f"profile={weights[0]},profile_co={weights[1]}")


async def measure(
    settings: Settings,
    train: Sequence[SessionLog],
    test: Sequence[SessionLog],
    users: tuple[dict[str, str], dict[str, str]],
    grid: Iterable[tuple[float, float]],
) -> dict[str, dict[str, Any]]:
    """Train once on a private key space, then each weight pair on the returning users' test
    sessions (each under its own session ids). `users`: the train and the test sessions'
    users. Returns per pair its scores."""
    train_users, test_users = users
    store = RedisStore.connect(eval_settings(dataclasses.replace(settings, budget_ms=BUDGET_MS)))
    # The fixed blend ranks: the comparison is about the profile's candidates, not a model.
    live = runtime_for_evaluation()
    known = {train_users[s.session_id] for s in train}
    returning = [s for s in test if test_users[s.session_id] in known]
    out: dict[str, dict[str, Any]] = {}
    try:
        await store.check_format()
        await _train(store, train, train_users)
        for n, weights in enumerate(grid):
            tried = _with(store.settings, weights)
            scores = await _first_positions(store, tried, live, returning, test_users, f"t{n}")
            out[f"{weights[0]},{weights[1]}"] = {k: v.as_json() for k, v in scores.items()}
    finally:
        await store.clear()
        await store.close()
    return out


def _pooled(r: dict[str, Any]) -> tuple[float, float]:
    """HR@K and MRR@K over both first positions."""
    n = max(r["pos0"]["n"] + r["pos1"]["n"], 1)
    hr = (r["pos0"]["hr"] * r["pos0"]["n"] + r["pos1"]["hr"] * r["pos1"]["n"]) / n
    mrr = (r["pos0"]["mrr"] * r["pos0"]["n"] + r["pos1"]["mrr"] * r["pos1"]["n"]) / n
    return hr, mrr


def best(validations: Sequence[dict[str, dict[str, Any]]]) -> tuple[float, float]:
    """The pair with the best mean (over the simulations) of the pooled HR@K, then MRR@K:
    one simulation flatters the profile (users who return to their interests), the other
    punishes it (users who never do); the weights must serve both."""

    def key(name: str) -> tuple[float, float, str]:
        scores = [_pooled(v[name]) for v in validations]
        return (
            sum(hr for hr, _ in scores) / len(scores),
            sum(mrr for _, mrr in scores) / len(scores),
            name,
        )

    p, c = max(validations[0], key=key).split(",")
    return float(p), float(c)


def run(
    settings: Settings,
    train_path: Path,
    test_path: Path,
    rules: Sequence[str],
    days: float,
    weights: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Choose the weights on a validation split cut by time from the train file (its last
    `days`), over every simulation in `rules`, then measure with and without the profile on
    the test file under each. Given `weights`, no choice: those."""
    started = time.perf_counter()
    fit, val = split(read_rows(train_path), days)
    train = read_sessions(train_path)
    test = [s for s in read_sessions(test_path, start_ms=end_ms(train) + DAY_MS) if len(s) >= 2]
    # One assignment over every session (train and test ids are kept apart by a prefix).
    every = [dataclasses.replace(s, session_id=f"a/{s.session_id}") for s in train] + [
        dataclasses.replace(s, session_id=f"b/{s.session_id}") for s in test
    ]
    users: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for rule in rules:
        got = assign(every, rule)
        users[rule] = (
            {s.session_id: got[f"a/{s.session_id}"] for s in train},
            {s.session_id: got[f"b/{s.session_id}"] for s in test},
        )
    # Validation sessions are the train file's latest: their users as assigned there.
    validation: dict[str, dict[str, dict[str, Any]]] = {}
    if weights is None:
        for rule in rules:
            train_users = users[rule][0]
            validation[rule] = asyncio.run(
                measure(settings, fit, val, (train_users, train_users), GRID)
            )
    chosen = weights or best(list(validation.values()))
    results: dict[str, dict[str, Any]] = {}
    for rule in rules:
        final = asyncio.run(measure(settings, train, test, users[rule], [(0.0, 0.0), chosen]))
        results[rule] = {"without": final["0.0,0.0"], "with": final[f"{chosen[0]},{chosen[1]}"]}
    return {
        "train": str(train_path),
        "test": str(test_path),
        "seed": SEED,
        "per_user": PER_USER,
        "k": K,
        "budget_ms": BUDGET_MS,
        "validation_days": days,
        "validation": validation,
        "chosen": {"profile": chosen[0], "profile_co": chosen[1]},
        "test_results": results,
        "machine": machine(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--rules", default=",".join(RULES), help=f"some of {RULES}")
    parser.add_argument("--days", type=float, default=1.0, help="validation: train's last days")
    parser.add_argument("--weights", help="profile,profile_co: use these, choose none")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    fixed = None
    if args.weights:
        p, c = (float(w) for w in args.weights.split(","))
        fixed = (p, c)
    rules = args.rules.split(",")
    report = run(Settings.from_env(), args.train, args.test, rules, args.days, fixed)
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    print(json.dumps({k: report[k] for k in ("chosen", "test_results", "seconds")}))


if __name__ == "__main__":
    main()
