"""The one frozen Settings object: every tunable, its env name and default; the only env reader."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from stream_reco import security
from stream_reco.errors import ConfigError

EVENT_TYPES = ("view", "click", "add_to_cart", "remove_from_cart", "purchase")
DEFAULT_WEIGHTS = "view=1,click=2,add_to_cart=4,remove_from_cart=0,purchase=8"
TOPIC_FIELDS = tuple(
    f"topic_{t}"
    for t in ("events", "catalog", "requests", "responses", "deadletter", "config", "privacy")
)
# What a worker process does: everything, or one side of the split that keeps answers from
# queueing behind ingestion (docs/performance.md).
ROLES = ("all", "ingest", "query")
MAX_K = 1000  # a response longer than this is a scrape, not a recommendation
BOT_LIMITS = tuple(
    f"bot_max_{n}"
    for n in ("events_per_min", "new_items_per_min", "carts_per_min", "repeats", "events_per_s")
)
# Kafka's own rule for topic names; the Faust app id prefixes its internal topics too.
_KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
# Redis glob and hash-tag characters would break SCAN patterns and cluster slot placement.
_KEY_PREFIX = re.compile(r"[^\s{}*?\[\]\\]+")


class Weights(Mapping[str, float]):
    """Read-only weight per event type: hashable and picklable, so Settings is truly frozen."""

    __slots__ = ("_pairs", "_lookup")

    def __init__(self, weights: Mapping[str, float]) -> None:
        self._pairs = tuple((name, float(w)) for name, w in weights.items())
        self._lookup = dict(self._pairs)  # read once per event: no rebuild per lookup

    def __getitem__(self, key: str) -> float:
        return self._lookup[key]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __hash__(self) -> int:
        return hash(frozenset(self._pairs))

    def __repr__(self) -> str:
        return f"Weights({dict(self._pairs)!r})"


def _weights(text: str) -> Weights:
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or name not in EVENT_TYPES:
            raise ValueError(f"{part!r} is not TYPE=NUMBER with TYPE in {EVENT_TYPES}")
        if name in out:
            raise ValueError(f"{name!r} is given twice")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: {value!r} is not a number") from None
    return Weights(out)  # validate() names the types left out


# Candidate features the ranker scores (ranking/blend.py holds their default weights).
FEATURES = (
    "seq",
    "cooc",
    "sknn",
    "in_session",
    "session_share",
    "last",
    "similar",
    "trending",
    "pop",
    "new",  # cold start: catalogue order, for shops with too little behaviour yet
    "profile",  # a returning user's profile items (candidates/profile.py)
    "profile_co",  # what goes with them
    # Session context of the head candidates (ranking/context.py): weight 0 in the fixed blend.
    "category_match",
    "price_match",
    "margin",
    "source_cart",
    "source_recency",
)


def blend_overrides(text: str) -> dict[str, float]:
    """`FEATURE=WEIGHT,...` over the built-in blend; weight 0 switches a source off."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = (s.strip() for s in part.partition("="))
        if not sep or name not in FEATURES:
            raise ValueError(f"{part!r} is not FEATURE=NUMBER with FEATURE in {FEATURES}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: {value!r} is not a number") from None
        if not (math.isfinite(out[name]) and out[name] >= 0):
            raise ValueError(f"{part!r}: weights must be finite and >= 0")
    return out


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"{text!r} is not a boolean (use true/false)")
    return low in ("1", "true", "yes", "on")


# Variables an earlier version read: refused, so nobody believes a setting still acts.
RETIRED = {
    "STREAM_RECO_DEDUP_TTL_S": (
        "a redelivery is known by its Kafka offset, from anywhere in the topic's retention, and "
        "a re-sent event by its id among its session's last events (docs/contract.md, "
        "Deduplication)"
    ),
}


