"""`stream-reco demo` runs an experiment by default: two variants and a holdout, its shoppers
click what they are shown, and the report has figures for every arm, whose intervals narrow
as more shoppers click."""

from __future__ import annotations

import dataclasses

import orjson
from confluent_kafka.admin import AdminClient

from stream_reco.config import Settings
from tests.integration.conftest import _forget_run, run_cli, uid


def test_the_demo_runs_an_experiment_the_report_reads(settings: Settings) -> None:
    tag = uid("xdemo")
    own = dataclasses.replace(settings.isolated(tag), web_port=settings.web_port + 58)
    try:
        out = run_cli(own, "demo", "--duration", "10", "--rate", "300", "--no-stack", timeout=180)
        assert "stream-reco experiments report" in out
        assert f"http://127.0.0.1:{own.web_port}/dashboard" in out
        assert "[demo: " in out  # pushes name their variant
        doc = orjson.loads(run_cli(own, "experiments", "report", "--json"))
        [exp] = doc["experiments"]
        arms = {v["variant"]: v for v in exp["variants"]}
        assert set(arms) == {"learned", "no-sknn", "holdout"}
        assert all(v["sessions"] > 0 for v in arms.values())
        assert sum(v["clicks"] for v in arms.values()) > 0
        ctr = arms["learned"]["ctr"]
        assert 0 <= ctr["low"] <= ctr["value"] <= ctr["high"] <= 1
        # More shoppers clicking: a second run on the same topics and store adds to the same
        # counters, and the two main arms' intervals narrow (the holdout is too small to say).
        run_cli(own, "demo", "--duration", "10", "--rate", "300", "--no-stack", timeout=180)
        again = orjson.loads(run_cli(own, "experiments", "report", "--json"))
        later = {v["variant"]: v for v in again["experiments"][0]["variants"]}
        for arm in ("learned", "no-sknn"):
            assert later[arm]["impressions"] > arms[arm]["impressions"]
            before, after = arms[arm]["ctr"], later[arm]["ctr"]
            assert after["high"] - after["low"] < before["high"] - before["low"], arm
    finally:
        admin = AdminClient({"bootstrap.servers": own.kafka_bootstrap_servers})
        topics = [t for t in admin.list_topics(timeout=10).topics if t.endswith(tag)]
        for fut in admin.delete_topics(topics, operation_timeout=30).values() if topics else ():
            fut.result()
        _forget_run(settings, own.key_prefix)
