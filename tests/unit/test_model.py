"""The learned ranker: listwise learning moves weights toward what shoppers chose."""

from __future__ import annotations

import orjson
import pytest

from stream_reco.candidates import Candidate
from stream_reco.ranking import blend
from stream_reco.ranking.model import SCALE, Learner, ModelFormatError, Weights, blend_weights


def _cands() -> list[Candidate]:
    return [
        Candidate("seq-item", {"seq": 0.9, "pop": 0.1}),
        Candidate("popular-item", {"seq": 0.1, "pop": 1.0}),
    ]


def test_feedback_favouring_a_feature_changes_the_order() -> None:
    start = blend_weights()
    before = [c.item_id for c, _ in blend.order(_cands(), start.weights)]
    assert before == ["seq-item", "popular-item"]
    learner = Learner(start, lr=0.5)
    for _ in range(200):  # shoppers keep going to the popular item, passing the sequence one
        learner.learn({"seq": 0.1, "pop": 1.0}, [{"seq": 0.9, "pop": 0.1}])
    learned = learner.snapshot()
    after = [c.item_id for c, _ in blend.order(_cands(), learned.weights)]
    assert after == ["popular-item", "seq-item"]
    assert learned.weights["pop"] > SCALE * start.weights["pop"]
    assert learned.version == 1 and learned.examples == 200


SCALED = {name: SCALE * w for name, w in blend.DEFAULT.items() if w}


def test_no_feedback_keeps_the_blend_order_at_a_softmax_scale() -> None:
    learner = Learner(blend_weights())
    assert learner.snapshot().weights == pytest.approx(SCALED)


def test_identical_candidates_teach_nothing() -> None:
    learner = Learner(blend_weights(), lr=0.5)
    learner.learn({"seq": 0.5}, [{"seq": 0.5}])
    taught = learner.snapshot()
    assert taught.weights == pytest.approx(SCALED)
    assert taught.edge == 0.0  # a tie is the same half place for the model and the blend


def test_a_published_model_is_taken_up_as_it_is() -> None:
    published = Weights(4, 2000, {"seq": 3.0, "pop": 0.5}, edge=0.01)
    assert Learner(published).snapshot().weights == published.weights


def test_a_click_weighs_more_than_a_plain_next_event() -> None:
    plain, click = Learner(blend_weights(), lr=0.1), Learner(blend_weights(), lr=0.1)
    plain.learn({"pop": 1.0}, [{"seq": 1.0}])
    click.learn({"pop": 1.0}, [{"seq": 1.0}], weight=3)
    base = SCALE * blend.DEFAULT["pop"]
    assert click.snapshot().weights["pop"] - base > plain.snapshot().weights["pop"] - base


def test_weights_round_trip_as_plain_json() -> None:
    w = Weights(7, 1234, {"seq": 1.5, "pop": -0.25})
    raw = w.to_json()
    assert orjson.loads(raw)["weights"] == {"pop": -0.25, "seq": 1.5}  # plain data, no pickle
    assert Weights.from_json(raw) == w


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"format": 99, "version": 1, "examples": 1, "weights": {}}',
        b'{"format": 1, "version": 1, "examples": 1, "weights": {"seq": 1.0}}',  # pairwise era
        b'{"format": 2, "version": 1, "examples": 1, "weights": {"seq": "x"}}',
        b'{"format": 2, "version": 1, "examples": 1, "weights": {"seq": 1e999}}',
        b'{"format": 2, "version": 1}',
        b"[]",
    ],
)
def test_unreadable_weights_are_refused(raw: bytes) -> None:
    with pytest.raises(ModelFormatError):
        Weights.from_json(raw)


def test_contributions_name_the_largest_parts() -> None:
    w = Weights(1, 1, {"seq": 1.0, "cooc": 0.1, "pop": 0.001})
    assert w.contributions({"seq": 0.5, "cooc": 1.0, "pop": 1.0}) == [
        ("seq", 0.5),
        ("cooc", 0.1),
        ("pop", 0.001),
    ]
    assert w.contributions({"seq": 0.5}, top=1) == [("seq", 0.5)]


def test_the_edge_tells_whether_the_model_beats_the_blend() -> None:
    # Shoppers pick the popular item over the sequence one: the blend gets that wrong, the
    # learner learns it, so its edge over the blend turns positive.
    against = Learner(blend_weights(), lr=0.5)
    for _ in range(100):
        against.learn({"seq": 0.1, "pop": 1.0}, [{"seq": 0.9, "pop": 0.1}])
    assert against.snapshot().edge > 0
    # Shoppers pick what the blend ranks first anyway: nothing to gain, no positive edge.
    agree = Learner(blend_weights(), lr=0.5)
    for _ in range(100):
        agree.learn({"seq": 0.9, "pop": 0.1}, [{"seq": 0.1, "pop": 1.0}])
    assert agree.snapshot().edge <= 0


def test_only_a_model_with_an_edge_and_enough_examples_ranks() -> None:
    from stream_reco.config import Settings
    from stream_reco.runtime import Runtime

    s = Settings(model_min_examples=10, learned_ranker=True)
    assert not Runtime(model=Weights(3, 50, {"seq": 1.0}, edge=-0.01)).model_ready(s)
    assert not Runtime(model=Weights(3, 5, {"seq": 1.0}, edge=0.2)).model_ready(s)
    ready = Runtime(model=Weights(3, 50, {"seq": 1.0}, edge=0.2))
    assert ready.model_ready(s)
    assert not ready.model_ready(Settings(model_min_examples=10, learned_ranker=False))


def test_the_model_takes_over_on_a_positive_edge_and_hands_back_on_a_negative_one() -> None:
    from stream_reco.config import Settings
    from stream_reco.runtime import Runtime

    s = Settings(model_min_examples=50, learned_ranker=True)
    learner = Learner(blend_weights(), lr=0.05)
    popular, sequel = {"seq": 0.1, "pop": 1.0}, {"seq": 0.9, "pop": 0.1}
    for _ in range(300):  # shoppers go to the popular item: the blend has it second
        learner.learn(popular, [sequel])
    taken = learner.snapshot()
    assert taken.edge > 0 and Runtime(model=taken).model_ready(s)
    # The shop changes: shoppers now follow the sequence, as the blend says. A model that
    # adapts slowly (a small learning rate) is worse than the blend meanwhile: it hands back.
    slow = Learner(taken, lr=0.001)
    for _ in range(300):
        slow.learn(sequel, [popular])
    handed = slow.snapshot()
    assert handed.edge < 0 and not Runtime(model=handed).model_ready(s)


def test_a_model_this_code_cannot_read_still_tells_its_version() -> None:
    from stream_reco.ranking.model import stored_version

    assert stored_version(b'{"format": 1, "version": 41, "examples": 9, "weights": {}}') == 41
    assert stored_version(b"not json") == 0 and stored_version(b"[1]") == 0
