"""How each local server is installed, configured, started and probed (Kafka via Maven, Redis)."""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from stream_reco.config import Settings
from stream_reco.errors import StackError

POM = Path(__file__).resolve().parent.parent / "deploy" / "local" / "pom.xml"
LOCAL_HOSTS = ("127.0.0.1", "localhost")
START_TIMEOUT_S = 90.0
OVERRIDES = "overrides.properties"  # in the stack's kafka folder: broker settings of the operator
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


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


# Redis blanks its command line for a moment while it retitles itself at start: read as "not
# ours", a server just started would be left running by a `down` right after a failed `up`.
BLANK_READS = 50
BLANK_PAUSE_S = 0.005


def our_pid(stack: Stack, svc: Service) -> int | None:
    """The pid we started for `svc`, if that process is still alive and still ours."""
    try:
        pid = int(stack.pid_file(svc).read_text().strip())
    except (OSError, ValueError):
        return None
    for _ in range(BLANK_READS):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if cmdline:
            return pid if svc.marker.encode() in cmdline else None
        time.sleep(BLANK_PAUSE_S)  # retitling; a zombie stays blank, and is not ours
    return None


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


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
    ctrl, sasl = stack.settings.kafka_controller_port, stack.settings.kafka_sasl_port
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{ctrl}",
        # A second listener with SASL/SCRAM, for trying authenticated clients locally: its
        # users are made with the admin API (stream-reco's tests make their own).
        "listeners": f"PLAINTEXT://127.0.0.1:{svc.port},CONTROLLER://127.0.0.1:{ctrl},"
        f"SASL://127.0.0.1:{sasl}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{svc.port},SASL://127.0.0.1:{sasl}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
        "SASL:SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512",
        "listener.name.sasl.scram-sha-256.sasl.jaas.config": scram,
        "listener.name.sasl.scram-sha-512.sasl.jaas.config": scram,
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
    # The operator's own broker settings (another listener, TLS, quotas) replace ours by key.
    props.update(_properties(kdir / OVERRIDES))
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


def _properties(path: Path) -> dict[str, str]:
    """A properties file read as Java reads one: `key=value`, `key: value` or `key value`; a
    line ending in an unescaped `\\` goes on on the next (a JAAS config is often split so);
    blank lines and `#`/`!` comments skipped. None when there is no such file."""
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    lines = iter(enumerate(path.read_text().split("\n"), 1))
    for n, raw in lines:
        line = raw.lstrip().rstrip("\r")
        if not line or line.startswith(("#", "!")):
            continue
        while _continued(line):
            line = line[:-1] + next(lines, (n, ""))[1].lstrip().rstrip("\r")
        key, value = _split(line)
        if not key:
            # The line is not quoted back: it may hold a secret.
            raise StackError(f"{path}:{n}: expected key=value (or key: value)")
        out[key] = value  # as Java keeps it: an escaped trailing space stays escaped
    return out


def _continued(line: str) -> bool:
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1  # an odd run: the last is unescaped


def _split(line: str) -> tuple[str, str]:
    """The key ends at the first unescaped `=`, `:` or whitespace; then whitespace and at most
    one `=` or `:` separate it from the value."""
    n, escaped = 0, False
    while n < len(line):
        ch = line[n]
        if not escaped and (ch in "=:" or ch.isspace()):
            break
        escaped = ch == "\\" and not escaped
        n += 1
    rest = line[n:].lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return line[:n], rest


def _java() -> str:
    java = shutil.which("java")
    if not java:
        raise StackError(
            "Java not found: Kafka needs a Java 17 runtime (apt-get install openjdk-17-jre)"
        )
    return java


def _spawn(stack: Stack, svc: Service, cmd: list[str]) -> None:
    # Redis in the C collation: its Lua compares strings with it (ties broken by id), and the
    # engine's Python port of those reads compares code points. Kafka keeps the user's locale.
    env = {**os.environ, "LC_ALL": "C"} if "redis" in Path(cmd[0]).name else None
    for sub in ("run", "logs"):
        (stack.home / sub).mkdir(parents=True, exist_ok=True)
    with open(stack.log_file(svc), "ab") as log:
        # A new session: the servers outlive this command and ignore the terminal's Ctrl-C.
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )
    stack.pid_file(svc).write_text(f"{proc.pid}\n")


def _cluster_id() -> str:
    """A random KRaft cluster id; never one starting with '-', which the storage tool would
    take for an option (as Kafka's own ids avoid)."""
    while (made := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))[0] == "-":
        pass
    return made


def _start_kafka(stack: Stack, svc: Service, say: Say) -> None:
    java = _java()
    libs = ensure_kafka_jars(stack, say)
    conf = _kafka_config(stack, svc)
    cp = f"{libs}/*"
    if not (stack.home / "kafka" / "data" / "meta.properties").exists():
        cluster_id = _cluster_id()
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
    heap = stack.settings.kafka_heap_opts.split()
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
    except Exception:  # any failure here just means "not ready yet"
        return False


def _redis_ready(svc: Service) -> bool:
    import redis

    try:
        return bool(redis.Redis(host=svc.host, port=svc.port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


READY = {"kafka": _kafka_ready, "redis": _redis_ready}
START = {"kafka": _start_kafka, "redis": _start_redis}