@dataclass(frozen=True)
class Settings:
    """Every setting of stream-reco; `ENV` maps each field to its environment variable."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # REDIS_URL names one node of a Redis Cluster, which then serves the whole store.
    redis_cluster: bool = False
    topic_events: str = "reco-events"
    topic_catalog: str = "reco-catalog"
    topic_requests: str = "reco-requests"
    topic_responses: str = "reco-responses"
    topic_deadletter: str = "reco-deadletter"
    topic_config: str = "reco-config"
    # Right-to-be-forgotten requests (docs/privacy.md): key the user id or session:<id>.
    topic_privacy: str = "reco-privacy"
    partitions: int = 4
    app_id: str = "stream-reco"
    key_prefix: str = "reco"
    web_port: int = 6066
    # Where the web server listens: 127.0.0.1 keeps it on the host; in a container or pod,
    # 0.0.0.0, so probes, Prometheus and the dashboard reach it (docs/deployment.md).
    web_bind: str = "127.0.0.1"
    session_ttl_s: int = 1800
    session_max_events: int = 50
    session_max_items: int = 500
    neighbours_max: int = 100
    popular_max: int = 10000
    cooc_window: int = 5
    seq_window: int = 3
    sknn_sessions_per_item: int = 20
    sknn_neighbours: int = 30
    sknn_ttl_s: int = 7 * 86400
    cooc_half_life_s: float = 7 * 86400.0
    pop_half_life_s: float = 86400.0
    # Returning users (storage/profiles.py): what a signed-in user's profile keeps.
    profile_max_items: int = 100
    # Every session a user had within the session-kNN TTL (7 days), for a human: `forget --user`
    # finds them here, without scanning the store.
    profile_max_sessions: int = 200
    profile_half_life_s: float = 30 * 86400.0
    profile_ttl_s: int = 90 * 86400
    weights: Mapping[str, float] = field(default_factory=lambda: _weights(DEFAULT_WEIGHTS))
    default_k: int = 10
    max_k: int = 100
    require_catalog: bool = True
    batch_max: int = 500
    batch_within_ms: int = 5
    home: Path = Path(".stream-reco")
    kafka_controller_port: int = 9093
    kafka_sasl_port: int = 9095  # the local stack's SASL/SCRAM listener
    redis_cluster_port: int = 7000  # the first of the local stack's Redis Cluster nodes
    max_future_s: int = 3600
    kafka_heap_opts: str = "-Xms256m -Xmx1g"
    rules_file: str = ""
    blend: str = ""
    budget_ms: float = 50.0
    learned_ranker: bool = True
    model_min_examples: int = 200
    model_lr: float = 0.05
    examples_max: int = 5000
    stream_examples_per_s: float = 5.0
    refresh_s: float = 1.0
    role: str = "all"
    answer_max_lag_ms: int = 5000
    # Experiments (docs/experiments.md): how long, in event time, a shown item can still earn
    # its variant a click, cart addition or purchase without a recommendation_id.
    attribution_window_s: int = 1800
    # Bot and abuse guard (bots.py, docs/reliability.md): a session past any limit, in event
    # time, is flagged and stops teaching shared state; 0 switches one rule off.
    bot_guard: bool = True
    bot_max_events_per_min: int = 120
    bot_max_new_items_per_min: int = 90
    bot_max_carts_per_min: int = 30
    bot_max_repeats: int = 50
    bot_max_events_per_s: int = 8
    # Connections (security.py): how Kafka clients authenticate and encrypt, and the HTTP
    # views' token. Redis takes its password and TLS in REDIS_URL (rediss://:password@...).
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "SCRAM-SHA-256"
    kafka_sasl_username: str = ""
    kafka_sasl_password: str = field(default="", repr=False)
    kafka_ssl_ca_file: str = ""
    http_token: str = field(default="", repr=False)
    # Privacy (docs/privacy.md): the secret that turns every user id into a keyed hash before
    # anything stores or uses it (empty: ids as sent), and how many forget audit records stay.
    user_id_key: str = field(default="", repr=False)
    audit_max: int = 10000

    def __repr__(self) -> str:
        # Secrets never reach a log line or a report: repr is what tracebacks and logs show.
        shown = security.shown(self)
        return f"Settings({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def __post_init__(self) -> None:
        # A read-only copy: nobody can change the weights of a shared, frozen Settings.
        object.__setattr__(self, "weights", Weights(self.weights))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: os.environ); unknown values fail with a fix hint."""
        env = os.environ if env is None else env
        for name, why in RETIRED.items():
            if name in env:
                raise ConfigError(f"{name} is no longer read: {why}; remove it")
        kwargs: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            name = ENV[f.name]
            if name not in env:
                continue
            raw = env[name]
            try:
                kwargs[f.name] = _parse(f.name, raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r}: {exc}") from exc
        return cls(**kwargs).validate()  # type: ignore[arg-type]

    def validate(self) -> Settings:
        """Check ranges and shapes; raise ConfigError naming the env variable to fix."""
        problems: list[str] = []
        positive = (
            "partitions session_ttl_s session_max_events session_max_items "
            "neighbours_max popular_max cooc_window seq_window sknn_sessions_per_item "
            "sknn_neighbours sknn_ttl_s "
            "default_k max_k batch_max cooc_half_life_s "
            "pop_half_life_s profile_max_items profile_max_sessions profile_half_life_s "
            "profile_ttl_s "
            "max_future_s budget_ms model_min_examples model_lr examples_max refresh_s "
            "answer_max_lag_ms attribution_window_s audit_max"
        ).split()
        for name in positive:
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                problems.append(f"{ENV[name]} must be > 0")
        if not (math.isfinite(self.stream_examples_per_s) and self.stream_examples_per_s >= 0):
            problems.append(f"{ENV['stream_examples_per_s']} must be >= 0 (0: none)")
        for name in ("web_port", "kafka_controller_port", "kafka_sasl_port"):
            if not 1 <= getattr(self, name) <= 65535:
                problems.append(f"{ENV[name]} must be a port number in 1..65535")
        # It and the two after it, each with its cluster bus port 10000 above.
        if not 1 <= self.redis_cluster_port <= 55533:
            problems.append(f"{ENV['redis_cluster_port']} must be a port number in 1..55533")
        if self.role not in ROLES:
            problems.append(f"{ENV['role']} must be one of {', '.join(ROLES)}")
        if not _listen_address(self.web_bind):
            problems.append(
                f"{ENV['web_bind']} must be an address to listen on, without a port or brackets: "
                "127.0.0.1, 0.0.0.0 (every IPv4 address), :: (every IPv6 one) or a host name"
            )
        for name in BOT_LIMITS:
            if getattr(self, name) < 0:
                problems.append(f"{ENV[name]} must be >= 0 (0: that rule off)")
        if self.batch_within_ms < 0:
            problems.append(f"{ENV['batch_within_ms']} must be >= 0")
        if self.max_k > MAX_K:
            problems.append(f"{ENV['max_k']} must be <= {MAX_K}")
        if self.default_k > self.max_k:
            problems.append(f"{ENV['default_k']} must be <= {ENV['max_k']}")
        try:
            scheme = urlparse(self.redis_url).scheme
        except ValueError:  # e.g. an unclosed [ of an IPv6 address
            scheme = ""
        if scheme not in ("redis", "rediss", "unix"):
            problems.append(f"{ENV['redis_url']} must look like redis://host:port/db")
        elif self.redis_cluster and (scheme == "unix" or _db(self.redis_url) not in ("", "0")):
            # A cluster has database 0 only and is reached over TCP.
            problems.append(
                f"with {ENV['redis_cluster']}, {ENV['redis_url']} must name a node over TCP "
                "with database 0 (redis://host:port/0)"
            )
        problems += security.problems(self, ENV)
        if not all(
            re.fullmatch(r"[^\s:,]+:\d{1,5}", server.strip())
            for server in self.kafka_bootstrap_servers.split(",")
        ):
            problems.append(f"{ENV['kafka_bootstrap_servers']} must be host:port[,host:port...]")
        for name in (*TOPIC_FIELDS, "app_id"):
            if not _KAFKA_NAME.fullmatch(getattr(self, name)):
                problems.append(f"{ENV[name]} must be 1-249 of the characters A-Z a-z 0-9 . _ -")
        same = [ENV[n] for n in TOPIC_FIELDS if self.topics.count(getattr(self, n)) > 1]
        if same:
            problems.append(f"{' and '.join(same)} must be distinct topics")
        if not _KEY_PREFIX.fullmatch(self.key_prefix):
            problems.append(f"{ENV['key_prefix']} must be non-empty, without spaces or {{}}*?[]\\")
        if not str(self.home).strip():
            problems.append(f"{ENV['home']} must not be empty")
        try:
            blend_overrides(self.blend)
        except ValueError as exc:
            problems.append(f"{ENV['blend']}: {exc}")
        if set(self.weights) != set(EVENT_TYPES):
            got = sorted(self.weights)
            problems.append(f"{ENV['weights']} must give exactly {EVENT_TYPES}, not {got}")
        bad = [k for k, w in self.weights.items() if not (math.isfinite(w) and w >= 0)]
        if bad:
            problems.append(f"{ENV['weights']} must be finite and >= 0 (check {sorted(bad)})")
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return self

    def isolated(self, tag: str, *, keys: bool = True) -> Settings:
        """The same settings on their own topics and consumer group (with `keys`, their own
        Redis key space too), so tests, replays and deployments can share one stack."""
        names = ("events", "catalog", "requests", "responses", "deadletter", "config", "privacy")
        changes: dict[str, object] = {
            "app_id": f"{self.app_id}-{tag}",
            **{f"topic_{t}": f"{getattr(self, f'topic_{t}')}-{tag}" for t in names},
        }
        if keys:
            changes["key_prefix"] = f"{self.key_prefix}-{tag}"
        return dataclasses.replace(self, **changes).validate()  # type: ignore[arg-type]

    @functools.cached_property
    def blend_overrides(self) -> dict[str, float]:
        return blend_overrides(self.blend)

    def weight(self, event_type: str) -> float:
        return float(self.weights[event_type])

    @property
    def faust_app_id(self) -> str:
        """The Faust app id and its consumer group (catalogue and rules): a query worker, which
        consumes neither, stays out of that group."""
        return f"{self.app_id}-query" if self.role == "query" else self.app_id

    @property
    def events_group(self) -> str:
        """The consumer group every worker that ingests shares the events topic in."""
        return f"{self.app_id}-events"

    @property
    def requests_group(self) -> str:
        """The consumer group every worker that answers shares the requests topic in."""
        return f"{self.app_id}-requests"

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(getattr(self, name) for name in TOPIC_FIELDS)

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


_SHARED = ("kafka_bootstrap_servers", "redis_url")  # the names Kafka and Redis tools use too
ENV: dict[str, str] = {
    f.name: ("" if f.name in _SHARED else "STREAM_RECO_") + f.name.upper()
    for f in dataclasses.fields(Settings)
}


def _db(url: str) -> str:
    """The database a redis:// URL names ("" when none)."""
    return urlparse(url).path.lstrip("/")


def _listen_address(bind: str) -> bool:
    """An IP address (v4 or v6) or a host name: what the web server can listen on."""
    try:
        ipaddress.ip_address(bind)
        return True
    except ValueError:
        return re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})", bind) is not None


def _parse(name: str, raw: str) -> object:
    if name == "weights":
        return _weights(raw)
    if name == "home":
        if not raw.strip():
            raise ValueError("must not be empty")
        return Path(raw)
    kind = type(Settings.__dataclass_fields__[name].default)
    if kind is bool:
        return _bool(raw)
    if kind is int:
        return int(raw)
    if kind is float:
        return float(raw)
    return raw
