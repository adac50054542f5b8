"""The metrics' and dashboard's own bookkeeping: bounded, masked, and what they add up to."""

from __future__ import annotations

import base64

import orjson
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream_reco import metrics
from stream_reco.config import Settings
from stream_reco.dashboard import data, recent
from stream_reco.errors import ERRORS
from stream_reco.events import dead_letter
from stream_reco.runtime import Runtime


def _value(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _observer() -> metrics.Observer:
    return metrics.Observer(Settings(), Runtime(), [], lambda: None, summary=None)  # type: ignore[arg-type,return-value]


def test_a_dead_letter_is_counted_by_its_reason_with_values_masked() -> None:
    before = generate_latest(_observer().registry).decode()
    raw = orjson.dumps({"type": "click", "session_id": "s-secret"})
    letter = dead_letter("invalid event: item_id missing in 's-secret'", "ev-t", 0, 1, None, raw, 1)
    metrics.dead_lettered(letter, "ev-t")
    after = generate_latest(_observer().registry).decode()
    assert "s-secret" not in after
    name = "stream_reco_dead_letters_total"
    assert _value(after, name, topic="ev-t") - _value(before, name, topic="ev-t") == 1
    events = "stream_reco_events_total"
    claimed = {"type": "click", "outcome": "rejected"}
    assert _value(after, events, **claimed) - _value(before, events, **claimed) == 1
    assert base64.b64decode(orjson.loads(letter)["value_b64"]) == raw


def test_dead_letter_reasons_are_capped() -> None:
    for n in range(metrics.MAX_REASONS + 20):
        reason = f"kind {'x' * (n % 97)}{chr(65 + n % 26)} broken"
        metrics.dead_lettered(dead_letter(reason, "cap-t", 0, n, None, b"{}", 1), "other-t")
    text = generate_latest(_observer().registry).decode()
    kinds = {
        s.labels["reason"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "stream_reco_dead_letters_total"
    }
    assert len(kinds) <= metrics.MAX_REASONS + 1


def test_failures_are_read_from_errors_at_scrape_time() -> None:
    obs = _observer()
    ERRORS["test_kind"] += 3
    text = generate_latest(obs.registry).decode()
    assert _value(text, "stream_reco_failures_total", kind="test_kind") >= 3


def test_the_explorer_keeps_the_last_answers_of_the_latest_sessions_only() -> None:
    last = recent.LastAnswers(sessions=3, per=2)
    for n in range(5):
        last.add({"session_id": f"s{n}", "n": n})
    last.add({"session_id": "s4", "n": 50})
    last.add({"session_id": "s4", "n": 51})
    assert last.of("s0") == [] and last.of("s1") == []
    assert [a["n"] for a in last.of("s4")] == [51, 50]  # newest first, at most `per`
    assert last.of("s2") and last.of("s3")


def test_rates_and_the_wilson_interval() -> None:
    rates = data.Rates(window_s=5)
    assert rates.update({"n": 0}, now=100.0) == {"n": 0.0}
    assert rates.update({"n": 10}, now=102.0) == {"n": 5.0}
    assert rates.update({"n": 40}, now=112.0)["n"] == 3.0  # the window's oldest kept sample
    lo, hi = data.wilson(30, 1000)
    assert lo < 0.03 < hi and 0.019 < lo and hi < 0.044
    assert data.wilson(0, 0) == (0.0, 1.0)
    row = data.variant_row(
        {"variant": "a", "impressions": 200, "clicks": 20, "sessions": 10, "revenue": 50}
    )
    assert row["ctr"] == 0.1 and row["revenue_per_session"] == 5.0
    assert row["ctr_interval"][0] < 0.1 < row["ctr_interval"][1]


def test_an_experiments_summary_row_shows_its_own_intervals() -> None:
    row = {
        "experiment": "e1",
        "variant": "b",
        "impressions": 100,
        "clicks": 7,
        "ctr": {"value": 0.07, "low": 0.03, "high": 0.14, "p_value": 0.2},
        "revenue_per_session": {"value": 3.5, "low": 1.0, "high": 6.0},
    }
    out = data.variant_row(row)
    assert out["ctr"] == 0.07 and out["ctr_interval"] == [0.03, 0.14]
    assert out["ctr_p_value"] == 0.2
    assert out["revenue_per_session"] == 3.5 and out["revenue_interval"] == [1.0, 6.0]
    assert out["experiment"] == "e1" and out["variant"] == "b"


def test_a_hostile_dead_letter_is_counted_never_raised() -> None:
    for raw in (b'{"type": ["view"]}', b'{"type": {"a": 1}}', b"[1]", b"\xff\xfe", b"", None):
        metrics.dead_lettered(dead_letter("invalid event: x", "h-t", 0, 1, None, raw, 1), "h-t")
    metrics.dead_lettered(b"not a dead letter", "h-t")
    text = generate_latest(_observer().registry).decode()
    assert _value(text, "stream_reco_events_total", type="unknown", outcome="rejected") >= 6
