"""Which ranker answered each evaluated position, and the learned model a run ended with."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stream_reco.ranking.model import ModelFormatError, Weights
from stream_reco.response import Answer

# The fixed blend (also when the model was skipped to stay in budget), the learned model, or
# the worker's cached popular list (the sources were too slow or down).
RANKERS = ("blend", "model", "popular")
RECALL_AT = 100


def ranker(answer: Answer) -> str:
    """The ranker that ordered this answer: only the learned model stamps a version."""
    if answer.model_version > 0:
        return "model"
    if answer.degraded == "popular":
        return "popular"
    return "blend"


def ranked_by(answers: Iterable[Answer]) -> dict[str, int]:
    """Positions answered per ranker, every ranker named (0 when it never answered)."""
    tally = Tally()
    for answer in answers:
        tally.add(answer)
    return tally.ranked_by()


@dataclass
class Tally:
    """Counted per answer as a test phase goes, so no answer is kept after it is scored."""

    degraded: int = 0  # answers over the time budget: the model or the sources given up
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RANKERS, 0))
    recall_hits: int = 0  # positions whose true next item was among the first RECALL_AT
    recall_n: int = 0

    def add(self, answer: Answer, target: str | None = None) -> None:
        """Count one answer; with the position's true next item, also whether the candidate
        set held it: among the first RECALL_AT allowed candidates in the first ordering
        stage's order (what any ranker of the head could have put on top)."""
        self.counts[ranker(answer)] += 1
        self.degraded += answer.degraded is not None
        if target is not None:
            self.recall_n += 1
            top = itertools.islice(answer.ranked, RECALL_AT)
            self.recall_hits += any(c.item_id == target for c, _ in top)

    @property
    def candidate_recall_at_100(self) -> float | None:
        """Recall@100 of the candidate set in %, None when no target was counted."""
        return 100.0 * self.recall_hits / self.recall_n if self.recall_n else None

    def ranked_by(self) -> dict[str, int]:
        return dict(self.counts)

    @property
    def positions(self) -> int:
        return sum(self.counts.values())


def model_summary(raw: bytes | None) -> dict[str, Any]:
    """The published model document as the report shows it: version 0 (the fixed blend, as a
    worker starts) when nothing was published; the reason when it cannot be read."""
    if raw is None:
        return {"version": 0, "examples": 0, "edge": 0.0}
    try:
        model = Weights.from_json(raw)
    except ModelFormatError as exc:
        return {"version": 0, "examples": 0, "edge": 0.0, "unreadable": str(exc)}
    return {"version": model.version, "examples": model.examples, "edge": model.edge}


def summary_line(name: str, run: dict[str, Any]) -> str | None:
    """One line under the terminal table for an engine run; None for a baseline."""
    if "ranked_by" not in run:
        return None
    counts = run["ranked_by"]
    who = " / ".join(f"{r} {counts.get(r, 0)}" for r in RANKERS)
    m = run["model"]
    recall = run.get("candidate_recall_at_100")
    line = (
        f"{name}: ranked by {who} of {sum(counts.values())} positions; learned model "
        f"v{m['version']}, {m['examples']} examples seen, edge {m['edge']:+.4f}"
    )
    if recall is not None:
        line += f"; candidate recall@100 {recall:.2f}"
    return line
