"""The README's "Integrate your shop in 10 minutes", run as written against the real stack."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

from stream_reco.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Integrate your shop in 10 minutes"
SCRIPT = ROOT / "examples" / "integrate.py"
# The section's lines the test session has done already, and only those: the tests run from the
# checkout's set-up .venv, and the `base_settings` fixture has started the stack.
ALREADY_DONE = ("bash deploy/local/setup.sh", ".venv/bin/stream-reco stack up")
# The headings of the script's answers: over Kafka, over HTTP, under the new rule.
PARTS = ("over Kafka", "over HTTP", "after set_rules category_cap=1")
# What differs from run to run in the script's output: the session id, the web port, a duration.
VARYING = (
    (re.compile(r"you-[0-9a-f]{6}"), "you-RUN"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"\d+\.\d s later"), "N s later"),
)


def blocks(language: str) -> list[str]:
    """The fenced blocks of the walk-through section in `language`, in order."""
    text = (ROOT / "README.md").read_text()
    assert SECTION in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    fence = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    return [body for lang, body in fence.findall(section) if lang == language]


def commands() -> list[str]:
    """The section's shell lines a reader runs, less those the test session did already."""
    lines = [line for block in blocks("bash") for line in block.splitlines()]
    for done in ALREADY_DONE:
        assert done in lines, f"the walk-through no longer says {done!r}: update ALREADY_DONE"
    runnable = [line for line in lines if line not in ALREADY_DONE]
    assert not any("stack" in line for line in runnable), "the test must not touch the stack"
    return runnable


def sections(output: str) -> dict[str, list[tuple[str, str, str]]]:
    """The script's output: each heading with its (item_id, category, reason) lines."""
    out: dict[str, list[tuple[str, str, str]]] = {}
    heading = ""
    for line in output.splitlines():
        if line.startswith("  "):
            item_id, category, reason = line.split(maxsplit=2)
            out[heading].append((item_id, category, reason))
        else:
            heading = line
            out[heading] = []
    return out


def normalised(headings: list[str]) -> list[str]:
    for pattern, stand_in in VARYING:
        headings = [pattern.sub(stand_in, h) for h in headings]
    return headings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gone(pid: int, timeout: float) -> bool:
    """Whether the worker `pid` has exited within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            # A zombie's cmdline is empty; a reused pid runs something else.
            if b"stream-reco" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except FileNotFoundError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def stopped(pid_file: Path, wait_s: float) -> bool:
    """Whether the worker the walk-through started stopped by itself within `wait_s` seconds;
    if not, it is stopped here (SIGTERM, then SIGKILL), so no test leaves a worker behind."""
    if not pid_file.exists():
        return True
    pid = int(pid_file.read_text().strip())
    if gone(pid, wait_s):
        return True
    for sig in (signal.SIGTERM, signal.SIGKILL):
        os.kill(pid, sig)
        if gone(pid, 30.0):
            break
    return False


def test_the_readme_shows_the_example_script_as_it_is() -> None:
    assert blocks("python") == [SCRIPT.read_text()]
    assert ".venv/bin/python examples/integrate.py" in commands()


def test_the_walkthrough_runs_as_written(settings: Settings, tmp_path: Path) -> None:
    # Its own topics, consumer groups, key prefix and web port: the run's cleanup deletes them.
    env = {
        **os.environ,
        **settings.isolated("walkthrough").to_env(),
        "STREAM_RECO_WEB_PORT": str(free_port()),
    }
    # A directory of its own, so worker.log and worker.pid do not land in the checkout.
    for name in (".venv", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    script = tmp_path / "walkthrough.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(commands()) + "\n")
    ran = False
    try:
        done = subprocess.run(
            ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        ran = done.returncode == 0
    finally:
        # After a full run the README's own `kill` must have stopped the worker.
        stopped_itself = stopped(tmp_path / "worker.pid", 30.0 if ran else 0.0)
    log = tmp_path / "worker.log"
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log.exists() else ""
    why = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-3000:]}\nworker.log:\n{tail}"
    assert done.returncode == 0, why
    assert stopped_itself, "the worker was still running 30 s after the walk-through's `kill`"
    check_output(done.stdout, env["STREAM_RECO_WEB_PORT"])


def check_output(stdout: str, port: str) -> None:
    """Recommendations over Kafka and HTTP from the catalogue, and the rule taking effect."""
    got = sections(stdout)
    sample = sections(blocks("text")[0])
    # Step 2 says "worker ready"; the script then prints what the README shows.
    assert normalised(list(got)) == ["worker ready", *normalised(list(sample))], stdout
    kafka, http, after = (next(got[h] for h in got if h.startswith(s)) for s in PARTS)
    assert kafka and http and after, stdout
    for item_id, category, reason in kafka + http + after:
        assert category != "?", f"{item_id} is not in the walk-through's catalogue"
        assert item_id != "kettle", "an out-of-stock item was recommended"
        assert reason
    assert any("(mug-red)" in r or "(mug-blue)" in r for _, _, r in kafka), "not your visit"
    assert f"127.0.0.1:{port}/recommendations" in next(h for h in got if h.startswith(PARTS[1]))
    before = Counter(category for _, category, _ in kafka)
    assert max(before.values()) > 1, "the cap would change nothing: no category repeats"
    assert max(Counter(category for _, category, _ in after).values()) == 1, stdout
