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


def test_a_conflict_the_rules_already_had_blocks_only_updates_that_touch_it() -> None:
    """A rules file changed under topic entries (then a restart) may leave two experiments
    on one scope: unrelated updates still apply; one adding or joining a clash does not."""
    a, b = config.parse("a", AB), config.parse("b", AB)
    before = [a, b]  # both shop-wide: the clash the workers restarted with
    policy_update = before  # a placement's policy changes no experiment
    assert config.conflicts(before) is not None
    assert config.added_conflict(before, policy_update, None) is None
    cart = config.parse("c", AB | {"placement": "cart"})
    assert config.added_conflict(before, [*before, cart], "c") is None
    home = [*before, cart, config.parse("d", AB | {"placement": "cart"})]
    assert "both run on placement 'cart'" in str(config.added_conflict(before, home, "d"))
    # An update of one of the clashing experiments must resolve it, not keep it.
    changed = [a, config.parse("b", AB | {"salt": "new"})]
    says = config.added_conflict(before, changed, "b")
    assert says is not None and '"enabled": false' in says
    stopped = [a, config.parse("b", AB | {"enabled": False})]
    assert config.added_conflict(before, stopped, "b") is None
    # A third on the clashing scope adds to it.
    assert config.added_conflict(before, [*before, config.parse("e", AB)], "e") is not None


def test_defined_experiments_are_bounded_stopped_ones_too() -> None:
    stopped = [config.parse(f"x{n}", AB | {"enabled": False}) for n in range(config.MAX_DEFINED)]
    assert config.conflicts(stopped) is None
    more = [*stopped, config.parse("y", AB | {"enabled": False})]
    says = config.conflicts(more)
    assert says is not None and f"at most {config.MAX_DEFINED}" in says
    assert config.added_conflict(stopped, more, "y") == says
    fewer = more[1:]  # removing one of too many is allowed
    assert config.added_conflict(more, fewer, "x0") is None


@pytest.mark.parametrize(
    ("placement", "says"),
    [
        ("", "placement must be a placement name"),
        ("x" * 129, "placement must be a placement name"),
        ("car\x00t", "placement must be a placement name"),
        (7, "placement must be a placement name"),
        ("experiment:ab", "name experiments"),
    ],
)
def test_an_experiments_placement_is_checked_as_the_policys_are(
    placement: object, says: str
) -> None:
    with pytest.raises(config.Invalid, match=says):
        config.parse("ab", AB | {"placement": placement})
    assert config.parse("ab", AB | {"placement": "x" * 128}).placement == "x" * 128


def test_errors_repeat_at_most_64_characters_of_a_value() -> None:
    long = "s" * 10_000
    for doc in (
        AB | {"salt": 10**300},
        AB | {"holdout": {"share": 0.1, "serve": long}},
        AB | {"placement": long},
        AB | {"enabled": long},
        AB | {long: 1},
    ):
        with pytest.raises(config.Invalid) as err:
            config.parse("ab", doc)
        assert len(str(err.value)) < 300, str(err.value)[:400]
    with pytest.raises(config.Invalid) as err:
        config.check_name(long)
    assert len(str(err.value)) < 200
    assert config.shown(long).endswith("...") and len(config.shown(long)) == config.MAX_SHOWN
