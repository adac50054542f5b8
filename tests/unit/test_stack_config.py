"""The local stack's broker configuration: the operator's overrides file replaces by key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from stream_reco.config import Settings
from stream_reco.errors import StackError
from stream_reco.stack_servers import OVERRIDES, Stack, _cluster_id, _kafka_config


def _written(home: Path, overrides: str | None) -> dict[str, str]:
    stack = Stack(dataclasses.replace(Settings(), home=home))
    (home / "kafka").mkdir(parents=True, exist_ok=True)
    if overrides is not None:
        (home / "kafka" / OVERRIDES).write_text(overrides)
    conf = _kafka_config(stack, stack.kafka())
    return dict(line.split("=", 1) for line in conf.read_text().splitlines())


def test_overrides_replace_the_stacks_settings_by_key_and_add_new_ones(tmp_path: Path) -> None:
    before = _written(tmp_path, None)
    after = _written(
        tmp_path,
        "# a comment\n\n! another\nlog.retention.hours = 24\nssl.client.auth=required\n",
    )
    assert before["log.retention.hours"] == "168"
    assert after["log.retention.hours"] == "24"
    assert after["ssl.client.auth"] == "required"
    assert {
        k: v for k, v in after.items() if k not in ("log.retention.hours", "ssl.client.auth")
    } == {k: v for k, v in before.items() if k != "log.retention.hours"}


def test_a_line_without_a_key_is_refused_naming_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(StackError, match=r"overrides.properties:2: expected key=value") as err:
        _written(tmp_path, "a=b\n=s3cret\n")
    assert "s3cret" not in str(err.value)  # a line is never quoted back: it may hold a secret


def test_lines_are_read_as_java_reads_them(tmp_path: Path) -> None:
    jaas = "listener.name.sasl.scram-sha-256.sasl.jaas.config"
    after = _written(
        tmp_path,
        f"{jaas}=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        '    username="admin" \\\n'
        '    password="a=b";\n'
        "log.retention.hours: 24\n"
        "listeners PLAINTEXT://127.0.0.1:9092\n"  # whitespace separates too
        "ssl.key.password = s3:cret\n"
        "a=abc\\ \n"  # an escaped space ends the line: the next is a key of its own
        "b=2\n"
        "c=ends in two backslashes\\\\\n"  # escaped: not continued
        "d=4\n",
    )
    assert after[jaas] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="admin" password="a=b";'
    )
    assert after["log.retention.hours"] == "24"
    assert after["listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert after["ssl.key.password"] == "s3:cret"
    assert (after["a"], after["b"], after["d"]) == ("abc\\ ", "2", "4")
    assert after["c"] == "ends in two backslashes\\\\"
    assert after["inter.broker.listener.name"] == "PLAINTEXT"  # nothing swallowed


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    # One random id in 64 would: the storage tool then took it for an option and the stack
    # failed to start.
    made = [_cluster_id() for _ in range(5000)]
    assert all(len(m) == 22 and not m.startswith("-") for m in made)
    assert len(set(made)) == len(made)
