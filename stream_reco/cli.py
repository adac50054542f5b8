"""Thin command line: stack, worker, topics, inspect, demo."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys

import orjson

from stream_reco.config import Settings
from stream_reco.errors import StreamRecoError


def _stack(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco import stack

    if args.action == "up":
        stack.up(settings)
    elif args.action == "down":
        stack.down(settings)
    else:
        report = stack.status(settings)
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
    ensure_topics(settings)
    run_worker(settings, loglevel=args.loglevel)
    return 0


def _inspect(settings: Settings, args: argparse.Namespace) -> int:
    from stream_reco.storage.redis_store import RedisStore

    async def run() -> object:
        store = RedisStore.connect(settings)
        try:
            if args.session:
                return (await store.read_session(args.session)).to_json()
            return await store.inspect_item(args.item, n=args.n)
        finally:
            await store.close()

    print(orjson.dumps(asyncio.run(run()), option=orjson.OPT_INDENT_2).decode())
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
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stream-reco", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("stack", help="local Kafka + Redis without Docker")
    s.add_argument("action", choices=["up", "down", "status"])
    s.set_defaults(run=_stack)
    t = sub.add_parser("topics", help="create the contract's topics if missing")
    t.set_defaults(run=_topics)
    w = sub.add_parser("worker", help="run a Faust worker (several share the partitions)")
    w.add_argument("--loglevel", default="info", choices=["debug", "info", "warning", "error"])
    w.add_argument("--web-port", type=int, default=None,
                   help="Faust web port (default STREAM_RECO_WEB_PORT); one per worker on a host")
    w.set_defaults(run=_worker)
    i = sub.add_parser("inspect", help="print stored state as JSON")
    target = i.add_mutually_exclusive_group(required=True)
    target.add_argument("--session", help="a session id")
    target.add_argument("--item", help="an item id")
    i.add_argument("-n", type=int, default=20, help="neighbours to show for --item")
    i.set_defaults(run=_inspect)
    d = sub.add_parser("demo", help="stack + worker + simulated storefront, live recommendations")
    d.add_argument("--duration", type=float, default=None, help="seconds to run (default: Ctrl-C)")
    d.add_argument("--rate", type=float, default=200.0, help="storefront events per second")
    d.add_argument("--items", type=int, default=300, help="catalogue size")
    d.add_argument("--seed", type=int, default=7)
    d.add_argument("--no-stack", action="store_true", help="use the configured servers as they are")
    d.set_defaults(run=_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.run(settings, args) or 0)
    except StreamRecoError as exc:
        print(f"stream-reco: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
