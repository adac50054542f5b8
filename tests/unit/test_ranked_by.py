"""Which ranker answered each evaluated position, and the model summary the report shows."""

from __future__ import annotations

from stream_reco.candidates import Candidate
from stream_reco.evaluation.rankers import (
    RANKERS,
    Tally,
    model_summary,
    ranked_by,
    ranker,
    summary_line,
)
from stream_reco.ranking.model import Weights
from stream_reco.response import Answer, Pick

PICKS = [Pick("a", 1.0, "popular")]


def test_each_answer_is_counted_under_the_ranker_that_ordered_it() -> None:
    assert ranker(Answer(PICKS, model_version=3)) == "model"
    assert ranker(Answer(PICKS)) == "blend"
    # The model skipped to stay in budget: the fixed blend ordered it.
    assert ranker(Answer(PICKS, 0, "blend")) == "blend"
    assert ranker(Answer(PICKS, 0, "popular")) == "popular"


def test_ranked_by_names_every_ranker_and_sums_to_the_positions() -> None:
    answers = [
        Answer(PICKS, 2),
        Answer(PICKS, 2),
        Answer(PICKS),
        Answer(PICKS, 0, "blend"),
        Answer([], 0, "popular"),
    ]
    counts = ranked_by(answers)
    assert counts == {"blend": 2, "model": 2, "popular": 1}
    assert list(counts) == list(RANKERS)
    assert ranked_by([]) == {"blend": 0, "model": 0, "popular": 0}


def test_tally_counts_degraded_answers_and_positions() -> None:
    tally = Tally()
    for answer in (Answer(PICKS, 1), Answer(PICKS, 0, "blend"), Answer(PICKS, 0, "popular")):
        tally.add(answer)
    assert tally.positions == 3 and tally.degraded == 2
    assert tally.ranked_by() == {"blend": 1, "model": 1, "popular": 1}
    tally.ranked_by()["model"] = 99  # a copy: the report cannot change the tally
    assert tally.counts["model"] == 1
    assert tally.candidate_recall_at_100 is None  # no target was counted


def test_recall_at_100_counts_the_true_item_among_the_first_100_candidates() -> None:
    ranked = [(Candidate(f"i{n}"), 1.0 - n / 1000) for n in range(150)]
    tally = Tally()
    tally.add(Answer(PICKS, 0, None, [], ranked), "i5")  # found
    tally.add(Answer(PICKS, 0, None, [], ranked), "i120")  # a candidate, but past the 100th
    tally.add(Answer(PICKS, 0, None, [], ranked), "gone")  # never a candidate
    tally.add(Answer(PICKS, 0, "popular"), "i5")  # the fallback gathers nothing
    assert tally.candidate_recall_at_100 == 25.0 and tally.positions == 4


def test_model_summary_reads_the_published_document() -> None:
    doc = Weights(7, 4200, {"seq": 1.5}, 0.0312).to_json()
    assert model_summary(doc) == {"version": 7, "examples": 4200, "edge": 0.0312}
    assert model_summary(None) == {"version": 0, "examples": 0, "edge": 0.0}
    broken = model_summary(b'{"format": 99}')
    assert broken["version"] == 0 and "format 99" in broken["unreadable"]


def test_the_summary_line_is_for_engine_runs_only() -> None:
    run = {
        "ranked_by": {"blend": 10, "model": 30, "popular": 0},
        "model": {"version": 7, "examples": 4200, "edge": 0.0312},
        "candidate_recall_at_100": None,
    }
    line = summary_line("engine[frozen]", run)
    assert line is not None
    assert "blend 10 / model 30 / popular 0 of 40 positions" in line
    assert "v7, 4200 examples seen, edge +0.0312" in line and "recall" not in line
    assert "recall@100 91.50" in (summary_line("e", {**run, "candidate_recall_at_100": 91.5}) or "")
    assert summary_line("vsknn", {"hr": 50.0}) is None
