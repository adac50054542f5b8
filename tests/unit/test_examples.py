"""Examples from the stream: which events become examples, and what an example holds."""

from __future__ import annotations

from stream_reco.candidates import Candidate
from stream_reco.events import Event
from stream_reco.ranking import examples


def _ev(n: int, session: str) -> Event:
    return Event(f"{session}-{n}", "view", session, f"i{n}", 1_700_000_000_000 + n)


def _ranked(n: int) -> list[tuple[Candidate, float]]:
    return [(Candidate(f"i{k}", {"seq": 1.0 / (k + 1)}), 1.0 / (k + 1)) for k in range(n)]


def test_the_true_item_is_the_positive_and_the_rest_negatives() -> None:
    x = examples.from_ranked(_ranked(5), "i2")
    assert x is not None and x.positive == {"seq": 1 / 3}
    assert x.negatives == [{"seq": 1.0}, {"seq": 0.5}, {"seq": 0.25}, {"seq": 0.2}]
    assert x.weight == 1


def test_nothing_to_learn_when_the_candidates_missed_the_item() -> None:
    assert examples.from_ranked(_ranked(5), "elsewhere") is None
    assert examples.from_ranked(_ranked(1), "i0") is None  # nothing to rank it against
    deep = examples.from_ranked(_ranked(examples.DEPTH + 50), f"i{examples.DEPTH + 10}")
    assert deep is None  # beyond the depth an example lists


def test_an_example_copies_the_features() -> None:
    ranked = _ranked(3)
    x = examples.from_ranked(ranked, "i0")
    assert x is not None
    ranked[0][0].features["seq"] = 99.0  # the candidates live on; the example must not change
    assert x.positive == {"seq": 1.0}


def test_a_share_samples_the_same_first_events_every_time() -> None:
    batch = [_ev(n, f"s{n % 50}") for n in range(200)]
    sampler = examples.Sampler(share=0.5)
    picked = sampler.pick(batch)
    assert picked == examples.Sampler(share=0.5).pick(batch)  # deterministic by event id
    assert len({e.session_id for e in picked}) == len(picked)  # one per session per batch
    assert all(e.event_id.endswith(f"-{int(e.session_id[1:])}") for e in picked)  # its first
    assert 10 < len(picked) < 40  # about half of the 50 sessions
    assert examples.Sampler(share=0.0).pick(batch) == []


def test_a_rate_caps_examples_per_second() -> None:
    now = [100.0]
    sampler = examples.Sampler(per_s=4, clock=lambda: now[0])
    batch = [_ev(n, f"s{n}") for n in range(20)]
    assert sampler.pick(batch) == []  # no time has passed yet
    now[0] += 0.5
    assert len(sampler.pick(batch)) == 2
    now[0] += 60  # a long quiet spell saves up at most a second's worth
    assert len(sampler.pick(batch)) == 4


def test_only_a_worker_that_learns_makes_examples_and_keeps_few() -> None:
    fresh = examples.Fresh(examples.Sampler(share=1.0), limit=3)
    batch = [_ev(n, f"s{n}") for n in range(5)]
    assert fresh.pick(batch) == []  # not the learner
    fresh.wanted = True
    assert len(fresh.pick(batch)) == 5
    made = [examples.from_ranked(_ranked(3), f"i{n}") for n in range(3)] * 2
    fresh.add([x for x in made if x])
    assert len(fresh.waiting) == 3  # bounded: the oldest went
    assert len(fresh.take(2)) == 2 and len(fresh.take(5)) == 1 and fresh.take(5) == []


def test_a_rate_below_one_a_second_still_makes_examples() -> None:
    now = [0.0]
    sampler = examples.Sampler(per_s=0.5, clock=lambda: now[0])
    batch = [_ev(n, f"s{n}") for n in range(3)]
    got = 0
    for _ in range(20):
        now[0] += 1.0
        got += len(sampler.pick(batch))
    assert got == 10


def test_waiting_examples_are_bounded_by_the_values_they_hold() -> None:
    fresh = examples.Fresh(examples.Sampler(share=1.0), limit=100, values_max=12)
    x = examples.from_ranked(_ranked(5), "i0")  # 5 values each
    assert x is not None
    fresh.add([x, x, x])
    assert len(fresh.waiting) == 2 and fresh.values == 10
    fresh.take(1)
    assert fresh.values == 5
    fresh.clear()
    assert fresh.values == 0 and not fresh.waiting
