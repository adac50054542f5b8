"""Security settings: validated, turned into client options, and never shown."""

from __future__ import annotations

import dataclasses

import pytest

from stream_reco import stack
from stream_reco.bench.machine import settings_facts
from stream_reco.config import Settings
from stream_reco.errors import ConfigError, StackError
from stream_reco.security import kafka_options, masked_url

SASL = {
    "STREAM_RECO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "STREAM_RECO_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "STREAM_RECO_KAFKA_SASL_USERNAME": "reco",
    "STREAM_RECO_KAFKA_SASL_PASSWORD": "s3cret-kafka",
    "STREAM_RECO_HTTP_TOKEN": "s3cret-token",
    "REDIS_URL": "rediss://app:s3cret-redis@10.0.0.5:6380/0?ssl_ca_certs=/etc/ca.pem",
}


def test_no_secret_is_shown_by_repr_or_in_a_report() -> None:
    s = Settings.from_env(SASL)
    for shown in (repr(s), str(s), str(settings_facts(s))):
        assert "s3cret" not in shown
    assert "rediss://app:***@10.0.0.5:6380/0?ssl_ca_certs=/etc/ca.pem" in repr(s)
    assert "kafka_sasl_username='reco'" in repr(s)
    assert s.to_env()["STREAM_RECO_KAFKA_SASL_PASSWORD"] == "s3cret-kafka"  # for child processes


def test_kafka_options_carry_the_protocol_and_the_credentials() -> None:
    opts = kafka_options(Settings.from_env(SASL))
    assert opts["security.protocol"] == "SASL_SSL"
    assert opts["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert (opts["sasl.username"], opts["sasl.password"]) == ("reco", "s3cret-kafka")
    assert "ssl.ca.location" not in opts  # none set: the system's CAs
    plain = kafka_options(Settings())
    assert plain == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"STREAM_RECO_KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
        (
            {"STREAM_RECO_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "KAFKA_SASL_USERNAME and STREAM_RECO_KAFKA_SASL_PASSWORD are needed",
        ),
        ({**SASL, "STREAM_RECO_KAFKA_SASL_MECHANISM": "MD5"}, "KAFKA_SASL_MECHANISM must be"),
        ({"STREAM_RECO_KAFKA_SSL_CA_FILE": "/no/such/ca.pem"}, "no such file"),
    ],
)
def test_bad_security_settings_are_refused_naming_the_variable(
    env: dict[str, str], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        Settings.from_env(env)


def test_a_refusal_does_not_quote_the_password() -> None:
    env = {**SASL, "STREAM_RECO_KAFKA_SASL_MECHANISM": "MD5"}
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert "s3cret" not in str(err.value)


def test_masked_url_keeps_everything_but_the_password() -> None:
    assert masked_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert masked_url("redis://:pw@h:1/2") == "redis://:***@h:1/2"
    assert masked_url("rediss://u:pw@h/0?x=1") == "rediss://u:***@h/0?x=1"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@[bad:6379/0", "redis://:***@[bad:6379/0"),  # not even a URL: no raise
        ("redis://h/0?p%61ssword=sec&x=1", "redis://h/0?p%61ssword=***&x=1"),
        ("redis://:pw@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("redis://:pw@h:99999/0", "redis://:***@h:99999/0"),
    ],
)
def test_masked_url_never_raises_and_finds_every_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown
    assert "pw" not in repr(Settings(redis_url=url)) and "sec&" not in repr(Settings(redis_url=url))


def test_a_malformed_redis_url_is_a_config_error_not_a_traceback() -> None:
    with pytest.raises(ConfigError, match="REDIS_URL must look like"):
        Settings.from_env({"REDIS_URL": "redis://:pw@[bad:6379/0"})


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "plain listener"),
        ({"kafka_sasl_port": 9093}, "give the SASL listener a port of its own"),
        ({"kafka_sasl_port": 9092}, "give the SASL listener a port of its own"),
    ],
)
def test_the_local_stack_refuses_settings_it_cannot_start_with(
    changes: dict[str, object], says: str
) -> None:
    s = dataclasses.replace(Settings(), **changes)  # type: ignore[arg-type]
    with pytest.raises(StackError, match=says):
        stack.up(s, say=lambda _: None)  # refused before anything is started
