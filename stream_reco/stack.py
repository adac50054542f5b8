"""The local stack's lifecycle without Docker: up, down and status of Kafka and Redis."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from stream_reco.config import ENV, Settings
from stream_reco.errors import StackError
from stream_reco.stack_servers import (
    LOCAL_HOSTS,
    READY,
    START,
    START_TIMEOUT_S,
    Say,
    Service,
    Stack,
    our_pid,
    port_open,
    reap,
)


def _require_local(svc: Service) -> None:
    if svc.host not in LOCAL_HOSTS:
        raise StackError(
            f"the local stack only runs on 127.0.0.1; {svc.name} is configured at {svc.host} "
            f"(unset {ENV['kafka_bootstrap_servers']}/{ENV['redis_url']} or use your servers "
            "without `stack up`)"
        )


def up(settings: Settings, say: Say = print) -> None:
    """Start Redis and Kafka unless they already run (ours); wait until both answer."""
    if settings.kafka_security_protocol != "PLAINTEXT":
        raise StackError(
            f"the local stack is started and probed over its plain listener: run `stack up` "
            f"(and `demo`, `bench`, `soak`) without {ENV['kafka_security_protocol']}; its "
            f"SASL/SCRAM listener is on {ENV['kafka_sasl_port']}={settings.kafka_sasl_port}"
        )
    stack = Stack(settings)
    if settings.kafka_sasl_port in (settings.kafka_controller_port, stack.kafka().port):
        raise StackError(
            f"{ENV['kafka_sasl_port']}={settings.kafka_sasl_port} is already the stack's Kafka "
            "controller or plain listener port: give the SASL listener a port of its own"
        )
    started: list[Service] = []
    for svc in (stack.redis(), stack.kafka()):
        _require_local(svc)
        if our_pid(stack, svc):
            say(f"{svc.name}: already running (pid {our_pid(stack, svc)}) on {svc.port}")
            continue
        if port_open(svc.host, svc.port):
            env = ENV["redis_url" if svc.name == "redis" else "kafka_bootstrap_servers"]
            raise StackError(
                f"port {svc.port} ({svc.name}) is in use by a process this stack did not start; "
                f"stop it or point {env} at another port"
            )
        for name in ("kafka_controller_port", "kafka_sasl_port"):
            port = getattr(settings, name)
            if svc.name == "kafka" and port_open("127.0.0.1", port):
                what = "controller" if name == "kafka_controller_port" else "SASL listener"
                raise StackError(f"port {port} (Kafka {what}) is in use; set {ENV[name]}")
        say(f"{svc.name}: starting on {svc.host}:{svc.port} (log: {stack.log_file(svc)})")
        START[svc.name](stack, svc, say)
        started.append(svc)
    for svc in (stack.redis(), stack.kafka()):
        wait_ready(stack, svc)
    say(f"stack up: redis {stack.redis().port}, kafka {stack.kafka().port} (state in {stack.home})")


def wait_ready(
    stack: Stack, svc: Service, ready: Callable[[Service], bool] | None = None, what: str = ""
) -> None:
    """Until `svc` answers (`ready`, by default its kind's probe), or fail with its log tail
    when its process is gone or the start timeout passed."""
    probe = ready or READY[svc.name]
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if probe(svc):
            return
        if not our_pid(stack, svc):
            break
        time.sleep(0.2)
    tail = ""
    if stack.log_file(svc).exists():
        tail = "\n".join(stack.log_file(svc).read_text(errors="replace").splitlines()[-25:])
    raise StackError(
        f"{svc.name} did not {what or 'become ready'} on port {svc.port}; log tail:\n{tail}"
    )


def down(settings: Settings, say: Say = print) -> None:
    """Stop only the processes this stack started (Kafka first: it flushes to disk)."""
    stack = Stack(settings)
    for svc in (stack.kafka(), stack.redis()):
        pid = stop(stack, svc)
        say(f"{svc.name}: not running" if pid is None else f"{svc.name}: stopped (pid {pid})")


def stop(stack: Stack, svc: Service) -> int | None:
    """Stop `svc` if this stack started it and it runs (SIGTERM, SIGKILL after 30 s); its pid,
    or None when it was not running."""
    pid = our_pid(stack, svc)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while our_pid(stack, svc) and time.monotonic() < deadline:
            time.sleep(0.2)
            reap(pid)
        if our_pid(stack, svc):
            os.kill(pid, signal.SIGKILL)
    stack.pid_file(svc).unlink(missing_ok=True)
    return pid


def status(settings: Settings) -> dict[str, dict[str, object]]:
    stack = Stack(settings)
    out: dict[str, dict[str, object]] = {}
    for svc in (stack.redis(), stack.kafka()):
        out[svc.name] = {
            "address": f"{svc.host}:{svc.port}",
            "pid": our_pid(stack, svc),
            "ready": READY[svc.name](svc),
            "log": str(stack.log_file(svc)),
        }
    return out
