"""The main job: `stream-reco demo` runs end to end and shows pushed recommendations."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import uuid

from stream_reco.config import Settings


def test_demo_prints_live_pushes_and_stops_by_itself(settings: Settings) -> None:
    run = uuid.uuid4().hex[:6]
    own = dataclasses.replace(settings.isolated(f"demo{run}"), web_port=settings.web_port + 10)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream_reco.cli",
            "demo",
            "--duration",
            "8",
            "--rate",
            "300",
            "--no-stack",
        ],
        env={**os.environ, **own.to_env()},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "🛒" in out and "recommendations:" in out
    assert "often chosen" in out  # learned live from the stream, not only popularity
    last = [line for line in out.splitlines() if "events/s sent" in line][-1]
    assert re.search(r"\b0 dead-lettered", last), last
    pushes = int(re.search(r"(\d+) pushes", last).group(1))  # type: ignore[union-attr]
    assert pushes > 0
    assert "worker stopped" in out
