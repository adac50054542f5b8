"""What the figures were measured on: hardware, versions, settings and the bench's plan."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import confluent_kafka
import redis

from stream_reco.config import ENV, Settings
from stream_reco.errors import StackError

# Credentials can live in the Redis URL; local paths say nothing about performance.
_LEFT_OUT = {"redis_url", "home", "rules_file"}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _kafka_version(settings: Settings) -> str:
    """The broker's version as the local stack installed it; unknown for a remote cluster
    (Kafka's protocol does not report it)."""
    libs = settings.home.resolve() / "kafka" / "libs"
    for jar in sorted(libs.glob("kafka_2.13-*.jar")):
        found = re.fullmatch(r"kafka_2\.13-([\d.]+)\.jar", jar.name)
        if found:
            return found.group(1)
    return "unknown"


def _redis_version(settings: Settings) -> str:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return str(client.info("server").get("redis_version", "unknown"))
    except redis.RedisError as exc:
        raise StackError(
            f"Redis ({ENV['redis_url']}) does not answer: {exc} "
            "(start the local stack with `stream-reco stack up`, or drop --no-stack)"
        ) from exc
    finally:
        client.close()


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def settings_facts(settings: Settings) -> dict[str, Any]:
    """Every setting that shapes performance, as plain JSON values."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(settings):
        if f.name in _LEFT_OUT or not f.repr:  # nor any secret
            continue
        value = getattr(settings, f.name)
        out[f.name] = dict(value) if f.name == "weights" else value
    return out


def machine(settings: Settings, plan: dict[str, Any]) -> dict[str, Any]:
    """The `machine` object of the report."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gb": _ram_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "kafka": _kafka_version(settings),
        "redis": _redis_version(settings),
        "faust": _package("faust-streaming"),
        "confluent_kafka": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "redis_py": redis.__version__,
        "aiohttp": _package("aiohttp"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "settings": settings_facts(settings),
        "bench": plan,
    }
