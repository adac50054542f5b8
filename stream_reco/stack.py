"""The local stack's lifecycle without Docker: up, down and status of Kafka and Redis."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

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
)


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _our_pid(stack: Stack, svc: Service) -> int | None:
    """The pid we started for `svc`, if that process is still alive and still ours."""
    try:
        pid = int(stack.pid_file(svc).read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if svc.marker.encode() in cmdline else None


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
        if _our_pid(stack, svc):
            say(f"{svc.name}: already running (pid {_our_pid(stack, svc)}) on {svc.port}")
            continue
        if _port_open(svc.host, svc.port):
            env = ENV["redis_url" if svc.name == "redis" else "kafka_bootstrap_servers"]
            raise StackError(
                f"port {svc.port} ({svc.name}) is in use by a process this stack did not start; "
                f"stop it or point {env} at another port"
            )
        for name in ("kafka_controller_port", "kafka_sasl_port"):
            port = getattr(settings, name)
            if svc.name == "kafka" and _port_open("127.0.0.1", port):
                what = "controller" if name == "kafka_controller_port" else "SASL listener"
                raise StackError(f"port {port} (Kafka {what}) is in use; set {ENV[name]}")
        say(f"{svc.name}: starting on {svc.host}:{svc.port} (log: {stack.log_file(svc)})")
        START[svc.name](stack, svc, say)
        started.append(svc)
    for svc in (stack.redis(), stack.kafka()):
        _wait_ready(stack, svc)
    say(f"stack up: redis {stack.redis().port}, kafka {stack.kafka().port} (state in {stack.home})")


def _wait_ready(stack: Stack, svc: Service) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if READY[svc.name](svc):
            return
        if not _our_pid(stack, svc):
            break
        time.sleep(0.5)
    tail = ""
    if stack.log_file(svc).exists():
        tail = "\n".join(stack.log_file(svc).read_text(errors="replace").splitlines()[-25:])
    raise StackError(f"{svc.name} did not become ready on port {svc.port}; log tail:\n{tail}")


def down(settings: Settings, say: Say = print) -> None:
    """Stop only the processes this stack started (Kafka first: it flushes to disk)."""
    stack = Stack(settings)
    for svc in (stack.kafka(), stack.redis()):
        pid = _our_pid(stack, svc)
        if pid is None:
            say(f"{svc.name}: not running")
            stack.pid_file(svc).unlink(missing_ok=True)
            continue
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _our_pid(stack, svc) and time.monotonic() < deadline:
            time.sleep(0.2)
            _reap(pid)
        if _our_pid(stack, svc):
            os.kill(pid, signal.SIGKILL)
        stack.pid_file(svc).unlink(missing_ok=True)
        say(f"{svc.name}: stopped (pid {pid})")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def status(settings: Settings) -> dict[str, dict[str, object]]:
    stack = Stack(settings)
    out: dict[str, dict[str, object]] = {}
    for svc in (stack.redis(), stack.kafka()):
        out[svc.name] = {
            "address": f"{svc.host}:{svc.port}",
            "pid": _our_pid(stack, svc),
            "ready": READY[svc.name](svc),
            "log": str(stack.log_file(svc)),
        }
    return out
