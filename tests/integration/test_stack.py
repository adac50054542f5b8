"""The local stack's lifecycle: idempotent up, status, clear refusal of a taken port."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from stream_reco import stack
from stream_reco.config import Settings
from stream_reco.errors import StackError
from tests.integration.conftest import cli


def test_status_reports_both_servers_ready(base_settings: Settings) -> None:
    report = cli(base_settings, "stack", "status")
    assert report["redis"]["ready"] and report["kafka"]["ready"]
    assert report["redis"]["pid"] and report["kafka"]["pid"]


def test_second_up_reuses_running_servers_and_cached_jars(base_settings: Settings) -> None:
    before = stack.status(base_settings)
    said: list[str] = []
    stack.up(base_settings, say=said.append)
    assert stack.status(base_settings) == before
    assert any("already running" in line for line in said)
    assert not any("fetching" in line for line in said)
    assert (stack.Stack(base_settings).libs / ".complete").exists()


def test_port_taken_by_a_foreign_process_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        settings = dataclasses.replace(
            Settings(), redis_url=f"redis://127.0.0.1:{port}/0", home=tmp_path / "stack"
        )
        with pytest.raises(StackError, match=f"port {port}.*in use"):
            stack.up(settings, say=lambda _: None)


def test_non_local_servers_are_refused(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings(), redis_url="redis://10.1.2.3:6379/0", home=tmp_path / "stack"
    )
    with pytest.raises(StackError, match="only runs on 127.0.0.1"):
        stack.up(settings, say=lambda _: None)
