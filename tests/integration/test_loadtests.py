"""The Locust load test runs headless against a real worker and every request kind succeeds."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from stream_reco.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_locust_drives_clickstream_kafka_and_http_without_failures(
    settings: Settings, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    command = [
        sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "--headless",
        "-u", "6", "-r", "6", "-t", "20s",
        "--host", f"http://127.0.0.1:{settings.web_port}",
        "--catalog-items", "100", "--csv", str(tmp_path / "run"), "--only-summary",
    ]  # fmt: skip
    done = subprocess.run(
        command,
        env={**os.environ, **settings.to_env()},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "run_stats.csv", newline="") as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    for key in (("kafka", "recommend"), ("GET", "/recommendations"), ("kafka", "track")):
        assert key in rows, f"no {key} row in {sorted(rows)}"
        assert int(rows[key]["Request Count"]) > 0, rows[key]
        assert int(rows[key]["Failure Count"]) == 0, (rows[key], done.stderr[-3000:])
    # Request-to-response through Kafka and the worker, not the moment the request was queued.
    assert float(rows[("kafka", "recommend")]["Min Response Time"]) >= 1.0
