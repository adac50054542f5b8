"""`stack up --redis-cluster`: three primaries joined once, idempotent, stopped and resumed."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from redis.cluster import RedisCluster

from stream_reco import stack_cluster
from stream_reco.config import Settings
from stream_reco.errors import StackError
from stream_reco.stack_servers import Stack
from tests.integration.conftest import free_cluster_port


@pytest.fixture
def cluster_settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    own = dataclasses.replace(
        settings, home=tmp_path / "stack", redis_cluster_port=free_cluster_port(settings.web_port)
    )
    try:
        yield own
    finally:
        stack_cluster.down(own, say=lambda _: None)


def test_a_local_cluster_serves_every_slot_and_survives_down_and_up(
    cluster_settings: Settings,
) -> None:
    said: list[str] = []
    stack_cluster.up(cluster_settings, say=said.append)
    assert stack_cluster.url(cluster_settings) in said[-1]
    client = RedisCluster.from_url(stack_cluster.url(cluster_settings))
    keys = [f"k{n}" for n in range(50)]  # spread over every primary's slots
    for key in keys:
        client.set(key, key)
    owners = {client.get_node_from_key(key).port for key in keys}
    assert len(owners) == stack_cluster.PRIMARIES
    client.close()
    status = stack_cluster.status(cluster_settings)
    assert status is not None and status["ready"] is True
    orjson.dumps(status)  # as `stack status` prints it

    said.clear()
    stack_cluster.up(cluster_settings, say=said.append)  # idempotent: nothing started again
    assert sum("already running" in line for line in said) == stack_cluster.PRIMARIES

    stack_cluster.down(cluster_settings, say=lambda _: None)
    assert stack_cluster.status(cluster_settings) is None
    for svc in stack_cluster.nodes(cluster_settings):
        with pytest.raises(redis.ConnectionError):
            redis.Redis(host=svc.host, port=svc.port, socket_timeout=1).ping()

    stack_cluster.up(cluster_settings, say=lambda _: None)  # the same cluster, its data kept
    client = RedisCluster.from_url(stack_cluster.url(cluster_settings))
    assert [client.get(key) for key in keys] == [key.encode() for key in keys]
    client.close()


def test_a_port_held_by_another_process_is_refused(cluster_settings: Settings) -> None:
    held = cluster_settings.redis_cluster_port + 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", held))
        busy.listen()
        with pytest.raises(StackError, match=f"port {held} is in use by a process"):
            stack_cluster.up(cluster_settings, say=lambda _: None)
    # The node started before the held port was met is stopped by `down` at once, though it
    # is still starting (and retitling itself) then.
    first = stack_cluster.nodes(cluster_settings)[0]
    pid = int(Stack(cluster_settings).pid_file(first).read_text())
    stack_cluster.down(cluster_settings, say=lambda _: None)
    assert not _running(pid)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's reaping is left
