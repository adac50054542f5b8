"""Thin command line: stack, worker, topics, inspect, demo, experiments, evaluate, bench..."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import TYPE_CHECKING

import orjson

from stream_reco.config import Settings
from stream_reco.errors import ConfigError, StoreCredentialsError, StoreError, StreamRecoError

if TYPE_CHECKING:
    pass


def _stack(settings: Settings, args: argparse.Namespace) -> int:
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


def _topics(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco.kafka_io import ensure_topics

    created = ensure_topics(settings)
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco.app import run_worker
    from stream_reco.kafka_io import ensure_topics

    if args.web_port is not None:
        # Several workers on one host each need their own web port.
        settings = dataclasses.replace(settings, web_port=args.web_port).validate()
    if args.role is not None:
        settings = dataclasses.replace(settings, role=args.role).validate()
    asyncio.run(_check_store(settings))  # refuse an unreadable store before anything starts
    ensure_topics(settings)
    run_worker(settings, loglevel=args.loglevel)
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


def _inspect(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco import inspection  # Redis and the model only for this command

    return inspection.run(settings, args)


def _forget(settings: Settings, args: argparse.Namespace) -> int:
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


def _experiments(settings: Settings, args: argparse.Namespace) -> int:
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


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco.demo import run_demo

    return run_demo(
        settings,
        duration=args.duration,
        rate=args.rate,
        start_stack=not args.no_stack,
        items=args.items,
        seed=args.seed,
        experiment=not args.no_experiment,
    )


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
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


def _split(settings: Settings, args: argparse.Namespace) -> int:
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


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from stream_reco.bench import plots, report
    from stream_reco.bench.run import Plan, run

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
    plan = base.with_options(args.duration, workers, args.events, args.topology)
    result = run(settings, plan, start_stack=not args.no_stack)
    print(report.table(result))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if args.plot:
        for path in plots.plot(result, Path(args.plot)):
            print(f"plot: {path}")
    return 0


def _soak(settings: Settings, args: argparse.Namespace) -> int:
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


def _digest(settings: Settings, args: argparse.Namespace) -> int:
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-reco", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stack", help="local Kafka + Redis without Docker")
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument(
        "--redis-cluster",
        action="store_true",
        help="with up: also a 3-primary Redis Cluster on STREAM_RECO_REDIS_CLUSTER_PORT (7000) "
        "and the two ports after it",
    )
    s.set_defaults(run=_stack)
    t = sub.add_parser("topics", help="create the contract's topics if missing")
    t.set_defaults(run=_topics)
    w = sub.add_parser("worker", help="run a Faust worker (several share the partitions)")
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    w.add_argument(
        "--web-port",
        type=int,
        default=None,
        help="Faust web port (default STREAM_RECO_WEB_PORT); one per worker on a host",
    )
    w.add_argument(
        "--role",
        choices=["all", "ingest", "query"],
        default=None,
        help="what this worker does (default STREAM_RECO_ROLE, all): `query` answers requests "
        "in a process of its own, beside `ingest` workers (docs/performance.md)",
    )
    w.set_defaults(run=_worker)
    i = sub.add_parser("inspect", help="print stored state or the deployed model as JSON")
    target = i.add_mutually_exclusive_group(required=True)
    target.add_argument("--session", help="a session id")
    target.add_argument("--item", help="an item id")
    target.add_argument(
        "--model",
        action="store_true",
        help="the published learned ranker: version, examples seen, weights, edge over the "
        "blend, and whether workers with these settings rank with it",
    )
    i.add_argument("-n", type=int, default=20, help="neighbours to show for --item")
    i.set_defaults(run=_inspect)
    d = sub.add_parser("demo", help="stack + worker + simulated storefront, live recommendations")
    d.add_argument("--duration", type=float, default=None, help="seconds to run (default: Ctrl-C)")
    d.add_argument("--rate", type=float, default=200.0, help="storefront events per second")
    d.add_argument("--items", type=int, default=300, help="catalogue size")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--no-stack", action="store_true", help="use the configured servers as they are")
    d.add_argument(
        "--no-experiment",
        action="store_true",
        help="no A/B experiment (by default one runs: two variants and a holdout)",
    )
    d.set_defaults(run=_demo)
    f = sub.add_parser(
        "forget",
        help="remove everything stored about a user or a session; print the audit record",
        description="Right to be forgotten (docs/privacy.md): a user's profile and sessions, or "
        "one session, with their shown lists, dedup markers, experiment records and session-kNN "
        "memberships. The audit record (no personal data) goes to the audit stream and stdout.",
    )
    whom = f.add_mutually_exclusive_group(required=True)
    whom.add_argument("--user", help="a user id as the storefront sends it")
    whom.add_argument("--session", help="a session id")
    f.add_argument(
        "--requested-by", default="cli", help="who asked (kept in the audit record; default cli)"
    )
    f.add_argument(
        "--no-scan",
        action="store_true",
        help="only what the user's keys name: skip the two SCANs of the whole keyspace (live "
        "sessions naming the user that the profile does not list, and stale kNN memberships)",
    )
    f.set_defaults(run=_forget)
    x = sub.add_parser("experiments", help="A/B experiments: the report per variant")
    x.add_argument("action", choices=["report"])
    x.add_argument("--name", help="only this experiment (default: every defined one)")
    x.add_argument("--json", action="store_true", help="JSON instead of the table")
    x.set_defaults(run=_experiments)
    e = sub.add_parser("evaluate", help="replay sessions: engine vs baselines, HR/MRR/NDCG")
    e.add_argument("--train", required=True, help="CSV: session_id,item_id[,timestamp][,type]")
    e.add_argument("--test", required=True, help="CSV in the same format")
    e.add_argument("-k", type=int, default=20)
    e.add_argument(
        "--mode",
        choices=["frozen", "online", "both"],
        default="frozen",
        help="frozen: test events never update global models; online: they do",
    )
    e.add_argument(
        "--methods", default=",".join(("engine", "pop", "spop", "markov", "itemknn", "vsknn"))
    )
    e.add_argument("--limit", type=int, default=None, help="only the first N test sessions")
    e.add_argument(
        "--via-kafka",
        action="store_true",
        help="train events through the real topics and a worker (end-to-end check)",
    )
    e.add_argument(
        "--learn-ranker",
        action="store_true",
        help="the learned ranker trains on test feedback as it goes (answer, then learn)",
    )
    e.add_argument("--json", help="write the full report here")
    e.add_argument("--plot", help="write a PNG of HR@k and MRR@k here")
    e.set_defaults(run=_evaluate)
    sp = sub.add_parser("split", help="cut a time-ordered events CSV into train/test by days")
    sp.add_argument("events", help="CSV with session_id,item_id,timestamp[,type]")
    sp.add_argument("--days", type=float, default=1.0, help="the last N days become test")
    sp.add_argument("--out", required=True, help="folder for train.csv and test.csv")
    sp.set_defaults(run=_split)
    b = sub.add_parser(
        "bench",
        help="end-to-end latency and throughput through the real Kafka, worker and Redis",
        description=(
            "Measure ingest (events/s to applied Redis state), request->response over Kafka, "
            "add_to_cart->push, HTTP GET /recommendations and the bare Kafka/Redis floor, on "
            "topics, a group and keys of its own (deleted at the end). Open loop: requests "
            "go out on a fixed schedule and never wait for answers, and every latency runs "
            "from the *scheduled* send time to the answer being read, so queueing shows."
        ),
    )
    b.add_argument("--quick", action="store_true", help="a short run (under 3 minutes) for CI")
    b.add_argument("--json", help="write the full report (JSON) here")
    b.add_argument("--plot", help="write latency-against-rate PNGs into this folder")
    b.add_argument("--workers", help="worker counts for ingest, e.g. 1,2 (default: 1,2; quick 1)")
    b.add_argument(
        "--duration", type=float, default=None, help="seconds per measured window (30; quick 10)"
    )
    b.add_argument(
        "--events", type=int, default=None, help="events per ingest run (100000; quick 30000)"
    )
    b.add_argument(
        "--topology",
        choices=["all", "split", "both"],
        default="all",
        help="the workers the latency scenarios run against: all (one `all` worker), split "
        "(one `ingest` beside one `query` worker, HTTP on the query worker) or both in turn; "
        "ingest scales `all` or `ingest` workers to match (default all)",
    )
    b.add_argument("--no-stack", action="store_true", help="use the configured servers as they are")
    b.set_defaults(run=_bench)
    k = sub.add_parser(
        "soak",
        help="one steady mixed load for many minutes: does any figure drift?",
        description=(
            "Background events and requests over Kafka at fixed rates for --minutes, on "
            "topics, groups and keys of its own; per window: request->response and "
            "add_to_cart->push percentiles, events applied/s, backlog, worker RSS, Redis "
            "memory. Exit 1 when a figure's last third is worse than its first third by more "
            "than --tolerance, or anything went unanswered."
        ),
    )
    k.add_argument("--minutes", type=float, default=10.0, help="length of the run (10)")
    k.add_argument("--window", type=float, default=60.0, help="seconds per window (60)")
    k.add_argument("--events-per-s", type=float, default=2000.0, help="background events (2000)")
    k.add_argument("--requests-per-s", type=float, default=200.0, help="requests (200)")
    k.add_argument("--topology", choices=["all", "split"], default="all")
    k.add_argument(
        "--tolerance",
        type=float,
        default=0.2,
        help="how much worse (a share) a figure's last third may be than its first (0.2)",
    )
    k.add_argument("--json", help="write the report (JSON) here")
    k.add_argument("--plot", help="write soak.png (figures over time) into this folder")
    k.add_argument("--no-stack", action="store_true", help="use the configured servers as they are")
    k.set_defaults(run=_soak)
    g = sub.add_parser(
        "digest",
        help="what the store holds, per kind of state; compare two replays",
        description=(
            "Digest the state under STREAM_RECO_KEY_PREFIX (per kind: key count, and a hash of "
            "its content or each key's top members), or compare two digests: exit 0 when every "
            "order-independent kind is identical and every order-dependent kind agrees within "
            "--agreement, 1 otherwise (docs/reliability.md)."
        ),
    )
    g.add_argument("--json", help="write the digest here")
    g.add_argument("--compare", nargs=2, metavar=("A", "B"), help="compare two digest files")
    g.add_argument(
        "--agreement",
        type=float,
        default=0.98,
        help="mean top-20 overlap order-dependent kinds need (0.98)",
    )
    g.set_defaults(run=_digest)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.run(settings, args) or 0)
    except StoreCredentialsError as exc:
        print(f"stream-reco: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"stream-reco: {exc} (is Redis up? `stream-reco stack up`)", file=sys.stderr)
        return 2
    except StreamRecoError as exc:
        print(f"stream-reco: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
