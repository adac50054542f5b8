"""A `stream-reco worker` as a child process: start it, wait until it is ready, stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from stream_reco.config import Settings
from stream_reco.errors import StackError

WORKER_READY_S = 90.0


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """A `stream-reco worker` child with exactly these settings; its output goes to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **settings.to_env()}
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "stream_reco.cli", "worker", "--loglevel", "info"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def wait_worker_ready(proc: subprocess.Popen[bytes], log_path: Path, since: int = 0) -> None:
    """Block until the worker logs that it is ready (bounded), or fail with its log tail."""
    deadline = time.monotonic() + WORKER_READY_S
    while time.monotonic() < deadline:
        text = log_path.read_bytes()[since:].decode(errors="replace")
        if "Worker ready" in text:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
    raise StackError(f"the worker did not become ready; log tail ({log_path}):\n{tail}")


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
