"""Kafka over TLS with SASL/PLAIN, and a Redis ACL user held to the worker's own keys."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis
import trustme
from cryptography.hazmat.primitives import serialization

from stream_reco import kafka_io
from stream_reco.bench.fleet import free_port
from stream_reco.config import Settings
from stream_reco.workers import start_worker, stop_worker
from tests.integration.conftest import applied_count, uid
from tests.integration.replays import applies_and_answers, own_stack

EVENTS = 500
PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule required"


@dataclasses.dataclass(frozen=True)
class TlsKafka:
    """A stack of the test's own whose Kafka has a SASL_SSL listener taking PLAIN users."""

    own: Settings
    port: int
    ca_file: Path
    user: str
    password: str


@pytest.fixture
def tls_kafka(settings: Settings, tmp_path: Path) -> Iterator[TlsKafka]:
    ca = trustme.CA()
    ca_file, pem = tmp_path / "ca.pem", tmp_path / "broker.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    issued = ca.issue_cert("127.0.0.1")
    # Kafka's PEM keystore reads PKCS#8 keys only; trustme writes the traditional form.
    key = serialization.load_pem_private_key(issued.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pem.write_bytes(pkcs8 + b"".join(c.bytes() for c in issued.cert_chain_pems))
    user, password = f"reco-{secrets.token_hex(4)}", secrets.token_hex(16)
    ports: list[int] = []  # the TLS listener of each start (own_stack may start again)

    def listener(own: Settings) -> dict[str, str]:
        ports.append(free_port())
        port = ports[-1]
        plain, ctrl = own.kafka_bootstrap_servers, own.kafka_controller_port
        sasl = own.kafka_sasl_port
        return {
            "listeners": f"PLAINTEXT://{plain},CONTROLLER://127.0.0.1:{ctrl},"
            f"SASL://127.0.0.1:{sasl},TLS://127.0.0.1:{port}",
            "advertised.listeners": f"PLAINTEXT://{plain},SASL://127.0.0.1:{sasl},"
            f"TLS://127.0.0.1:{port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,"
            "SASL:SASL_PLAINTEXT,TLS:SASL_SSL",
            "listener.name.tls.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.tls.plain.sasl.jaas.config": f'{PLAIN_LOGIN} user_{user}="{password}";',
            "listener.name.tls.ssl.keystore.type": "PEM",
            "listener.name.tls.ssl.keystore.location": str(pem),
        }

    with own_stack(settings, tmp_path / "stack", listener) as own:
        yield TlsKafka(own, ports[-1], ca_file, user, password)


def acl_user(admin: redis.Redis, prefix: str) -> tuple[str, str]:
    """A Redis ACL user that may touch only keys under `prefix` and no admin command: what a
    worker needs on a Redis it shares (no CONFIG, so the eviction check is skipped)."""
    name, password = f"reco-{secrets.token_hex(4)}", secrets.token_hex(16)
    admin.acl_setuser(
        name,
        enabled=True,
        passwords=[f"+{password}"],
        keys=[f"{prefix}:*"],
        commands=["+@all", "-@dangerous", "-@admin"],
    )
    return name, password


def test_a_worker_over_tls_kafka_with_sasl_plain_and_a_redis_acl_user(
    settings: Settings, tls_kafka: TlsKafka, tmp_path: Path
) -> None:
    own = tls_kafka.own
    base = dataclasses.replace(
        own.isolated(uid("tls")), require_catalog=False, web_port=settings.web_port + 49
    )
    admin = redis.Redis.from_url(own.redis_url)
    name, redis_password = acl_user(admin, base.key_prefix)
    at = urlparse(own.redis_url)
    secure = dataclasses.replace(
        base,
        kafka_bootstrap_servers=f"127.0.0.1:{tls_kafka.port}",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username=tls_kafka.user,
        kafka_sasl_password=tls_kafka.password,
        kafka_ssl_ca_file=str(tls_kafka.ca_file),
        redis_url=f"redis://{name}:{redis_password}@{at.hostname}:{at.port}/0",
    )
    log = tmp_path / "worker.log"
    kafka_io.ensure_topics(secure)  # the admin client over TLS with PLAIN
    proc = start_worker(secure, log)
    try:
        applies_and_answers(secure, proc, log, EVENTS)
    finally:
        stop_worker(proc)
    text = log.read_text(errors="replace")
    assert tls_kafka.password not in text and redis_password not in text
    assert "could not read Redis's maxmemory-policy" in text  # no CONFIG: said, not refused
    assert applied_count(base) == EVENTS
    # Every key the worker wrote is under its prefix: the ACL user could write no other.
    outside = [k for k in admin.scan_iter(count=1000) if not k.startswith(base.key_prefix.encode())]
    assert outside == []
    denied = redis.Redis.from_url(secure.redis_url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        denied.set("elsewhere", 1)  # the user really was held to the prefix
    denied.close()
    admin.close()
