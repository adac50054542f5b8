"""Experiments in the rules file and in reco-config: parsed, validated with clear errors, kept
in the published rules document, one per scope."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream_reco import runtime
from stream_reco.errors import ConfigError
from stream_reco.events import Rejected
from stream_reco.experiments import config
from stream_reco.ranking import policy

AB = {
    "variants": [
        {"name": "learned", "share": 0.45, "control": True},
        {"name": "blend", "share": 0.45, "learned_ranker": False, "blend": {"sknn": 0}},
    ],
    "holdout": {"share": 0.1, "serve": "none"},
}
TOML = """
[default]
category_cap = 3

[experiments.ranker]
salt = "r1"
variants = [
  {name = "learned", share = 0.5, control = true},
  {name = "diverse", share = 0.5, mmr_lambda = 0.6},
]
"""


def test_a_rules_file_defines_experiments(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(TOML)
    rules = policy.load_file(path)
    exp = rules.experiments.for_placement("cart")
    assert exp is not None and exp.name == "ranker" and exp.salt == "r1"
    assert [v.name for v in exp.variants] == ["learned", "diverse"]
    assert exp.variants[1].mmr_lambda == 0.6 and exp.control.name == "learned"
    assert rules.default.category_cap == 3 and rules.placements == ()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"variants": [{"name": "a", "share": 1.0, "control": True}]}, "2..10 variants"),
        ({"holdout": {"share": 0.2}}, "sum to 1, they sum to 1.1"),
        ({"holdout": {"share": 0.1, "serve": "random"}}, "holdout.serve must be one of"),
        ({"colour": "red"}, "unknown fields ['colour']"),
        ({"salt": ""}, "salt must be a string"),
    ],
)
def test_bad_definitions_say_what_to_fix(change: dict[str, object], says: str) -> None:
    with pytest.raises(config.Invalid, match=says.replace("[", r"\[").replace("(", r"\(")):
        config.parse("ab", AB | change)


@pytest.mark.parametrize(
    ("variants", "says"),
    [
        ([{"name": "a", "share": 0.5}, {"name": "b", "share": 0.5}], "exactly one variant needs"),
        (
            [{"name": "a", "share": 0.5, "control": True}, {"name": "a", "share": 0.5}],
            "unique; repeated: ['a']",
        ),
        (
            [
                {"name": "a", "share": 0.5, "control": True},
                {"name": "b", "share": 0.5, "blend": {"magic": 1}},
            ],
            "unknown features ['magic']",
        ),  # fmt: skip
        (
            [
                {"name": "a", "share": 0.5, "control": True},
                {"name": "b", "share": 0.5, "mmr_lambda": 2},
            ],
            "mmr_lambda must be in 0..1",
        ),  # fmt: skip
        ([{"name": "a b", "share": 0.5, "control": True}, {"name": "b", "share": 0.5}], "name"),
        ([{"name": "a", "share": 0.5, "control": 1}, {"name": "b", "share": 0.5}], "true or false"),
    ],
)
def test_bad_variants_say_what_to_fix(variants: list[object], says: str) -> None:
    with pytest.raises(config.Invalid, match=says.replace("[", r"\[")):
        config.parse("ab", {"variants": variants})


def test_reco_config_sets_and_removes_an_experiment_in_the_stored_document() -> None:
    key, value = b"experiment:ab", orjson.dumps(AB)
    update = policy.decode_config(key, value)
    assert isinstance(update, policy.RulesUpdate)
    doc = runtime.store_update(None, update.key, orjson.loads(value))
    rules = runtime.rules_from(policy.RulesConfig(), doc)
    exp = rules.experiments.for_placement(None)
    assert exp is not None and exp.holdout is not None and exp.holdout.serve == "none"
    assert exp.variants[1].blend == {"sknn": 0.0} and not exp.variants[1].learned_ranker
    assert "experiment:ab" not in rules.placements  # not a placement
    assert policy.decode_config(key, None) == policy.RulesUpdate("experiment:ab", None)
    gone = runtime.rules_from(policy.RulesConfig(), runtime.store_update(doc, update.key, None))
    assert gone.experiments.for_placement(None) is None


def test_bad_reco_config_experiments_are_rejected_with_the_reason() -> None:
    bad = policy.decode_config(b"experiment:ab", orjson.dumps(AB | {"holdout": {"share": 0.5}}))
    assert isinstance(bad, Rejected) and "sum to 1" in bad.reason
    name = policy.decode_config(b"experiment:a/b", orjson.dumps(AB))
    assert isinstance(name, Rejected) and "experiment name" in name.reason
    placement = policy.decode_config(b"default", orjson.dumps({"experiments": {}}))
    assert isinstance(placement, Rejected)


def test_one_experiment_per_scope() -> None:
    rules = policy.RulesConfig().apply(policy.RulesUpdate("experiment:a", config.parse("a", AB)))
    second = rules.apply(policy.RulesUpdate("experiment:b", config.parse("b", AB)))
    assert second.problem() is not None and "both run on the whole shop" in second.problem()
    assert second.experiments.for_placement(None).name == "a"  # every worker picks the same
    scoped = rules.apply(
        policy.RulesUpdate("experiment:b", config.parse("b", AB | {"placement": "cart"}))
    )
    assert scoped.problem() is None
    assert scoped.experiments.for_placement("cart").name == "b"
    assert scoped.experiments.for_placement("home").name == "a"
    with pytest.raises(ConfigError, match="both run on"):
        policy.from_dict({"experiments": {"a": AB, "b": AB}})


def test_a_stopped_experiment_claims_nothing_but_stays_defined() -> None:
    stopped = config.parse("b", AB | {"enabled": False})
    rules = policy.RulesConfig().apply(policy.RulesUpdate("experiment:a", config.parse("a", AB)))
    both = rules.apply(policy.RulesUpdate("experiment:b", stopped))
    assert both.problem() is None and both.experiments.for_placement(None).name == "a"
    assert [e.name for e in both.defined()] == ["a", "b"]
    alone = policy.RulesConfig().apply(policy.RulesUpdate("experiment:b", stopped))
    assert alone.experiments.for_placement(None) is None and not alone.experiments.running
    with pytest.raises(config.Invalid, match="enabled must be true or false"):
        config.parse("b", AB | {"enabled": "no"})
