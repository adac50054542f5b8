"""The local stack without Docker: Kafka 3.9.1 (KRaft, jars from Maven Central) and Redis 7."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from stream_reco.config import ENV, Settings
from stream_reco.errors import StackError

POM = Path(__file__).resolve().parent.parent / "deploy" / "local" / "pom.xml"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
START_TIMEOUT_S = 90.0
Say = Callable[[str], None]


@dataclass(frozen=True)
class Service:
    name: str
    host: str
    port: int
    marker: str  # a word of the process's command line: guards against a recycled pid


@dataclass(frozen=True)
class Stack:
    """Where the stack keeps its state, logs, pid files and cached jars, and its two servers."""

    settings: Settings

    @property
    def home(self) -> Path:
        return self.settings.home.resolve()

    @property
    def libs(self) -> Path:
        return self.home / "kafka" / "libs"

    def kafka(self) -> Service:
        host, _, port = self.settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
        return Service("kafka", host or "127.0.0.1", int(port), "kafka.Kafka")

    def redis(self) -> Service:
        url = urlparse(self.settings.redis_url)
        return Service("redis", url.hostname or "127.0.0.1", url.port or 6379, "redis-server")

    def pid_file(self, svc: Service) -> Path:
        return self.home / "run" / f"{svc.name}.pid"

    def log_file(self, svc: Service) -> Path:
        return self.home / "logs" / f"{svc.name}.log"


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


def _ensure_redis_binary(say: Say) -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        say("redis-server missing: installing Debian's redis-server with apt-get ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "redis-server"],
        ):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise StackError(f"`{' '.join(cmd)}` failed:\n{done.stderr[-2000:]}")
        # Debian's package may start its own server on 6379; ours must own the port.
        subprocess.run(["service", "redis-server", "stop"], capture_output=True)
        found = shutil.which("redis-server")
    if not found:
        raise StackError(
            "redis-server not found: install Redis >= 7 (apt-get install redis-server)"
        )
    return found


def ensure_kafka_jars(stack: Stack, say: Say) -> Path:
    """Kafka and its runtime jars in one folder, fetched once by Maven and cached after."""
    done_marker = stack.libs / ".complete"
    if done_marker.exists():
        return stack.libs
    if not shutil.which("mvn"):
        raise StackError("Maven (mvn) not found: needed once to fetch the Kafka jars")
    if not POM.exists():
        raise StackError(f"{POM} not found: run from a clone of the stream-reco repository")
    say("fetching Kafka 3.9.1 jars from Maven Central (once) ...")
    stack.libs.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn",
        "-q",
        "-B",
        "-f",
        str(POM),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={stack.libs}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not any(stack.libs.glob("kafka_2.13-*.jar")):
        raise StackError(
            f"Maven could not fetch the Kafka jars:\n{(done.stdout + done.stderr)[-3000:]}"
        )
    done_marker.write_text("ok\n")
    return stack.libs


def _kafka_config(stack: Stack, svc: Service) -> Path:
    kdir = stack.home / "kafka"
    ctrl = stack.settings.kafka_controller_port
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{ctrl}",
        "listeners": f"PLAINTEXT://127.0.0.1:{svc.port},CONTROLLER://127.0.0.1:{ctrl}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{svc.port}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(kdir / "data"),
        "num.partitions": str(stack.settings.partitions),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "168",
    }
    conf = kdir / "server.properties"
    conf.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    (kdir / "log4j.properties").write_text(
        "log4j.rootLogger=INFO, stdout\n"
        "log4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
        "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
        "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        "log4j.logger.kafka.request.logger=WARN\n"
        "log4j.logger.org.apache.kafka=WARN\n"
    )
    return conf


def _java() -> str:
    java = shutil.which("java")
    if not java:
        raise StackError(
            "Java not found: Kafka needs a Java 17 runtime (apt-get install openjdk-17-jre)"
        )
    return java


def _spawn(stack: Stack, svc: Service, cmd: list[str]) -> None:
    for sub in ("run", "logs"):
        (stack.home / sub).mkdir(parents=True, exist_ok=True)
    with open(stack.log_file(svc), "ab") as log:
        # A new session: the servers outlive this command and ignore the terminal's Ctrl-C.
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
    stack.pid_file(svc).write_text(f"{proc.pid}\n")


def _start_kafka(stack: Stack, svc: Service, say: Say) -> None:
    java = _java()
    libs = ensure_kafka_jars(stack, say)
    conf = _kafka_config(stack, svc)
    cp = f"{libs}/*"
    if not (stack.home / "kafka" / "data" / "meta.properties").exists():
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        done = subprocess.run(
            [
                java,
                "-cp",
                cp,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(conf),
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{done.stdout}{done.stderr}")
    heap = os.environ.get("KAFKA_HEAP_OPTS", "-Xms256m -Xmx1g").split()
    _spawn(
        stack,
        svc,
        [
            java,
            *heap,
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{stack.home / 'kafka' / 'log4j.properties'}",
            "-cp",
            cp,
            "kafka.Kafka",
            str(conf),
        ],
    )


def _start_redis(stack: Stack, svc: Service, say: Say) -> None:
    binary = _ensure_redis_binary(say)
    rdir = stack.home / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    _spawn(
        stack,
        svc,
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(svc.port),
            "--dir",
            str(rdir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--daemonize",
            "no",
            "--save",
            "",
            # Neighbour lists are updated ~20 times per event; as compact listpacks every update
            # re-parses the list (measured 1.6x slower ingestion than skiplists at 100 entries).
            "--zset-max-listpack-entries",
            "0",
            "--protected-mode",
            "yes",
        ],
    )


def _kafka_ready(svc: Service) -> bool:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": f"{svc.host}:{svc.port}", "log_level": 0})
    try:
        admin.list_topics(timeout=2)
        return True
    except Exception:  # noqa: BLE001 - any failure here just means "not ready yet"
        return False


def _redis_ready(svc: Service) -> bool:
    import redis

    try:
        return bool(redis.Redis(host=svc.host, port=svc.port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


READY = {"kafka": _kafka_ready, "redis": _redis_ready}
START = {"kafka": _start_kafka, "redis": _start_redis}


def up(settings: Settings, say: Say = print) -> None:
    """Start Redis and Kafka unless they already run (ours); wait until both answer."""
    stack = Stack(settings)
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
        if svc.name == "kafka" and _port_open("127.0.0.1", settings.kafka_controller_port):
            raise StackError(
                f"port {settings.kafka_controller_port} (Kafka controller) is in use; "
                f"set {ENV['kafka_controller_port']}"
            )
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
