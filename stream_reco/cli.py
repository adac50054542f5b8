"""Thin command line: stack, worker, topics, inspect, demo, experiments, evaluate, bench..."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from stream_reco import commands
from stream_reco.config import Settings
from stream_reco.errors import StoreCredentialsError, StoreError, StreamRecoError

if TYPE_CHECKING:
    # argparse keeps the type of add_subparsers() private; named once, for annotations only.
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]


def parser() -> argparse.ArgumentParser:
    # This module's docstring doubles as the description `stream-reco --help` prints.
    p = argparse.ArgumentParser(prog="stream-reco", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    # Called in the order `stream-reco --help` lists the subcommands.
    _add_service(sub)
    _add_inspect(sub)
    _add_demo(sub)
    _add_forget(sub)
    _add_experiments(sub)
    _add_evaluation(sub)
    _add_bench(sub)
    _add_soak(sub)
    _add_digest(sub)
    return p


def _add_service(sub: Subcommands) -> None:
    """Running the service: the local stack, the topics, a worker."""
    s = sub.add_parser("stack", help="local Kafka + Redis without Docker")
    s.add_argument("action", choices=["up", "down", "status"])
    s.add_argument(
        "--redis-cluster",
        action="store_true",
        help="with up: also a 3-primary Redis Cluster on STREAM_RECO_REDIS_CLUSTER_PORT (7000) "
        "and the two ports after it",
    )
    s.set_defaults(run=commands.run_stack)
    t = sub.add_parser("topics", help="create the contract's topics if missing")
    t.set_defaults(run=commands.run_topics)
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
    w.set_defaults(run=commands.run_worker)


def _add_inspect(sub: Subcommands) -> None:
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
    i.set_defaults(run=commands.run_inspect)


def _add_demo(sub: Subcommands) -> None:
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
    d.set_defaults(run=commands.run_demo)


def _add_forget(sub: Subcommands) -> None:
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
    f.set_defaults(run=commands.run_forget)


def _add_experiments(sub: Subcommands) -> None:
    x = sub.add_parser("experiments", help="A/B experiments: the report per variant")
    x.add_argument("action", choices=["report"])
    x.add_argument("--name", help="only this experiment (default: every defined one)")
    x.add_argument("--json", action="store_true", help="JSON instead of the table")
    x.set_defaults(run=commands.run_experiments)


def _add_evaluation(sub: Subcommands) -> None:
    """Offline evaluation: cut a log into train/test, replay it against baselines."""
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
    e.set_defaults(run=commands.run_evaluate)
    sp = sub.add_parser("split", help="cut a time-ordered events CSV into train/test by days")
    sp.add_argument("events", help="CSV with session_id,item_id,timestamp[,type]")
    sp.add_argument("--days", type=float, default=1.0, help="the last N days become test")
    sp.add_argument("--out", required=True, help="folder for train.csv and test.csv")
    sp.set_defaults(run=commands.run_split)


def _add_bench(sub: Subcommands) -> None:
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
    b.set_defaults(run=commands.run_bench)


def _add_soak(sub: Subcommands) -> None:
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
    k.set_defaults(run=commands.run_soak)


def _add_digest(sub: Subcommands) -> None:
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
    g.set_defaults(run=commands.run_digest)


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
