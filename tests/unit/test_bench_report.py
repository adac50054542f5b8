"""The bench's pure logic: percentiles, rates, ratios to the floor, push matching, JSON shape,
and how a run turns stop signals into its cleanup."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_reco.bench import plots, report, stats, topology
from stream_reco.bench.interrupt import Stopped, StopSignals
from stream_reco.bench.load import paced
from stream_reco.bench.windows import PushWatch
from stream_reco.config import Settings
from stream_reco.errors import ConfigError


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert stats.percentile(values, 0) == 1.0
    assert stats.percentile(values, 50) == pytest.approx(50.5)
    assert stats.percentile(values, 99) == pytest.approx(99.01)
    assert stats.percentile(values, 100) == 100.0
    assert stats.percentile([7.0], 99) == 7.0
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError):
        stats.percentile(values, 101)


def test_an_empty_window_summarises_to_nulls_not_nan() -> None:
    summary = stats.latency_summary([])
    assert {k: summary[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")} == dict.fromkeys(
        ("p50_ms", "p95_ms", "p99_ms", "max_ms")
    )
    assert summary["complete"] is True and summary["saturated"] is False
    orjson.dumps(summary)  # JSON has no NaN: this must serialise


def test_percentile_of_never_answered_requests_is_infinite_not_nan() -> None:
    assert stats.percentile([1.0, 2.0, math.inf], 50) == 2.0  # exactly on a rank
    assert stats.percentile([1.0, 2.0, math.inf], 75) == math.inf
    assert stats.percentile([1.0, math.inf, math.inf], 90) == math.inf  # never inf - inf


def _window(answered: int, unanswered: int) -> stats.Recorder:
    """A window of `answered` answers 1..n ms and `unanswered` timeouts."""
    rec = stats.Recorder()
    for ms in range(1, answered + 1):
        rec.on_sent()
        rec.on_answer(ms / 1000)
    for _ in range(unanswered):
        rec.on_sent()
        rec.on_error("timeout")
    return rec


def test_timeouts_count_as_infinitely_slow_so_saturation_cannot_hide() -> None:
    # 3 % never answered: the answered ones alone would give a p99 of ~192 ms.
    entry = _window(answered=194, unanswered=6).entry(500, 2000)
    assert entry["p50_ms"] == pytest.approx(100.5)  # the middle of everything sent
    assert entry["p99_ms"] is None and entry["max_ms"] is None  # beyond the timeout
    assert (entry["sent"], entry["answered"], entry["errors"]) == (200, 194, 6)
    assert (entry["unanswered"], entry["complete"], entry["saturated"]) == (6, False, True)
    assert entry["answered_p99_ms"] == pytest.approx(192.07)
    assert entry["answered_max_ms"] == pytest.approx(194.0)
    orjson.dumps(entry)


def test_a_few_timeouts_leave_p99_but_not_max() -> None:
    entry = _window(answered=999, unanswered=1).entry(200, 2000)
    assert entry["p99_ms"] == pytest.approx(990.01) and entry["max_ms"] is None
    assert (entry["complete"], entry["saturated"]) == (False, False)
    whole = _window(answered=100, unanswered=0).entry(200, 2000)
    assert (whole["complete"], whole["saturated"], whole["max_ms"]) == (True, False, 100.0)


def test_an_entry_is_flagged_when_the_background_sent_less_than_its_ingest_rate() -> None:
    rec = _window(answered=10, unanswered=0)
    assert rec.entry(200, 2000, ingest_sent_per_s=1800.0)["ingest_short"] is True
    assert rec.entry(200, 2000, ingest_sent_per_s=1950.0)["ingest_short"] is False
    assert rec.entry(200, 0)["ingest_short"] is False  # the floor has no background
    assert rec.entry(200, 2000)["ingest_short"] is False  # nothing measured to compare


def test_ratio_to_the_floor() -> None:
    assert stats.ratio(30.0, 3.0) == 10.0
    assert stats.ratio(1.0, 3.0) == 0.33
    assert stats.ratio(None, 3.0) is None
    assert stats.ratio(3.0, None) is None
    assert stats.ratio(3.0, 0.0) is None


def test_steady_rate_leaves_out_start_and_tail() -> None:
    # Nothing for 1 s (start-up), then 1,000 events/s, then a slow tail.
    samples = [(0.0, 0), (1.0, 0)] + [(1.0 + i / 10, i * 100) for i in range(1, 91)]
    samples += [(11.0, 9500), (20.0, 10000)]
    assert stats.steady_rate(samples, 10000) == pytest.approx(1000.0)
    slow = stats.first_to_last_rate(samples, 10000)
    assert slow is not None and slow < 600  # start-up and tail included
    assert stats.steady_rate([(0.0, 0), (1.0, 10)], 100) is None  # never got there
    assert stats.first_to_last_rate([(0.0, 0), (1.0, 10)], 100) is None


def test_recorder_entry_has_the_issue_keys_and_counts_errors_by_kind() -> None:
    rec = stats.Recorder()
    for ms in (1.0, 2.0, 3.0):
        rec.on_sent()
        rec.on_answer(ms / 1000)
    rec.on_sent()
    rec.on_error("timeout")
    rec.note("degraded")
    entry = rec.entry(200, 2000, behind_p99_ms=0.5)
    assert set(report.ENTRY_KEYS) <= set(entry)
    assert (entry["sent"], entry["answered"], entry["errors"]) == (4, 3, 1)
    assert entry["error_kinds"] == {"timeout": 1}
    assert entry["degraded"] == 1 and entry["coalesced"] == 0
    # The timed-out request is the slowest of the four: over everything sent, not the three.
    assert entry["p50_ms"] == pytest.approx(2.5) and entry["max_ms"] is None
    assert entry["answered_max_ms"] == pytest.approx(3.0)
    assert entry["behind_p99_ms"] == 0.5


def test_paced_keeps_the_schedule_and_never_waits_for_anything() -> None:
    fired: list[float] = []
    pace = paced(500, 0.1, fired.append)
    assert pace.sent == len(fired) == 50
    gaps = [b - a for a, b in zip(fired, fired[1:], strict=False)]
    assert all(g == pytest.approx(1 / 500) for g in gaps)  # due times, not send times
    assert pace.behind()["behind_max_ms"] >= 0


def test_push_watch_matches_pushes_by_event_id_and_counts_coalesced_and_missing() -> None:
    watch = PushWatch()
    watch.on_cart("old", "s1", 0.0)  # before the window: not measured
    watch.measuring = True
    watch.on_cart("e1", "s1", 1.0)
    watch.on_cart("e2", "s1", 1.1)  # pushed together with e1's batch, named e2
    watch.on_cart("e3", "s2", 1.2)
    watch.on_cart("e4", "s3", 1.3)  # its push never comes
    push = {"trigger": "add_to_cart", "session_id": "s1"}
    watch.on_response({**push, "event_id": "old"}, 1.05)  # the earlier push: matches nothing
    watch.on_response({"trigger": "request", "session_id": "s1", "event_id": "e1"}, 1.2)
    watch.on_response({**push, "event_id": "e2"}, 1.3)
    watch.measuring = False
    watch.on_cart("e5", "s2", 2.0)  # after the window: followed, not measured
    watch.on_response({"trigger": "add_to_cart", "session_id": "s2", "event_id": "e5"}, 2.1)
    rec = watch.close(drain_s=0.0)
    entry = rec.entry(4, 2000)
    assert (entry["sent"], entry["answered"], entry["errors"]) == (4, 3, 1)
    assert entry["error_kinds"] == {"missing": 1}
    assert entry["coalesced"] == 2  # e1 by e2's push, e3 by e5's
    assert sorted(round(x) for x in rec.latencies_ms) == [200, 300, 900]


class _WindowEndsMidCart(PushWatch):
    """The window ends right after a cart's first look at `measuring`: the moment a second
    look would have disagreed with the first."""

    def __init__(self) -> None:
        self.looks = 0
        super().__init__()

    @property
    def measuring(self) -> bool:
        self.looks += 1
        return self.looks == 1

    @measuring.setter
    def measuring(self, value: bool) -> None:
        pass


def test_a_cart_at_the_window_end_is_sent_and_answered_or_neither() -> None:
    watch = _WindowEndsMidCart()
    watch.on_cart("e1", "s1", 1.0)
    watch.on_response({"trigger": "add_to_cart", "session_id": "s1", "event_id": "e1"}, 1.5)
    entry = watch.close(drain_s=0.0).entry(1, 2000)
    assert (entry["sent"], entry["answered"], entry["errors"]) == (1, 1, 0)
    assert entry["complete"] is True


def test_push_watch_without_event_id_takes_the_oldest_cart_of_the_session() -> None:
    watch = PushWatch()
    watch.measuring = True
    watch.on_cart("e1", "s1", 1.0)
    watch.on_cart("e2", "s1", 2.0)
    watch.on_response({"trigger": "add_to_cart", "session_id": "s1"}, 2.5)
    assert [round(x) for x in watch.rec.latencies_ms] == [1500]


def _entry(rate: float, bg: float, p50: float, p99: float) -> dict[str, Any]:
    return {
        "rate": rate,
        "ingest_rate": bg,
        "p50_ms": p50,
        "p95_ms": p99,
        "p99_ms": p99,
        "max_ms": p99,
        "sent": 100,
        "answered": 100,
        "errors": 0,
    }


def _report() -> dict[str, Any]:
    machine = {"cores": 2, "cpu_model": "x", "ram_gb": 4.0, "kafka": "3.9.1", "redis": "7"}
    machine.update(python="3.11", bench={"quick": True})
    return report.build(
        machine,
        ingest=[
            {
                "workers": 2,
                "events": 10,
                "events_per_s": 900.0,
                "first_to_last_per_s": 800.0,
                "producer_per_s": 1e5,
            },
            {
                "workers": 1,
                "events": 10,
                "events_per_s": 500.0,
                "first_to_last_per_s": 400.0,
                "producer_per_s": 1e5,
            },
        ],  # fmt: skip
        request_response=[_entry(50, 2000, 10, 20), _entry(500, 2000, 40, 90)],
        push=[_entry(120, 2000, 6, 12)],
        http=[_entry(200, 2000, 4, 8)],
        floor_kafka=[_entry(50, 0, 2, 4), _entry(200, 0, 3, 5), _entry(500, 0, 4, 9)],
        floor_redis=[_entry(200, 0, 0.5, 1)],
        memory={"bytes_per_session": 2000, "sessions": 10, "bytes_per_item": 9000, "items": 5},
        started="2026-01-01T00:00:00+00:00",
        elapsed_s=12.34,
    )


def test_report_json_has_the_shape_the_issue_specifies() -> None:
    doc = orjson.loads(orjson.dumps(_report()))
    sc = doc["scenarios"]
    assert sc["ingest"]["events_per_s"] == 500.0  # the one-worker figure is the headline
    for name in ("request_response", "push", "http"):
        assert sc[name] and all(set(report.ENTRY_KEYS) <= set(e) for e in sc[name])
    floor = sc["floor"]
    assert (floor["rate"], floor["kafka_p50_ms"], floor["kafka_p99_ms"]) == (200, 3, 5)
    assert floor["redis_p50_ms"] == 0.5
    assert doc["machine"]["cores"] == 2 and doc["elapsed_s"] == 12.3


def test_every_figure_is_a_ratio_to_the_floor_at_the_closest_rate() -> None:
    sc = _report()["scenarios"]
    low, high = sc["request_response"]
    assert (low["floor_rate"], low["x_floor_p50"], low["x_floor_p99"]) == (50, 5.0, 5.0)
    assert (high["floor_rate"], high["x_floor_p50"], high["x_floor_p99"]) == (500, 10.0, 10.0)
    assert sc["push"][0]["floor_rate"] == 50  # 120/s is closest to the 50/s floor
    assert sc["http"][0]["x_floor_p50"] == 8.0  # HTTP against Redis's own round trip


def test_table_and_plots_show_the_figures(tmp_path: Path) -> None:
    doc = _report()
    text = report.table(doc)
    assert "request->response" in text and "floor kafka echo" in text
    assert "10.0x" in text and "2,000 B/session" in text
    assert not [line for line in text.splitlines() if line.startswith("  ") and ">timeout" in line]
    written = plots.plot(doc, tmp_path / "plots")
    assert [p.name for p in written] == ["request_response.png", "http.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)


def test_table_shows_timeouts_saturation_and_short_ingest(tmp_path: Path) -> None:
    doc = _report()
    saturated = _window(answered=194, unanswered=6).entry(1000, 2000, ingest_sent_per_s=1500.0)
    doc["scenarios"]["request_response"].append({**saturated, "topology": "all"})
    (row,) = [line for line in report.table(doc).splitlines() if "  1,000  " in line]
    assert row.split()[3:7] == ["100.5", "190.1", ">timeout", ">timeout"]  # p50 p95 p99 max
    assert "(saturated: 6 of 200 unanswered; ingest short: 1,500/s sent)" in row
    assert len(plots.plot(doc, tmp_path)) == 2  # a missing p99 is a gap, not a failure


def _on(topology_name: str, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "topology": topology_name} for e in entries]


def _ingest_run(topology_name: str, role: str, workers: int, rate: float) -> dict[str, Any]:
    return {
        "topology": topology_name,
        "role": role,
        "workers": workers,
        "events": 10,
        "events_per_s": rate,
        "first_to_last_per_s": rate,
        "producer_per_s": 1e5,
    }


def _both_report() -> dict[str, Any]:
    """A `--topology both` run: every latency measured on `all` and on `split` workers."""
    machine = {"cores": 2, "cpu_model": "x", "ram_gb": 4.0, "kafka": "3.9.1", "redis": "7"}
    machine.update(python="3.11", bench={"quick": True}, topology="both")
    machine["topologies"] = {"all": ["all"], "split": ["ingest", "query"]}
    rr = [_entry(200, 2000, 10, 20), _entry(500, 2000, 40, 90)]
    split_rr = [_entry(200, 2000, 5, 30), _entry(500, 2000, 20, 45)]
    workers = [
        {"worker": 0, "role": "all", "topology": "all", "start_mb": 150.0, "end_mb": 170.0},
        {"worker": 1, "role": "ingest", "topology": "split", "start_mb": 151.0, "end_mb": 160.0},
        {"worker": 2, "role": "query", "topology": "split", "start_mb": 140.0, "end_mb": 145.0},
    ]
    return report.build(
        machine,
        ingest=[
            _ingest_run("split", "ingest", 1, 700.0),
            _ingest_run("all", "all", 2, 900.0),
            _ingest_run("all", "all", 1, 500.0),
        ],
        request_response=_on("all", rr) + _on("split", split_rr),
        # Pushes come at the rate carts do, a little different in each window.
        push=_on("all", [_entry(120, 2000, 6, 12)]) + _on("split", [_entry(131, 2000, 3, 24)]),
        http=_on("all", [_entry(200, 2000, 4, 8)]) + _on("split", [_entry(200, 2000, 2, 8)]),
        floor_kafka=[_entry(50, 0, 2, 4), _entry(200, 0, 3, 5), _entry(500, 0, 4, 9)],
        floor_redis=[_entry(200, 0, 0.5, 1)],
        memory={"bytes_per_session": 2000, "sessions": 10, "workers": workers},
        started="2026-01-01T00:00:00+00:00",
        elapsed_s=99.0,
    )


def test_both_topologies_keep_the_issue_shape_and_say_which_entry_is_which() -> None:
    sc = orjson.loads(orjson.dumps(_both_report()))["scenarios"]
    # The headline ingest figure is one `all` worker's; every run names its topology and role.
    assert (sc["ingest"]["events_per_s"], sc["ingest"]["topology"]) == (500.0, "all")
    runs = [(r["topology"], r["role"], r["workers"]) for r in sc["ingest"]["runs"]]
    assert runs == [("all", "all", 1), ("all", "all", 2), ("split", "ingest", 1)]
    for name in ("request_response", "push", "http"):
        assert {e["topology"] for e in sc[name]} == {"all", "split"}
        assert all(set(report.ENTRY_KEYS) <= set(e) for e in sc[name])
    assert sc["floor"]["kafka_p50_ms"] == 3


def test_split_is_compared_with_all_at_the_same_rates() -> None:
    ratios = {
        (r["scenario"], r["rate"]): (r["split_over_all_p50"], r["split_over_all_p99"])
        for r in _both_report()["scenarios"]["topology_ratios"]
    }
    assert ratios == {
        ("request_response", 200): (0.5, 1.5),
        ("request_response", 500): (0.5, 0.5),
        ("push", 131): (0.5, 2.0),  # matched by ingest rate: a push has no rate of its own
        ("http", 200): (0.5, 1.0),
    }
    assert _report()["scenarios"]["topology_ratios"] == []  # one topology: nothing to compare


def test_table_and_plots_name_the_topologies_and_roles(tmp_path: Path) -> None:
    doc = _both_report()
    text = report.table(doc)
    assert "topology both (all: 1 all worker; split: 1 ingest + 1 query workers)" in text
    assert "topology split (1 ingest + 1 query workers):" in text
    assert "split / all" in text and "1.50x" in text
    assert "worker 2 (query) RSS 140 -> 145 MB" in text
    assert "1 ingest" in text.split("latency in ms")[0]  # the ingest table says the role
    assert len(plots.plot(doc, tmp_path)) == 2


def test_each_role_waits_for_the_groups_it_reads() -> None:
    s = Settings().isolated("t")
    wanted = {(n.group, n.topic, n.members) for n in topology.needs(s, ["ingest", "query"])}
    assert wanted == {
        (s.events_group, s.topic_events, 1),
        (s.app_id, s.topic_catalog, 1),
        (s.requests_group, s.topic_requests, 1),
        (f"{s.app_id}-query", None, 1),
    }
    two = {(n.group, n.members) for n in topology.needs(s, ["all", "all"])}
    assert two == {(s.events_group, 2), (s.app_id, 2), (s.requests_group, 2)}
    with pytest.raises(ConfigError):
        topology.needs(s, ["all", "query"])  # one topology at a time
    assert topology.topologies("both") == ("all", "split")
    with pytest.raises(ConfigError):
        topology.topologies("mesh")


def _signal_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(0.5)  # the handler runs at the next bytecode; the sleep gives it one


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_raises_stopped_even_where_sigint_was_inherited_ignored(
    signum: signal.Signals,
) -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` from a script starts it
    try:
        with pytest.raises(Stopped) as stopped, StopSignals():
            _signal_self(signum)
        assert isinstance(stopped.value, KeyboardInterrupt)  # the CLI exits 130 on it
        assert str(stopped.value) == f"{signum.name} received"
        # Left as they were found: SIGINT still ignored, SIGTERM back to its default.
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_stop_signal_inside_hold_is_raised_when_the_block_ends() -> None:
    done: list[str] = []
    with pytest.raises(Stopped), StopSignals() as signals:
        with signals.hold():
            _signal_self(signal.SIGINT)
            done.append("rest of the block")
        done.append("after the block")
    assert done == ["rest of the block"]


def test_stop_signals_during_the_cleanup_are_only_reported() -> None:
    with pytest.raises(Stopped), StopSignals() as signals:
        try:
            _signal_self(signal.SIGTERM)
        finally:
            cleaned = []
            signals.cleaning()
            _signal_self(signal.SIGINT)  # a second Ctrl-C must not cut the cleanup short
            cleaned.append("all of it")
    assert cleaned == ["all of it"]
