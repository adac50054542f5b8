"""The Grafana dashboard (deploy/grafana/stream-reco.json) queries only what /metrics serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_reco import metrics
from stream_reco.config import Settings
from stream_reco.runtime import Runtime

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "stream-reco.json"
METRIC = re.compile(r"\bstream_reco_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return orjson.loads(DASHBOARD.read_bytes())


def _exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]


def _served() -> set[str]:
    def no_store() -> Any:
        raise AssertionError("naming the metrics must not touch the store")

    obs = metrics.Observer(Settings(), Runtime(), [], no_store, summary=None)
    return metrics.names(obs.registry)


def test_every_metric_the_dashboard_queries_exists_in_the_registry(
    dashboard: dict[str, Any],
) -> None:
    used = {name for expr in _exprs(dashboard) for name in METRIC.findall(expr)}
    assert len(used) >= 10, used
    missing = sorted(used - _served())
    assert not missing, f"queried by the dashboard but not served by /metrics: {missing}"


def test_the_dashboard_shows_what_the_issue_asks_for(dashboard: dict[str, Any]) -> None:
    text = " ".join(_exprs(dashboard))
    for wanted in (
        'stream_reco_events_total{outcome="applied"}',
        "histogram_quantile(0.99, sum by (le, via) (rate(stream_reco_request_latency_seconds",
        "stream_reco_push_latency_seconds_bucket",
        "stream_reco_dead_letters_total",
        "stream_reco_consumer_lag",
        "stream_reco_degraded_answers_total",
        "stream_reco_model_version",
        "stream_reco_experiment_clicks",
    ):
        assert wanted in text, wanted


def test_panels_are_well_formed(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        assert p["targets"] and p["datasource"]["uid"] == "${datasource}", p["title"]
        assert all(t["expr"].count("(") == t["expr"].count(")") for t in p["targets"]), p["title"]
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
