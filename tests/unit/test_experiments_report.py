"""What a variant changes in a request, and the report computed from counters alone."""

from __future__ import annotations

import pytest

from stream_reco.config import Settings
from stream_reco.experiments import report, serve
from stream_reco.experiments.assign import Arm
from stream_reco.experiments.config import parse
from stream_reco.ranking import blend, rank
from stream_reco.runtime import Runtime

EXP = parse(
    "ab",
    {
        "variants": [
            {"name": "a", "share": 0.45, "control": True},
            {"name": "b", "share": 0.45, "learned_ranker": False, "blend": {"sknn": 0},
             "mmr_lambda": 0.6},
        ],
        "holdout": {"share": 0.1, "serve": "popular"},
    },
)  # fmt: skip


def test_a_variant_configures_the_blend_the_model_and_the_policy() -> None:
    live = Runtime()
    a = rank.ask(live, 5)
    fixed = blend.for_settings(Settings())
    ask, weights, learned = serve.configure(EXP.variants[1], a, fixed)
    assert weights["sknn"] == 0 and weights["seq"] == fixed["seq"] and fixed["sknn"] > 0
    assert not learned and ask.rules.mmr_lambda == 0.6 and a.rules.mmr_lambda == 1.0
    assert serve.configure(EXP.variants[1], a, fixed)[0].rules is ask.rules  # cached policy
    same, unchanged, on = serve.configure(EXP.variants[0], a, fixed)
    assert same is a and unchanged is fixed and on
    live.fallback = [("x", None), ("y", None)]
    held = serve.holdout(live, a, Arm(EXP, None))
    assert [p.item_id for p in held.picks] == ["x", "y"] and held.degraded is None


def _counters(sessions: int, impressions: int, clicks: int, buyers: int, spend: float) -> dict:
    """Each click on its own answer; every buyer's purchase attributed (the session's
    outcomes: the same plus one unattributed purchase of `spend` per ten sessions)."""
    extra = sessions // 10
    return {
        "sessions": sessions, "impressions": impressions, "clicks": clicks, "carts": buyers,
        "purchases": buyers, "revenue": buyers * spend, "revenue2": buyers * spend * spend,
        "click_sessions": clicks, "cart_sessions": buyers, "purchase_sessions": buyers,
        "clicked_impressions": clicks, "session_carts": buyers,
        "session_purchases": buyers + extra, "session_revenue": (buyers + extra) * spend,
        "session_revenue2": (buyers + extra) * spend * spend, "session_cart_sessions": buyers,
        "session_purchase_sessions": buyers + extra,
    }  # fmt: skip


def test_the_report_tests_each_variant_against_control() -> None:
    counters = {
        "a": _counters(1000, 1000, 100, 50, 20.0),
        "b": _counters(1000, 1000, 150, 50, 20.0),
        "holdout": _counters(220, 0, 0, 0, 0.0),
    }
    doc = report.figures(EXP, counters)
    arms = {v["variant"]: v for v in doc["variants"]}
    assert doc["control"] == "a" and not doc["srm"]["mismatch"]
    assert arms["a"]["ctr"] == {"value": 0.1, "low": pytest.approx(0.0829, abs=1e-4),
                                "high": pytest.approx(0.1202, abs=1e-4)}  # fmt: skip
    b = arms["b"]["ctr"]
    assert b["lift"] == pytest.approx(0.5) and b["p_value"] < 0.001 and b["needed"] == 0
    conv = arms["b"]["conversion"]
    assert conv["p_value"] == 1.0 and conv["lift"] == 0.0 and conv["needed"] is None
    assert arms["b"]["revenue_per_session"]["value"] == pytest.approx(1.0)
    assert arms["holdout"]["ctr"]["value"] == 0.0
    table = report.render([doc])
    assert "experiment ab on the whole shop (control: a)" in table and "p<0.0001 *" in table
    assert "WARNING" not in table


def test_a_broken_split_is_flagged() -> None:
    counters = {
        "a": _counters(1000, 1000, 100, 50, 20.0),
        "b": _counters(700, 700, 70, 35, 20.0),
        "holdout": _counters(190, 0, 0, 0, 0.0),
    }
    doc = report.figures(EXP, counters)
    assert doc["srm"]["mismatch"] and "sample-ratio mismatch" in report.render([doc])


def test_ctr_is_the_share_of_answers_clicked() -> None:
    """Several clicks on one answer, or clicks beyond the answers shown, never raise CTR:
    its numerator is the answers clicked at least once."""
    a = _counters(1000, 1000, 100, 50, 20.0)
    b = {**_counters(1000, 1000, 100, 50, 20.0), "clicks": 1400, "clicked_impressions": 80}
    arms = {v["variant"]: v for v in report.figures(EXP, {"a": a, "b": b})["variants"]}
    assert arms["b"]["ctr"]["value"] == pytest.approx(0.08) and arms["b"]["clicks"] == 1400
    assert arms["b"]["ctr"]["lift"] == pytest.approx(-0.2)


def test_the_holdout_is_compared_on_every_outcome_of_exposed_sessions() -> None:
    """A holdout shown nothing has no attributed outcome; its sessions' own purchases are
    what the variants are compared against."""
    counters = {
        "a": _counters(1000, 1000, 100, 50, 20.0),
        "b": _counters(1000, 1000, 150, 50, 20.0),
        "holdout": {**_counters(220, 0, 0, 0, 0.0), "session_purchase_sessions": 11,
                    "session_purchases": 11, "session_revenue": 220.0,
                    "session_revenue2": 11 * 400.0},
    }  # fmt: skip
    arms = {v["variant"]: v for v in report.figures(EXP, counters)["variants"]}
    held = arms["holdout"]
    assert held["conversion"]["value"] == 0.0 and held["revenue_per_session"]["value"] == 0.0
    assert held["session_conversion"]["value"] == pytest.approx(0.05)
    assert held["session_revenue_per_session"]["value"] == pytest.approx(1.0)
    assert arms["a"]["session_conversion"]["value"] == pytest.approx(0.15)
    assert held["session_conversion"]["p_value"] < 0.001  # against control's 15 %
    assert held["session_revenue_per_session"]["low"] >= 0.0
    table = report.render([report.figures(EXP, counters)])
    assert "attributed to recommendations:" in table
    assert "all outcomes of exposed sessions:" in table


def test_a_lone_session_gets_an_unbounded_revenue_interval_and_a_readable_table() -> None:
    counters = {"a": _counters(1, 1, 1, 1, 20.0), "b": _counters(1, 1, 0, 0, 0.0)}
    doc = report.figures(EXP, counters)
    a = {v["variant"]: v for v in doc["variants"]}["a"]
    assert a["revenue_per_session"] == {"value": 20.0, "low": 0.0, "high": None}
    assert a["click_rate"]["value"] == 1.0
    table = report.render([doc])
    assert "revenue/session 20.00 [0.00, ?]" in table and "clicking sessions" in table
