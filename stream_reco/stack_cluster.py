"""The local stack's Redis Cluster: three primaries from Debian's redis-server, joined once."""

from __future__ import annotations

import shutil
import subprocess

import redis

from stream_reco.config import ENV, Settings
from stream_reco.errors import StackError
from stream_reco.stack import stop, wait_ready
from stream_reco.stack_servers import (
    READY,
    Say,
    Service,
    Stack,
    _spawn,
    our_pid,
    port_open,
)

PRIMARIES = 3
MARKER = "cluster"  # in its command line, and in the title Redis gives itself: "... [cluster]"


def nodes(settings: Settings) -> list[Service]:
    """The cluster's nodes: `STREAM_RECO_REDIS_CLUSTER_PORT` and the ports after it."""
    first = settings.redis_cluster_port
    return [
        Service(f"redis-cluster-{port}", "127.0.0.1", port, MARKER)
        for port in range(first, first + PRIMARIES)
    ]


def url(settings: Settings) -> str:
    """The REDIS_URL a cluster client starts from (any node will do)."""
    return f"redis://127.0.0.1:{settings.redis_cluster_port}/0"


def up(settings: Settings, say: Say = print) -> None:
    """Start the nodes that are not running, join them into one cluster if they are not yet
    (every slot on one of the primaries, no replicas), and wait until the cluster is ok."""
    stack = Stack(settings)
    for svc in nodes(settings):
        if our_pid(stack, svc) is not None:
            say(f"{svc.name}: already running on {svc.port}")
            continue
        if port_open(svc.host, svc.port):
            raise StackError(
                f"port {svc.port} is in use by a process this stack did not start; stop it or "
                f"set {ENV['redis_cluster_port']} to the first of {PRIMARIES} free ports"
            )
        say(f"{svc.name}: starting on {svc.host}:{svc.port} (log: {stack.log_file(svc)})")
        _start(stack, svc)
    for svc in nodes(settings):
        wait_ready(stack, svc, READY["redis"], "answer")
    if not _joined(nodes(settings)[0]):  # once joined, restarted nodes find each other again
        _create(settings)
    for svc in nodes(settings):
        wait_ready(stack, svc, _formed, "join the cluster")
    say(
        f"redis cluster up: {PRIMARIES} primaries on {settings.redis_cluster_port}-"
        f"{settings.redis_cluster_port + PRIMARIES - 1}; to use it: "
        f"{ENV['redis_cluster']}=true {ENV['redis_url']}={url(settings)}"
    )


def down(settings: Settings, say: Say = print) -> None:
    """Stop the nodes this stack started; their data stays for the next `up`."""
    stack = Stack(settings)
    for svc in nodes(settings):
        if (pid := stop(stack, svc)) is not None:
            say(f"{svc.name}: stopped (pid {pid})")


def status(settings: Settings) -> dict[str, object] | None:
    """The cluster's nodes and state, or None when none of its nodes is ours and running."""
    stack = Stack(settings)
    running = {str(svc.port): our_pid(stack, svc) for svc in nodes(settings)}
    if not any(running.values()):
        return None
    first = nodes(settings)[0]
    return {
        "address": f"{first.host}:{first.port}",
        "pids": running,
        "ready": all(_formed(svc) for svc in nodes(settings)),
        "log": str(stack.log_file(first)),
    }


def _start(stack: Stack, svc: Service) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError(
            "redis-server not found: run `stream-reco stack up` first (it installs it)"
        )
    ndir = stack.home / "redis-cluster" / str(svc.port)
    ndir.mkdir(parents=True, exist_ok=True)
    # As the single node is run (stack_servers._start_redis), plus cluster mode.
    cmd = [binary, "--bind", "127.0.0.1", "--port", str(svc.port), "--dir", str(ndir),
           "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
           "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
           "--daemonize", "no", "--zset-max-listpack-entries", "0"]  # fmt: skip
    _spawn(stack, svc, cmd)


def _create(settings: Settings) -> None:
    addresses = [f"{svc.host}:{svc.port}" for svc in nodes(settings)]
    done = subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise StackError(
            f"redis-cli --cluster create failed:\n{(done.stdout + done.stderr)[-2000:]}"
        )


def _info(svc: Service) -> dict[str, str]:
    """The node's CLUSTER INFO; empty while it does not answer."""
    try:
        return dict(redis.Redis(host=svc.host, port=svc.port, socket_timeout=1).cluster("info"))
    except redis.RedisError:
        return {}


def _joined(svc: Service) -> bool:
    """Whether this node knows the other primaries (from its nodes.conf after a restart)."""
    return int(_info(svc).get("cluster_known_nodes", 0)) >= PRIMARIES


def _formed(svc: Service) -> bool:
    """Whether this node sees a cluster of all the primaries serving every slot."""
    info = _info(svc)
    return (
        info.get("cluster_state") == "ok"
        and int(info.get("cluster_known_nodes", 0)) >= PRIMARIES
        and int(info.get("cluster_slots_assigned", 0)) == 16384
    )
