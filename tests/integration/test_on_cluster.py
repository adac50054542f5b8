"""The end-to-end suite once more, on a 3-primary Redis Cluster: a worker, its Kafka topics and
every answer, with the store sharded over the cluster's primaries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stream_reco.config import ENV, Settings

ROOT = Path(__file__).resolve().parents[2]
SUITES = ["tests/integration/test_end_to_end.py"]


def test_the_end_to_end_suite_passes_on_a_redis_cluster(cluster: Settings) -> None:
    env = {
        **os.environ,
        ENV["redis_cluster"]: "true",
        ENV["redis_url"]: cluster.redis_url,  # this run's own cluster, used as it is
        "STREAM_RECO_KEEP_STACK": "1",  # the outer run owns the stack
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUITES],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout
