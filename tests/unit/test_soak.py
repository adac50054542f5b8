"""The soak's verdict: each figure's last third against its first, without a stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream_reco.bench import plots, soak
from stream_reco.bench.load import Pace
from stream_reco.errors import ConfigError

PLAN = soak.SoakPlan(minutes=10)


def _row(t: float, p99: float, *, rss: float = 100.0, applied: float = 2000.0,
         unanswered: int = 0) -> dict[str, Any]:  # fmt: skip
    lat = {"p50_ms": p99 / 4, "p99_ms": p99, "sent": 100, "answered": 100 - unanswered}
    return {
        "t_s": t,
        "requests": lat,
        "pushes": {**lat, "answered": 100},
        "applied_per_s": applied,
        "ingest_sent_per_s": 2000.0,
        "backlog_events": 10,
        "worker_rss_mb": [rss],
        "redis_used_mb": 100.0 + t / 60,
    }


def test_a_steady_run_passes_despite_one_noisy_window() -> None:
    rows = [_row(60.0 * n, 50.0) for n in range(1, 10)]
    rows[7] = _row(480.0, 200.0)  # one window's p99 alone does not move a third's median
    d = soak.drift(rows, PLAN)
    assert d["passed"] and d["windows_per_third"] == 3
    assert d["figures"]["request_p99_ms"]["ratio"] == 1.0


def test_latency_growing_beyond_the_tolerance_fails() -> None:
    rows = [_row(60.0 * n, 50.0 + 10 * n) for n in range(1, 10)]
    d = soak.drift(rows, PLAN)
    assert not d["passed"]
    assert d["figures"]["request_p99_ms"]["degraded"] is True
    assert d["figures"]["applied_per_s"]["degraded"] is False


def test_falling_throughput_and_growing_worker_memory_fail() -> None:
    falling = [_row(60.0 * n, 50.0, applied=2000.0 - 200 * n) for n in range(1, 7)]
    assert soak.drift(falling, PLAN)["figures"]["applied_per_s"]["degraded"] is True
    leaking = [_row(60.0 * n, 50.0, rss=100.0 + 30 * n) for n in range(1, 7)]
    assert soak.drift(leaking, PLAN)["figures"]["worker_rss_mb"]["degraded"] is True


def test_an_unanswered_request_fails_the_soak_even_when_figures_hold() -> None:
    rows = [_row(60.0 * n, 50.0) for n in range(1, 4)]
    rows[1] = _row(120.0, 50.0, unanswered=1)
    d = soak.drift(rows, PLAN)
    assert d["unanswered"] == 1 and not d["passed"]


def test_redis_growth_per_minute_and_per_event() -> None:
    rows = [_row(60.0 * n, 50.0) for n in range(1, 4)]
    g = soak.redis_growth(rows)
    assert g["mb_per_minute"] == pytest.approx(1.0)  # 1 MB more each 60 s window
    assert g["bytes_per_event"] == pytest.approx(2 * 2**20 / (2000 * 120), rel=0.01)
    assert soak.redis_growth(rows[:1])["mb_per_minute"] is None


def test_table_and_plot(tmp_path: Path) -> None:
    rows = [_row(60.0 * n, 50.0) for n in range(1, 4)]
    plan = soak.SoakPlan(minutes=3)
    result = {
        "plan": {"events_per_s": 2000.0, "requests_per_s": 200.0, "topology": "all"},
        "windows": rows,
        "drift": soak.drift(rows, plan),
        "redis_growth": soak.redis_growth(rows),
    }
    text = soak.table(result)
    assert "soak PASSED" in text and "request_p99_ms" in text and text.count("\n") > 8
    assert plots.soak_plot(result, tmp_path).exists()


def test_plans_that_cannot_run_are_refused() -> None:
    assert soak.SoakPlan(minutes=10).windows == 10
    for bad in (
        soak.SoakPlan(minutes=0),
        soak.SoakPlan(minutes=1, window_s=120),
        soak.SoakPlan(minutes=2),  # two windows: nothing to compare a third with
        soak.SoakPlan(minutes=1, window_s=5, requests_per_s=5),  # 25 requests a window
        soak.SoakPlan(minutes=float("nan")),
        soak.SoakPlan(minutes=float("inf")),
        soak.SoakPlan(minutes=10, tolerance=float("nan")),
        soak.SoakPlan(minutes=1, requests_per_s=0),
        soak.SoakPlan(minutes=1, topology="mesh"),
        soak.SoakPlan(minutes=1, tolerance=-0.1),
    ):
        with pytest.raises(ConfigError):
            bad.check()


def test_a_forgetful_pace_keeps_marks_meaningful() -> None:
    pace = Pace(10.0, lags_s=[0.001] * 5)
    pace.sent = 5
    pace.forget()
    pace.lags_s += [0.002] * 3
    assert pace.lags_s == [0.002] * 3 and pace.forgotten == 5


def test_a_growing_backlog_fails_even_while_the_apply_rate_holds() -> None:
    rows = [_row(60.0 * n, 50.0) for n in range(1, 10)]
    for n, r in enumerate(rows):
        r["backlog_events"] = 100_000 * n  # 1,900/s applied of 2,000/s sent, window after window
    d = soak.drift(rows, PLAN)
    assert d["figures"]["applied_per_s"]["degraded"] is False
    assert d["figures"]["backlog_events"]["degraded"] is True and not d["passed"]


def test_a_missing_figure_or_a_short_generator_gives_no_pass() -> None:
    rows = [_row(60.0 * n, 50.0) for n in range(1, 7)]
    for r in rows[-2:]:
        r["worker_rss_mb"] = [None]  # unreadable at the end
    d = soak.drift(rows, PLAN)
    assert d["missing"] == ["worker_rss_mb"] and not d["passed"]
    rows = [_row(60.0 * n, 50.0) for n in range(1, 7)]
    rows[3]["ingest_sent_per_s"] = 1500.0
    d = soak.drift(rows, PLAN)
    assert d["generator_short_windows"] == 1 and not d["passed"]
    assert "fell short" in soak.table(
        {"plan": {"events_per_s": 2000.0, "requests_per_s": 200.0, "topology": "all"},
         "windows": rows, "drift": d, "redis_growth": soak.redis_growth(rows)}
    )  # fmt: skip
