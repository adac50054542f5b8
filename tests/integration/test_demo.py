"""The main job: `stream-reco demo` runs end to end and shows pushed recommendations."""

from __future__ import annotations

import dataclasses
import re
import uuid

from stream_reco.config import Settings
from tests.integration.conftest import run_cli


def test_demo_prints_live_pushes_and_stops_by_itself(settings: Settings) -> None:
    run = uuid.uuid4().hex[:6]
    own = dataclasses.replace(settings.isolated(f"demo{run}"), web_port=settings.web_port + 10)
    out = run_cli(own, "demo", "--duration", "8", "--rate", "300", "--no-stack", timeout=180)
    assert "🛒" in out and "recommendations:" in out
    assert "often chosen" in out  # learned live from the stream, not only popularity
    last = [line for line in out.splitlines() if "events/s sent" in line][-1]
    assert re.search(r"\b0 dead-lettered", last), last
    pushes = int(re.search(r"(\d+) pushes", last).group(1))  # type: ignore[union-attr]
    assert pushes > 0
    assert "worker stopped" in out
