"""`stream-reco bench` for real: very short runs through Kafka, workers and Redis (one `all`
worker; an `ingest` beside a `query` worker), their JSON, and nothing of them left on the
stack afterwards (also after SIGINT or SIGTERM in the middle of a window)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka.admin import AdminClient

from stream_reco.bench.fleet import Fleet
from stream_reco.bench.report import ENTRY_KEYS
from stream_reco.config import Settings
from stream_reco.errors import StackError
from tests.integration.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ("bench", "--quick", "--duration", "2", "--events", "2000", "--no-stack")


def _admin(settings: Settings) -> AdminClient:
    return AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers, "log_level": 3})


def _groups(settings: Settings, tag: str) -> list[str]:
    admin = _admin(settings)  # kept until the answer is in: a destroyed client fails its futures
    listed = admin.list_consumer_groups().result().valid
    return sorted(g.group_id for g in listed if tag in g.group_id)


def _leftovers(settings: Settings, tag: str, key_prefix: str) -> dict[str, list[Any]]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return {
            "topics": [t for t in _admin(settings).list_topics(timeout=10).topics if tag in t],
            "groups": _groups(settings, tag),
            "keys": list(client.scan_iter(match=f"{key_prefix}:*", count=1000)),
        }
    finally:
        client.close()


def _gone(settings: Settings, tag: str, key_prefix: str) -> dict[str, list[Any]]:
    """What is left of a run, after the few seconds Kafka may take to drop deleted topics."""
    deadline = time.monotonic() + 15
    while True:
        left = _leftovers(settings, tag, key_prefix)
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_quick_bench_reports_every_scenario_and_cleans_up(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    stdout = run_cli(settings, *SMOKE, "--json", str(out), "--plot", str(tmp_path), timeout=240)
    assert "request->response" in stdout and "floor kafka echo" in stdout
    doc = orjson.loads(out.read_bytes())
    m, sc = doc["machine"], doc["scenarios"]
    assert m["cores"] >= 1 and m["redis"] and m["settings"]["partitions"] >= 1
    assert m["bench"]["quick"] is True and m["bench"]["duration"] == 2
    assert m["topology"] == "all" and [w["role"] for w in m["workers"]] == ["all"]
    assert sc["ingest"]["events_per_s"] > 0
    assert sc["ingest"]["runs"][0]["events"] == 2000
    for name in ("request_response", "push", "http"):
        assert sc[name], name
        for e in sc[name]:
            assert set(ENTRY_KEYS) <= set(e), (name, e)
            assert e["ingest_rate"] == 2000 and e["answered"] > 0, (name, e)
            assert e["topology"] == "all", (name, e)
            assert e["errors"] == 0, (name, e)  # nothing lost or failed at the low rate
            assert e["complete"] and not e["saturated"], (name, e)
            assert isinstance(e["ingest_short"], bool), (name, e)
            assert 0 < e["p50_ms"] <= e["p99_ms"] <= e["max_ms"], (name, e)
    assert sc["request_response"][0]["rate"] == 200 and sc["http"][0]["rate"] == 200
    floor = sc["floor"]
    assert 0 < floor["kafka_p50_ms"] <= floor["kafka_p99_ms"]
    assert floor["redis_p50_ms"] > 0
    # The bare echo again while the worker takes the background load, at each request rate.
    loaded = floor["kafka_loaded"]
    assert loaded and all(e["ingest_rate"] > 0 and e["answered"] == e["sent"] for e in loaded)
    assert sc["request_response"][0]["x_floor_p50"] > 0
    assert sc["memory"]["bytes_per_session"] > 0 and sc["memory"]["bytes_per_item"] > 0
    assert all(w["start_mb"] > 0 and w["end_mb"] > 0 for w in sc["memory"]["workers"])
    assert [w["role"] for w in sc["memory"]["workers"]] == ["all"]
    assert (tmp_path / "request_response.png").exists()
    tag = m["settings"]["app_id"].rpartition("-")[2]
    assert tag.startswith("bench")
    assert _gone(settings, tag, m["settings"]["key_prefix"]) == {
        "topics": [],
        "groups": [],
        "keys": [],
    }


def _start(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_reco.cli", *args],
        env={**os.environ, **settings.to_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def test_split_topology_answers_from_a_query_worker_and_cleans_up(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    proc = _start(settings, *SMOKE, "--topology", "split", "--json", str(out))
    assert proc.stderr is not None
    lines: list[str] = []
    tag, groups = "", []
    try:
        for line in proc.stderr:  # progress lines: look at the groups once the workers settled
            lines.append(line)
            named = re.search(r"bench (bench[0-9a-f]{8}):", line)
            tag = named.group(1) if named else tag
            if "topology split: workers" in line:
                groups = _groups(settings, tag)
        stdout, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines)[-3000:]
    app_id = f"{settings.app_id}-{tag}"
    assert {f"{app_id}-events", f"{app_id}-requests", f"{app_id}-query"} <= set(groups)
    assert "topology split (1 ingest + 1 query workers)" in stdout
    doc = orjson.loads(out.read_bytes())
    m, sc = doc["machine"], doc["scenarios"]
    assert (m["topology"], m["bench"]["topology"]) == ("split", "split")
    assert [(w["role"], w["topology"]) for w in m["workers"]] == [
        ("ingest", "split"),
        ("query", "split"),
    ]
    assert [(r["topology"], r["role"]) for r in sc["ingest"]["runs"]] == [("split", "ingest")]
    assert sc["ingest"]["events_per_s"] > 0
    for name in ("request_response", "push", "http"):
        assert sc[name], name
        for e in sc[name]:
            assert set(ENTRY_KEYS) <= set(e), (name, e)
            assert e["topology"] == "split" and e["answered"] > 0, (name, e)
            assert e["errors"] == 0, (name, e)
    assert {w["role"] for w in sc["memory"]["workers"]} == {"ingest", "query"}
    assert _gone(settings, tag, m["settings"]["key_prefix"]) == {
        "topics": [],
        "groups": [],
        "keys": [],
    }


# As a script's `cmd &` starts it (a shell without job control): with SIGINT ignored, which
# Python keeps unless the command installs its own handler.
SIGINT_IGNORED = ("/bin/sh", "-c", 'trap "" INT; exec "$0" "$@"')
STOP_WITHIN_S = 20.0


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _workers_of(pid: int) -> list[int]:
    """The running `stream-reco worker` children of `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rpartition(")")[2].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if ppid == pid and b"worker" in argv and _running(int(stat.parent.name)):
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize(
    ("signum", "after", "prefix"),
    [
        # In the push window, started as a background job that inherited SIGINT ignored.
        pytest.param(signal.SIGINT, "latency windows [all]", SIGINT_IGNORED, id="sigint"),
        # In the request->response window, which the push window's result line opens.
        pytest.param(signal.SIGTERM, "add_to_cart->push [all]", (), id="sigterm"),
    ],
)
def test_a_stop_signal_in_a_latency_window_stops_the_bench_and_cleans_up(
    settings: Settings, signum: signal.Signals, after: str, prefix: tuple[str, ...]
) -> None:
    proc = subprocess.Popen(
        [*prefix, sys.executable, "-m", "stream_reco.cli", *SMOKE],
        env={**os.environ, **settings.to_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    workers: list[int] = []
    try:
        for line in proc.stderr:  # progress lines: stop once the window has begun
            lines.append(line)
            if after in line:
                break
        workers = _workers_of(proc.pid)
        time.sleep(0.5)  # well inside the window (2 s)
        proc.send_signal(signum)
        sent = time.monotonic()
        _, rest = proc.communicate(timeout=STOP_WITHIN_S)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:  # only if the bench left them: the assertion below says so
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    text = "".join(lines) + rest
    assert workers, f"no worker child found before the signal: {text[-3000:]}"
    assert proc.returncode == 130, text[-3000:]
    assert took < STOP_WITHIN_S
    assert f"{signum.name} received: stopping" in text, text[-3000:]
    assert "removing the bench's workers" in text
    assert "http GET [" not in text, "it measured on after the signal"
    assert not [pid for pid in workers if _running(pid)], "worker children left running"
    tag = re.search(r"bench (bench[0-9a-f]{8})", text).group(1)  # type: ignore[union-attr]
    assert _gone(settings, tag, f"{settings.key_prefix}-{tag}") == {
        "topics": [],
        "groups": [],
        "keys": [],
    }


def test_fleet_close_runs_every_step_and_raises_one_summary(settings: Settings) -> None:
    fleet = Fleet(settings, f"bench{uuid.uuid4().hex[:8]}")
    fleet.open()
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.set(f"{fleet.settings.key_prefix}:probe", b"1")
    finally:
        client.close()

    def broken() -> None:
        raise RuntimeError("the echo would not stop")

    fleet.closers.append(broken)
    with pytest.raises(StackError, match="the echo would not stop"):
        fleet.close()
    # The failing first step did not keep the others from running.
    assert _gone(settings, fleet.tag, fleet.settings.key_prefix) == {
        "topics": [],
        "groups": [],
        "keys": [],
    }
    fleet.close(raise_errors=False)  # after an earlier error: logged only, never raised


def test_a_short_soak_reports_each_window_and_its_drift_and_cleans_up(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "soak.json"
    args = ("soak", "--minutes", "0.25", "--window", "5", "--events-per-s", "500")
    stdout = run_cli(
        # A tolerance no noise reaches: the verdict's logic is unit-tested (test_soak).
        settings, *args, "--requests-per-s", "20", "--tolerance", "100", "--no-stack",
        "--json", str(out),
        "--plot", str(tmp_path), timeout=180,
    )  # fmt: skip
    assert "soak PASSED" in stdout and "drift" in stdout
    doc = orjson.loads(out.read_bytes())
    rows = doc["windows"]
    assert len(rows) == 3 and [r["t_s"] for r in rows] == sorted(r["t_s"] for r in rows)
    for r in rows:
        assert r["requests"]["sent"] == r["requests"]["answered"] == 100, r["requests"]
        assert r["pushes"]["answered"] == r["pushes"]["sent"] > 0, r["pushes"]
        assert r["applied_per_s"] > 0 and r["redis_used_mb"] > 0
        assert len(r["worker_rss_mb"]) == 1 and r["worker_rss_mb"][0] > 0
    assert doc["drift"]["windows_per_third"] == 1 and doc["drift"]["unanswered"] == 0
    assert set(doc["drift"]["figures"]) >= {"request_p99_ms", "push_p99_ms", "worker_rss_mb"}
    assert doc["machine"]["cores"] >= 1 and doc["plan"]["minutes"] == 0.25
    assert (tmp_path / "soak.png").exists()
    tag = doc["machine"]["settings"]["app_id"].rpartition("-")[2]
    assert tag.startswith("soak")
    assert _gone(settings, tag, doc["machine"]["settings"]["key_prefix"]) == {
        "topics": [],
        "groups": [],
        "keys": [],
    }
