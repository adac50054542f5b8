"""Tests for Settings: defaults, env parsing, validation messages and the to_env round trip."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest

from stream_reco.config import ENV, EVENT_TYPES, Settings
from stream_reco.errors import ConfigError

WEIGHTS = "view=1,click=2,add_to_cart=4,remove_from_cart=0,purchase=8"


def weights(**override: str) -> str:
    values = dict(part.split("=") for part in WEIGHTS.split(",")) | override
    return ",".join(f"{k}={v}" for k, v in values.items())


def test_defaults_are_valid_and_documented() -> None:
    s = Settings.from_env({})
    assert s == Settings()
    assert s.topics == (
        "reco-events",
        "reco-catalog",
        "reco-requests",
        "reco-responses",
        "reco-deadletter",
        "reco-config",
        "reco-privacy",
    )
    assert s.weight("purchase") == 8.0 and s.weight("remove_from_cart") == 0.0
    assert set(s.weights) == set(EVENT_TYPES)
    assert set(ENV) == {f.name for f in dataclasses.fields(Settings)}
    assert ENV["redis_url"] == "REDIS_URL"
    assert ENV["kafka_bootstrap_servers"] == "KAFKA_BOOTSTRAP_SERVERS"
    assert ENV["max_k"] == "STREAM_RECO_MAX_K"


def test_from_env_does_not_read_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_RECO_MAX_K", "17")
    assert Settings.from_env({}).max_k == 100
    assert Settings.from_env().max_k == 17


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("partitions", " 12 ", 12),
        ("cooc_half_life_s", "3600.5", 3600.5),
        ("require_catalog", "false", False),
        ("require_catalog", "Off", False),
        ("require_catalog", "YES", True),
        ("require_catalog", "1", True),
        ("home", "/tmp/reco home", Path("/tmp/reco home")),
        ("redis_url", "rediss://cache:6380/2", "rediss://cache:6380/2"),
        ("topic_events", "shop.events-v2", "shop.events-v2"),
    ],
)
def test_env_parsing_by_type(name: str, raw: str, expected: object) -> None:
    value = getattr(Settings.from_env({ENV[name]: raw}), name)
    assert value == expected
    assert type(value) is type(expected)


def test_env_weights_parse_with_spaces_and_any_order() -> None:
    raw = " purchase = 10 , view=.5,click=1,add_to_cart=3,remove_from_cart=0,"
    s = Settings.from_env({"STREAM_RECO_WEIGHTS": raw})
    assert dict(s.weights) == {
        "view": 0.5,
        "click": 1.0,
        "add_to_cart": 3.0,
        "remove_from_cart": 0.0,
        "purchase": 10.0,
    }


def test_weights_are_read_only() -> None:
    s = Settings()
    with pytest.raises(TypeError):
        s.weights["view"] = 100.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_k = 5  # type: ignore[misc]


def test_weights_passed_as_dict_are_copied() -> None:
    given = {t: 1.0 for t in EVENT_TYPES}
    s = Settings(weights=given)
    given["view"] = 99.0
    assert s.weight("view") == 1.0
    assert s == Settings(weights={t: 1.0 for t in EVENT_TYPES})
    assert s != Settings()


@pytest.mark.parametrize(
    ("name", "raw", "hint"),
    [
        ("partitions", "four", "invalid literal"),
        ("partitions", "", "invalid literal"),
        ("pop_half_life_s", "a day", "could not convert"),
        ("require_catalog", "maybe", "not a boolean"),
        ("home", "  ", "must not be empty"),
        ("weights", "view=1,view=2", "given twice"),
        ("weights", "sniff=1," + WEIGHTS, "'sniff=1' is not TYPE=NUMBER"),
        ("weights", weights(click="lots"), "'click=lots'"),
    ],
)
def test_unparseable_env_names_variable_once(name: str, raw: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env({ENV[name]: raw})
    message = str(err.value)
    assert message.startswith(f"{ENV[name]}={raw!r}: ")
    assert hint in message
    assert message.count(ENV[name]) == 1


@pytest.mark.parametrize(
    "env",
    [
        {"STREAM_RECO_PARTITIONS": "0"},
        {"STREAM_RECO_SESSION_TTL_S": "-1"},
        {"STREAM_RECO_SESSION_MAX_EVENTS": "0"},
        {"STREAM_RECO_NEIGHBOURS_MAX": "0"},
        {"STREAM_RECO_POPULAR_MAX": "0"},
        {"STREAM_RECO_COOC_WINDOW": "0"},
        {"STREAM_RECO_BATCH_MAX": "0"},
        {"STREAM_RECO_DEFAULT_K": "0"},
        {"STREAM_RECO_WEB_PORT": "0"},
        {"STREAM_RECO_WEB_PORT": "65536"},
        {"STREAM_RECO_KAFKA_CONTROLLER_PORT": "70000"},
        {"STREAM_RECO_REDIS_CLUSTER_PORT": "55534"},  # its bus ports would pass 65535
        {"STREAM_RECO_REDIS_CLUSTER_PORT": "0"},
        {"STREAM_RECO_COOC_HALF_LIFE_S": "0"},
        {"STREAM_RECO_POP_HALF_LIFE_S": "nan"},
        {"STREAM_RECO_POP_HALF_LIFE_S": "inf"},
        {"STREAM_RECO_BATCH_WITHIN_MS": "-1"},
        {"STREAM_RECO_MAX_K": "1001"},
        {"STREAM_RECO_DEFAULT_K": "20", "STREAM_RECO_MAX_K": "10"},
        {"REDIS_URL": "http://127.0.0.1:6379"},
        # A cluster has database 0 only, over TCP.
        {"STREAM_RECO_REDIS_CLUSTER": "true", "REDIS_URL": "redis://127.0.0.1:7000/2"},
        {"STREAM_RECO_REDIS_CLUSTER": "true", "REDIS_URL": "unix:///tmp/redis.sock"},
        {"KAFKA_BOOTSTRAP_SERVERS": " "},
        {"STREAM_RECO_TOPIC_EVENTS": ""},
        {"STREAM_RECO_TOPIC_CATALOG": "reco catalog"},
        {"STREAM_RECO_TOPIC_REQUESTS": "reco/requests"},
        {"STREAM_RECO_APP_ID": "stream reco"},
        {"STREAM_RECO_APP_ID": ""},
        {"STREAM_RECO_KEY_PREFIX": ""},
        {"STREAM_RECO_KEY_PREFIX": "my reco"},
        {"STREAM_RECO_KEY_PREFIX": "reco{x}"},
        {"STREAM_RECO_WEIGHTS": "view=1,click=2"},
        {"STREAM_RECO_WEIGHTS": weights(view="-1")},
        {"STREAM_RECO_WEIGHTS": weights(click="nan")},
        {"STREAM_RECO_WEIGHTS": weights(purchase="inf")},
    ],
)
def test_each_validation_error_names_its_variable(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    message = str(err.value)
    assert message.startswith("invalid settings: ")
    assert list(env)[-1] in message


def test_a_retired_variable_is_refused_with_what_replaced_it() -> None:
    with pytest.raises(ConfigError, match="STREAM_RECO_DEDUP_TTL_S is no longer read: .*offset"):
        Settings.from_env({"STREAM_RECO_DEDUP_TTL_S": "86400"})


def test_ports_at_the_edges_are_valid() -> None:
    s = Settings.from_env(
        {"STREAM_RECO_WEB_PORT": "1", "STREAM_RECO_KAFKA_CONTROLLER_PORT": "65535"}
    )
    assert (s.web_port, s.kafka_controller_port) == (1, 65535)
    assert Settings.from_env({"STREAM_RECO_MAX_K": "1000"}).max_k == 1000


def test_duplicate_topics_name_both_variables() -> None:
    with pytest.raises(ConfigError) as err:
        Settings(topic_responses="out", topic_deadletter="out").validate()
    message = str(err.value)
    assert "STREAM_RECO_TOPIC_RESPONSES" in message
    assert "STREAM_RECO_TOPIC_DEADLETTER" in message
    assert "STREAM_RECO_TOPIC_EVENTS" not in message


def test_weights_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"STREAM_RECO_WEIGHTS.*not \['view'\]"):
        Settings(weights={"view": 1.0}).validate()
    with pytest.raises(ConfigError, match="STREAM_RECO_WEIGHTS.*'sniff'"):
        Settings(weights=dict(Settings().weights) | {"sniff": 1.0}).validate()
    with pytest.raises(ConfigError, match=r"STREAM_RECO_WEIGHTS.*\['click'\]"):
        Settings(weights={t: float("nan") if t == "click" else 1.0 for t in EVENT_TYPES}).validate()
    with pytest.raises(ConfigError, match="STREAM_RECO_HOME"):
        Settings(home="").validate()  # type: ignore[arg-type]


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        Settings(partitions=0, web_port=0, key_prefix="").validate()
    message = str(err.value)
    for name in ("partitions", "web_port", "key_prefix"):
        assert ENV[name] in message


def test_to_env_round_trips_defaults() -> None:
    s = Settings()
    env = s.to_env()
    assert set(env) == set(ENV.values())
    assert all(isinstance(v, str) for v in env.values())
    assert Settings.from_env(env) == s


def test_to_env_round_trips_a_modified_settings() -> None:
    s = Settings(
        topic_events="t.events",
        partitions=7,
        require_catalog=False,
        cooc_half_life_s=0.1 + 0.2,
        weights={
            "view": 0.1,
            "click": 1e-7,
            "add_to_cart": 3,
            "remove_from_cart": 0,
            "purchase": 9.5,
        },
        home=Path("/var/lib/stream reco"),
        max_k=1000,
        web_port=8080,
    ).validate()
    env = s.to_env()
    assert env["STREAM_RECO_REQUIRE_CATALOG"] == "false"
    again = Settings.from_env(env)
    assert again == s
    assert again.cooc_half_life_s == 0.1 + 0.2
    assert again.weight("click") == 1e-7


def test_settings_are_hashable_and_picklable() -> None:
    s = Settings(weights=dict(Settings().weights) | {"view": 0.5})
    assert pickle.loads(pickle.dumps(s)) == s
    assert copy.deepcopy(s) == s
    assert hash(s) == hash(Settings.from_env(s.to_env()))
    assert len({s, Settings(), Settings()}) == 2
    assert dataclasses.replace(s, max_k=5).weights == s.weights
