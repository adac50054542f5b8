"""How a variant changes an answer: the inputs recommend already takes, transformed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from stream_reco.experiments.assign import Arm, assign, unit
from stream_reco.experiments.config import Variant
from stream_reco.ranking import rank
from stream_reco.ranking.policy import Policy, RulesConfig
from stream_reco.response import Answer
from stream_reco.runtime import Runtime

_CACHE_MAX = 256
# (id of the placement's policy, λ) -> (that policy, the policy with λ): policies are resolved
# once per rules change, so a request's variant policy is one dict get, not a re-validation.
_WITH_LAMBDA: dict[tuple[int, float], tuple[Policy, Policy]] = {}


def arm_for(
    rules: RulesConfig, placement: str | None, user_id: str | None, session_id: str
) -> Arm | None:
    """The arm this answer is served under, None when no experiment runs on its placement."""
    exp = rules.experiments.for_placement(placement)
    return None if exp is None else assign(exp, unit(user_id, session_id))


def configure(
    variant: Variant, a: rank.Ask, fixed: Mapping[str, float]
) -> tuple[rank.Ask, Mapping[str, float], bool]:
    """A request's ask (its policy's λ), fixed blend and whether the learned model may rank,
    as the variant configures them."""
    ask = (
        a if variant.mmr_lambda is None else dataclasses.replace(a, rules=policy(variant, a.rules))
    )
    return ask, blend(variant, fixed), variant.learned_ranker


def holdout(live: Runtime, a: rank.Ask, arm: Arm) -> Answer:
    """What the holdout is served: the worker's cached popular list (not read from Redis) or
    nothing; not marked degraded, as it is what was meant."""
    held = arm.experiment.holdout
    if held is None or held.serve == "none":
        return Answer([])
    return dataclasses.replace(rank.fallback(live, a), degraded=None)


def blend(variant: Variant, fixed: Mapping[str, float]) -> Mapping[str, float]:
    """The fixed blend with the variant's weight overrides (0 switches a source off)."""
    return {**fixed, **variant.blend} if variant.blend else fixed


def policy(variant: Variant, rules: Policy) -> Policy:
    """The placement's policy with the variant's diversity λ, if it sets one."""
    lam = variant.mmr_lambda
    if lam is None or lam == rules.mmr_lambda:
        return rules
    key = (id(rules), lam)
    hit = _WITH_LAMBDA.get(key)
    if hit is not None and hit[0] is rules:
        return hit[1]
    if len(_WITH_LAMBDA) >= _CACHE_MAX:
        _WITH_LAMBDA.clear()  # old rules' entries: cheap to rebuild
    made = dataclasses.replace(rules, mmr_lambda=lam)
    _WITH_LAMBDA[key] = (rules, made)
    return made
