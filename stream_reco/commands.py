"""What each `stream-reco` subcommand does: one handler per subcommand, chosen by cli.main."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import TYPE_CHECKING

import orjson

from stream_reco.config import Settings
from stream_reco.errors import ConfigError

if TYPE_CHECKING:
    from stream_reco.bench.run import Plan

# Each handler imports what only its command needs inside its body, so `stream-reco --help`
# and light commands never load Faust, Redis or the evaluation code.


def run_stack(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco import stack, stack_cluster

    if args.action == "up":
        stack.up(settings)
        if args.redis_cluster:
            stack_cluster.up(settings)
    elif args.action == "down":
        stack.down(settings)
        stack_cluster.down(settings)  # nothing to do when it was never started
    else:
        report = stack.status(settings)
        cluster = stack_cluster.status(settings)
        if cluster is not None:
            report["redis_cluster"] = cluster
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0 if all(s["ready"] for s in report.values()) else 1
    return 0


def run_topics(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco.kafka_io import ensure_topics

    created = ensure_topics(settings)
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco import app
    from stream_reco.kafka_io import ensure_topics

    if args.web_port is not None:
        # Several workers on one host each need their own web port.
        settings = dataclasses.replace(settings, web_port=args.web_port).validate()
    if args.role is not None:
        settings = dataclasses.replace(settings, role=args.role).validate()
    asyncio.run(_check_store(settings))  # refuse an unreadable store before anything starts
    ensure_topics(settings)
    app.run_worker(settings, loglevel=args.loglevel)
    return 0


async def _check_store(settings: Settings) -> None:
    from stream_reco.storage.redis_store import RedisStore

    store = RedisStore.connect(settings)
    try:
        await store.check_format()
        policy = await store.eviction_policy()
    finally:
        await store.close()
    if policy is None:
        # Still started: a managed Redis or an ACL user may keep CONFIG from the worker.
        print(
            "stream-reco: warning: could not read Redis's maxmemory-policy (no CONFIG for this "
            "user?): make sure it is noeviction, or exactly-once effects break when Redis "
            "evicts keys",
            file=sys.stderr,
        )
    elif policy != "noeviction":
        raise ConfigError(
            f"Redis evicts keys under memory pressure (maxmemory-policy {policy}): an evicted "
            "offset mark would apply a redelivered event twice, an evicted session would vanish. "
            "Set `maxmemory-policy noeviction` (CONFIG SET or redis.conf) and size maxmemory "
            'for the state (docs/contract.md, "Redis memory")'
        )


def run_inspect(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco import inspection  # Redis and the model only for this command

    return inspection.run(settings, args)


def run_forget(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco import privacy

    subject, given = ("user", args.user) if args.user is not None else ("session", args.session)
    key = given if subject == "user" else privacy.SESSION_KEY + given
    doc = {f"{subject}_id": given, "requested_by": args.requested_by}
    req = privacy.decode_forget(key.encode(), orjson.dumps(doc), hashed=bool(settings.user_id_key))
    if not isinstance(req, privacy.Forget):
        raise ConfigError(req.reason)

    async def run() -> dict[str, object]:
        from stream_reco.storage.redis_store import RedisStore

        store = RedisStore.connect(settings)
        try:
            return await privacy.forget(store, settings, req, scan=not args.no_scan)
        finally:
            await store.close()

    print(orjson.dumps(asyncio.run(run()), option=orjson.OPT_INDENT_2).decode())
    return 0


def run_experiments(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco.experiments import report

    async def read() -> list[dict[str, object]]:
        from stream_reco.storage.redis_store import RedisStore

        store = RedisStore.connect(settings)
        try:
            return await report.report(store, settings, name=args.name)
        finally:
            await store.close()

    reports = asyncio.run(read())
    if args.name is not None and not reports:
        raise ConfigError(f"--name {args.name}: no experiment of that name is defined")
    if args.json:
        print(orjson.dumps({"experiments": reports}, option=orjson.OPT_INDENT_2).decode())
    else:
        print(report.render(reports))
    return 0


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco import demo

    return demo.run_demo(
        settings,
        duration=args.duration,
        rate=args.rate,
        start_stack=not args.no_stack,
        items=args.items,
        seed=args.seed,
        experiment=not args.no_experiment,
    )


def run_evaluate(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_reco.evaluation import harness

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = set(methods) - set(harness.METHODS)
    if unknown:
        raise ConfigError(f"--methods: unknown {sorted(unknown)}; choose from {harness.METHODS}")
    modes = ("frozen", "online") if args.mode == "both" else (args.mode,)
    plan = harness.Plan(
        Path(args.train),
        Path(args.test),
        args.k,
        modes,
        methods,
        args.limit,
        args.via_kafka,
        args.learn_ranker,
    )
    report = harness.run(settings, plan)
    print(harness.table(report))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if args.plot:
        harness.plot(report, Path(args.plot))
    return 0


def run_split(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_reco.evaluation import data

    train, test = data.split(data.read_rows(Path(args.events)), args.days)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_train = data.write_sessions(out / "train.csv", train)
    n_test = data.write_sessions(out / "test.csv", test)
    print(f"{out / 'train.csv'}: {len(train)} sessions, {n_train} events")
    print(f"{out / 'test.csv'}: {len(test)} sessions, {n_test} events (last {args.days} days)")
    return 0


def run_bench(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_reco.bench import plots, report
    from stream_reco.bench.run import run

    result = run(settings, _bench_plan(args), start_stack=not args.no_stack)
    print(report.table(result))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if args.plot:
        for path in plots.plot(result, Path(args.plot)):
            print(f"plot: {path}")
    return 0


def _bench_plan(args: argparse.Namespace) -> Plan:
    """The bench's options checked (before any server starts) and laid over its base plan."""
    from stream_reco.bench.run import Plan

    try:
        workers = tuple(sorted({int(w) for w in args.workers.split(",")})) if args.workers else None
    except ValueError:
        raise ConfigError(f"--workers {args.workers!r}: give worker counts like 1,2") from None
    if workers is not None and (not workers or min(workers) < 1):
        raise ConfigError(f"--workers {args.workers!r}: worker counts must be >= 1")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError("--duration must be > 0 seconds")
    if args.events is not None and args.events < 100:
        raise ConfigError("--events must be at least 100")
    base = Plan.quick_plan() if args.quick else Plan.full()
    return base.with_options(args.duration, workers, args.events, args.topology)


def run_soak(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_reco.bench import plots, soak

    plan = soak.SoakPlan(
        minutes=args.minutes,
        window_s=args.window,
        events_per_s=args.events_per_s,
        requests_per_s=args.requests_per_s,
        topology=args.topology,
        tolerance=args.tolerance,
    ).check()
    result = soak.run(settings, plan, start_stack=not args.no_stack)
    print(soak.table(result))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if args.plot:
        print(f"plot: {plots.soak_plot(result, Path(args.plot))}")
    return 0 if result["drift"]["passed"] else 1


def run_digest(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_reco import digest

    if not 0 <= args.agreement <= 1:  # also refuses nan
        raise ConfigError(f"--agreement {args.agreement}: give a share from 0 to 1")
    if args.compare:
        a, b = (orjson.loads(Path(f).read_bytes()) for f in args.compare)
        result = digest.compare(a, b, args.agreement)
        print(digest.table(result))
        return 0 if result["passed"] else 1
    doc = digest.take(settings, say=lambda text: print(text, file=sys.stderr))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(doc))
    for kind, entry in sorted(doc["kinds"].items()):
        print(f"{kind:<12} {entry['keys']:>10,} keys  {'exact' if entry['exact'] else 'top'}")
    return 0
