"""The one frozen Settings object: every tunable, its env name and default; the only env reader."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from stream_reco.errors import ConfigError

EVENT_TYPES = ("view", "click", "add_to_cart", "remove_from_cart", "purchase")
DEFAULT_WEIGHTS = "view=1,click=2,add_to_cart=4,remove_from_cart=0,purchase=8"


def _weights(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in EVENT_TYPES:
            raise ConfigError(
                f"STREAM_RECO_WEIGHTS: {part!r} is not TYPE=NUMBER with TYPE in {EVENT_TYPES}"
            )
        out[name.strip()] = float(value)
    missing = set(EVENT_TYPES) - set(out)
    if missing:
        raise ConfigError(f"STREAM_RECO_WEIGHTS: no weight for {sorted(missing)}")
    return out


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (use true/false)")


@dataclass(frozen=True)
class Settings:
    """Every setting of stream-reco; `ENV` maps each field to its environment variable."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    topic_events: str = "reco-events"
    topic_catalog: str = "reco-catalog"
    topic_requests: str = "reco-requests"
    topic_responses: str = "reco-responses"
    topic_deadletter: str = "reco-deadletter"
    partitions: int = 4
    app_id: str = "stream-reco"
    key_prefix: str = "reco"
    web_port: int = 6066
    session_ttl_s: int = 1800
    dedup_ttl_s: int = 86400
    session_max_events: int = 50
    neighbours_max: int = 100
    popular_max: int = 10000
    cooc_window: int = 10
    cooc_half_life_s: float = 7 * 86400.0
    pop_half_life_s: float = 86400.0
    weights: Mapping[str, float] = field(default_factory=lambda: _weights(DEFAULT_WEIGHTS))
    default_k: int = 10
    max_k: int = 100
    require_catalog: bool = True
    batch_max: int = 500
    batch_within_ms: int = 5
    home: Path = Path(".stream-reco")
    kafka_controller_port: int = 9093

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: os.environ); unknown values fail with a fix hint."""
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            name = ENV[f.name]
            if name not in env:
                continue
            raw = env[name]
            try:
                kwargs[f.name] = _parse(f.name, raw)
            except (ValueError, ConfigError) as exc:
                raise ConfigError(f"{name}={raw!r}: {exc}") from exc
        return cls(**kwargs).validate()  # type: ignore[arg-type]

    def validate(self) -> Settings:
        """Check ranges and shapes; raise ConfigError naming the env variable to fix."""
        problems: list[str] = []
        positive = (
            "partitions session_ttl_s dedup_ttl_s session_max_events neighbours_max "
            "popular_max cooc_window default_k max_k batch_max web_port kafka_controller_port"
        ).split()
        for name in positive:
            if getattr(self, name) <= 0:
                problems.append(f"{ENV[name]} must be > 0")
        for name in ("cooc_half_life_s", "pop_half_life_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{ENV[name]} must be a positive number of seconds")
        if self.batch_within_ms < 0:
            problems.append(f"{ENV['batch_within_ms']} must be >= 0")
        if self.default_k > self.max_k:
            problems.append(f"{ENV['default_k']} must be <= {ENV['max_k']}")
        if self.dedup_ttl_s < self.session_ttl_s:
            # A redelivery after the dedup key expired would apply an event twice.
            problems.append(f"{ENV['dedup_ttl_s']} must be >= {ENV['session_ttl_s']}")
        if urlparse(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            problems.append(f"{ENV['redis_url']} must look like redis://host:port/db")
        if not self.kafka_bootstrap_servers.strip():
            problems.append(f"{ENV['kafka_bootstrap_servers']} must not be empty")
        if any(w < 0 for w in self.weights.values()):
            problems.append(f"{ENV['weights']} must be >= 0")
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return self

    def weight(self, event_type: str) -> float:
        return float(self.weights[event_type])

    @property
    def topics(self) -> tuple[str, ...]:
        return (
            self.topic_events,
            self.topic_catalog,
            self.topic_requests,
            self.topic_responses,
            self.topic_deadletter,
        )

    def to_env(self) -> dict[str, str]:
        """The env that reproduces these settings in a child process (worker, tests)."""
        out: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "weights":
                value = ",".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[ENV[f.name]] = str(value)
        return out


ENV: dict[str, str] = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "redis_url": "REDIS_URL",
    **{
        f.name: "STREAM_RECO_" + f.name.upper()
        for f in dataclasses.fields(Settings)
        if f.name not in ("kafka_bootstrap_servers", "redis_url")
    },
}


def _parse(name: str, raw: str) -> object:
    default = next(f for f in dataclasses.fields(Settings) if f.name == name)
    if name == "weights":
        return _weights(raw)
    if name == "home":
        return Path(raw)
    kind = type(default.default)
    if kind is bool:
        return _bool(raw)
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    return raw
