"""Secure connections end to end: Kafka over SASL/SCRAM, Redis with a password over TLS."""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme
from confluent_kafka import TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from stream_reco import kafka_io
from stream_reco.config import Settings
from stream_reco.workers import start_worker, stop_worker
from tests.integration.conftest import applied_count, forget_isolated, uid
from tests.integration.replays import (
    ThrowawayRedis,
    applies_and_answers,
    produce,
    start_ms,
    until_applied,
)

EVENTS = 500


@pytest.fixture
def scram_user(settings: Settings) -> Iterator[tuple[str, str]]:
    """A SCRAM-SHA-256 user on the local stack's SASL listener, removed afterwards."""
    name, password = f"reco-{secrets.token_hex(4)}", secrets.token_urlsafe(16)
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
    upsert = UserScramCredentialUpsertion(name, info, password.encode())
    made = admin.alter_user_scram_credentials([upsert])
    for fut in made.values():
        fut.result(30)
    yield name, password
    gone = admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion(name, ScramMechanism.SCRAM_SHA_256)]
    )
    for fut in gone.values():
        fut.result(30)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    """A redis-server that takes TLS only, with a password; certificates made by the test."""
    ca = trustme.CA()
    ca_file, pem = tmp_path / "ca.pem", tmp_path / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    server = ThrowawayRedis(tmp_path, tls=(ca_file, pem))
    server.start()
    yield server
    server.stop()


def _get(port: int, path: str, token: str | None = None, scheme: str = "Bearer") -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        req.add_header("Authorization", f"{scheme} {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_a_worker_over_sasl_scram_kafka_and_tls_redis_with_a_token(
    settings: Settings,
    scram_user: tuple[str, str],
    tls_redis: ThrowawayRedis,
    tmp_path: Path,
) -> None:
    server, (user, kafka_password) = tls_redis, scram_user
    password = str(server.password)
    token = secrets.token_urlsafe(16)
    plain = settings.isolated(uid("secure"))
    secure = dataclasses.replace(
        plain,
        kafka_bootstrap_servers=f"127.0.0.1:{settings.kafka_sasl_port}",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username=user,
        kafka_sasl_password=kafka_password,
        redis_url=server.url,
        http_token=token,
        require_catalog=False,
        web_port=settings.web_port + 48,
    )
    assert password not in repr(secure) and kafka_password not in repr(secure)
    log = tmp_path / "worker.log"
    kafka_io.ensure_topics(secure)  # over SASL: the admin client authenticates too
    proc = start_worker(secure, log)
    try:
        applies_and_answers(secure, proc, log, EVENTS)
        _rotate_and_restore_password(server, secure)
        web = secure.web_port
        assert _get(web, "/recommendations?session_id=s1") == 401
        assert _get(web, "/recommendations?session_id=s1", "wrong") == 401
        assert _get(web, "/recommendations?session_id=s1", token) == 200
        assert _get(web, "/recommendations?session_id=s1", token, "bearer") == 200
        assert _get(web, "/") == 200  # liveness stays open
        # The dashboard's data views carry sessions' activity and revenue per variant: behind
        # the token too. The page (no data), /metrics and the probes stay open.
        for path in ("/dashboard/session?session_id=s1", "/dashboard/data"):
            assert _get(web, path) == 401, path
            assert _get(web, path, "wrong") == 401, path
            assert _get(web, path, token) == 200, path
        for path in ("/dashboard", "/metrics", "/health/live", "/health/ready"):
            assert _get(web, path) == 200, path
    finally:
        stop_worker(proc)
        forget_isolated(settings, plain)
    text = log.read_text(errors="replace")
    assert password not in text and kafka_password not in text and token not in text
    assert "refused the credentials" in text  # the rotation was seen, and waited out
    assert applied_count(secure) == EVENTS + 100  # read over TLS with the password


def _rotate_and_restore_password(server: ThrowawayRedis, s: Settings) -> None:
    """Redis refuses the worker's password for a while (a rotation in progress): its batches
    are held, not dead-lettered, and applied once the password works again."""
    admin = redis.Redis.from_url(server.url)
    admin.config_set("requirepass", "rotated")
    admin.client_kill_filter(_type="normal", skipme=True)
    admin.close()
    produce(s, EVENTS + 100, start_ms(EVENTS), first=EVENTS)
    time.sleep(3)
    rotated = redis.Redis.from_url(server.url.replace(str(server.password), "rotated"))
    try:
        assert int(rotated.get(f"{s.key_prefix}:g:{{g}}:applied") or 0) == EVENTS  # held
        rotated.config_set("requirepass", str(server.password))
    finally:
        rotated.close()
    until_applied(s, EVENTS + 100)
    consumer = kafka_io.consumer(s, [s.topic_deadletter], f"{s.app_id}-dlq", from_beginning=True)
    try:  # the topic's end, not a read that might end before the group has joined
        _, end = consumer.get_watermark_offsets(TopicPartition(s.topic_deadletter, 0), 10)
    finally:
        consumer.close()
    assert end == 0  # nothing was given up on


def test_wrong_credentials_are_refused_at_start_saying_why(
    settings: Settings, tls_redis: ThrowawayRedis
) -> None:
    server, password = tls_redis, str(tls_redis.password)
    wrong_redis = dataclasses.replace(
        settings.isolated(uid("badauth")), redis_url=server.url.replace(password, "nope")
    )
    wrong_kafka = dataclasses.replace(
        settings.isolated(uid("badauth")),
        kafka_bootstrap_servers=f"127.0.0.1:{settings.kafka_sasl_port}",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="nobody",
        kafka_sasl_password="not-the-password",
    )
    redis_says = "Redis refused the credentials .*: check the user and password in REDIS_URL"
    kafka_says = "Kafka at .* refused the credentials: .*SASL authentication error"
    for s, says in ((wrong_redis, redis_says), (wrong_kafka, kafka_says)):
        done = subprocess.run(
            [sys.executable, "-m", "stream_reco.cli", "worker"],
            env={**os.environ, **s.to_env()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2
        assert re.search(says, done.stderr), done.stderr[-2000:]
        assert "nope" not in done.stderr and "not-the-password" not in done.stderr
