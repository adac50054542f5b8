"""What an experiment is: its variants (ranking configurations), shares, holdout and scope."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from stream_reco.config import FEATURES
from stream_reco.events import CONTROL, MAX_ID_LEN

KEY_PREFIX = "experiment:"  # reco-config key (and stored rules-document key) of an experiment
MAX_EXPERIMENTS = 20  # active at once: each costs one attribution script per event batch
# Defined, stopped ones included: every worker holds and re-validates each on every rules
# change, and the report reads each one's counters.
MAX_DEFINED = 100
MAX_VARIANTS = 10  # beyond this no variant gets enough traffic to tell anything
MAX_NAME_LEN = 64  # names are Redis key parts and report columns
MAX_SHOWN = 64  # characters of a bad value an error message repeats: a message stays short
HOLDOUT = "holdout"  # the variant name a holdout's answers carry
SERVES = ("popular", "none")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Shares are written by hand (0.45, 0.45, 0.1): binary floats never sum to exactly 1.
SHARE_TOLERANCE = 1e-6


class Invalid(ValueError):
    """A bad experiment definition; the message names the field and how to fix it."""


def shown(value: Any) -> str:
    """A value as an error message repeats it: its repr, cut to MAX_SHOWN characters (a
    dead letter's reason and a log line stay short whatever was sent)."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


@dataclass(frozen=True, slots=True)
class Variant:
    """One ranking configuration: the learned ranker on or off (off forces the fixed blend),
    fixed-blend weight overrides (0 switches a source off), the diversity λ if it differs."""

    name: str
    share: float
    control: bool = False
    learned_ranker: bool = True
    blend: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    mmr_lambda: float | None = None


@dataclass(frozen=True, slots=True)
class Holdout:
    share: float
    serve: str = "popular"  # "popular": the worker's cached popular list; "none": nothing


@dataclass(frozen=True, slots=True)
class Experiment:
    name: str
    salt: str
    variants: tuple[Variant, ...]
    holdout: Holdout | None = None
    placement: str | None = None  # None: every answer without an experiment of its placement
    # False: stopped; nothing is assigned or attributed, the report still reads its counters.
    enabled: bool = True

    @property
    def control(self) -> Variant:
        return next(v for v in self.variants if v.control)

    def shares(self) -> dict[str, float]:
        """Configured traffic share per arm, the holdout included: what the SRM check expects."""
        out = {v.name: v.share for v in self.variants}
        if self.holdout is not None:
            out[HOLDOUT] = self.holdout.share
        return out

    def to_json(self) -> dict[str, Any]:
        """The definition as plain JSON data (the report shows it)."""
        return {
            "salt": self.salt,
            "placement": self.placement,
            "enabled": self.enabled,
            "variants": [
                {
                    "name": v.name,
                    "share": v.share,
                    "control": v.control,
                    "learned_ranker": v.learned_ranker,
                    "blend": dict(v.blend),
                    "mmr_lambda": v.mmr_lambda,
                }
                for v in self.variants
            ],
            "holdout": None
            if self.holdout is None
            else {"share": self.holdout.share, "serve": self.holdout.serve},
        }


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unit_share(value: Any, where: str) -> float:
    if not _number(value) or not 0 < value <= 1:
        raise Invalid(f"{where} must be a number in (0, 1], got {shown(value)}")
    return float(value)


def _fields(doc: Any, where: str, allowed: Iterable[str]) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise Invalid(f"{where} must be an object, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise Invalid(f"{where}: unknown fields {shown(unknown)}; valid: {', '.join(allowed)}")
    return doc


def check_name(name: Any, what: str = "experiment name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise Invalid(f"{what} {shown(name)} must be 1..{MAX_NAME_LEN} of A-Z a-z 0-9 . _ -")
    return name


_VARIANT_FIELDS = ("name", "share", "control", "learned_ranker", "blend", "mmr_lambda")


def _variant(doc: Any, where: str) -> Variant:
    doc = _fields(doc, where, _VARIANT_FIELDS)
    name = check_name(doc.get("name"), f"{where}.name")
    if name == HOLDOUT:
        raise Invalid(f"{where}.name: {HOLDOUT!r} is the holdout's; use the holdout field")
    where = f"{where} ({name})"
    for flag in ("control", "learned_ranker"):
        if not isinstance(doc.get(flag, False), bool):
            raise Invalid(f"{where}.{flag} must be true or false, got {shown(doc[flag])}")
    blend = doc.get("blend", {})
    if not isinstance(blend, Mapping):
        raise Invalid(f"{where}.blend must be an object of feature -> weight, e.g. {{sknn = 0}}")
    unknown = sorted(set(blend) - set(FEATURES))
    if unknown:
        raise Invalid(
            f"{where}.blend: unknown features {shown(unknown)}; valid: {', '.join(FEATURES)}"
        )
    bad = sorted(f for f, w in blend.items() if not (_number(w) and 0 <= w <= 1000))
    if bad:
        raise Invalid(f"{where}.blend: weights of {shown(bad)} must be numbers in 0..1000")
    lam = doc.get("mmr_lambda")
    if lam is not None and not (_number(lam) and 0 <= lam <= 1):
        raise Invalid(f"{where}.mmr_lambda must be in 0..1 (1 = pure relevance), got {shown(lam)}")
    return Variant(
        name,
        _unit_share(doc.get("share"), f"{where}.share"),
        doc.get("control", False),
        doc.get("learned_ranker", True),
        MappingProxyType({f: float(w) for f, w in blend.items()}),
        None if lam is None else float(lam),
    )


def _holdout(doc: Any) -> Holdout | None:
    if doc is None:
        return None
    doc = _fields(doc, "holdout", ("share", "serve"))
    serve = doc.get("serve", "popular")
    if serve not in SERVES:
        raise Invalid(f"holdout.serve must be one of {', '.join(SERVES)}, got {shown(serve)}")
    return Holdout(_unit_share(doc.get("share"), "holdout.share"), serve)


def _placement(name: Any) -> str | None:
    """A placement name as the rules' placements take it (ranking/policy.py's checks): a
    request names it, so an experiment on a name no request can carry would never run."""
    if name is None:
        return None
    if not isinstance(name, str) or not name or len(name) > MAX_ID_LEN or CONTROL.search(name):
        raise Invalid(
            f"placement must be a placement name (1..{MAX_ID_LEN} characters, no control "
            f"characters), got {shown(name)}"
        )
    if name.startswith(KEY_PREFIX):
        raise Invalid(f"placement {shown(name)}: names starting {KEY_PREFIX!r} name experiments")
    return name


def parse(name: str, doc: Any) -> Experiment:
    """One experiment from its rules-file section or reco-config value; raises Invalid."""
    check_name(name)
    where = f"experiment {name!r}"
    doc = _fields(doc, where, ("salt", "variants", "holdout", "placement", "enabled"))
    try:
        salt = doc.get("salt", name)
        if not isinstance(salt, str) or not 1 <= len(salt) <= 256:
            raise Invalid(f"salt must be a string of 1..256 characters, got {shown(salt)}")
        raw = doc.get("variants")
        if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_VARIANTS:
            raise Invalid(f"variants must be a list of 2..{MAX_VARIANTS} variants")
        variants = tuple(_variant(v, f"variants[{n}]") for n, v in enumerate(raw))
        names = [v.name for v in variants]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise Invalid(f"variant names must be unique; repeated: {shown(twice)}")
        controls = [v.name for v in variants if v.control]
        if len(controls) != 1:
            found = shown(controls) if controls else "none"
            raise Invalid(f"exactly one variant needs control = true, found {found}")
        holdout = _holdout(doc.get("holdout"))
        total = sum(v.share for v in variants) + (holdout.share if holdout else 0.0)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise Invalid(
                f"variant shares (and the holdout's) must sum to 1, they sum to {total:g}"
            )
        placement = _placement(doc.get("placement"))
        enabled = doc.get("enabled", True)
        if not isinstance(enabled, bool):
            raise Invalid(f"enabled must be true or false, got {shown(enabled)}")
    except Invalid as exc:
        raise Invalid(f"{where}: {exc}") from None
    return Experiment(name, salt, variants, holdout, placement, enabled)


@dataclass(frozen=True)
class Experiments:
    """The running experiments, at most one per placement and one shop-wide: a request's
    experiment is its placement's, else the shop-wide one."""

    by_scope: Mapping[str | None, Experiment] = field(default_factory=dict)

    @classmethod
    def of(cls, defined: Iterable[Experiment]) -> Experiments:
        """Scoped by placement; should two claim one scope (`conflicts` refuses that before it
        is stored), the first by name runs, so every worker picks the same one."""
        scoped: dict[str | None, Experiment] = {}
        for exp in sorted(defined, key=lambda e: e.name):
            if exp.enabled:
                scoped.setdefault(exp.placement, exp)
        return cls(MappingProxyType(scoped))

    def for_placement(self, placement: str | None) -> Experiment | None:
        if not self.by_scope:
            return None  # the common case: one check, no lookups
        got = self.by_scope.get(placement) if placement else None
        return got or self.by_scope.get(None)

    @property
    def running(self) -> list[Experiment]:
        return sorted(self.by_scope.values(), key=lambda e: e.name)


def _scopes(defined: Iterable[Experiment]) -> dict[str | None, list[str]]:
    """The enabled experiments' names by scope (a stopped one claims none), by name."""
    out: dict[str | None, list[str]] = {}
    for exp in sorted(defined, key=lambda e: e.name):
        if exp.enabled:
            out.setdefault(exp.placement, []).append(exp.name)
    return out


def _clash(scope: str | None, names: list[str]) -> str:
    where = f"placement {scope!r}" if scope else "the whole shop"
    return (
        f"experiments {names[0]!r} and {names[1]!r} both run on {where}: stop one first "
        'by publishing its definition with "enabled": false on reco-config key '
        "experiment:<name> (a null value brings back its rules-file definition, if any)"
    )


def _limits(defined: list[Experiment]) -> tuple[int, int]:
    return len(defined), sum(1 for e in defined if e.enabled)


def _too_many(total: int, enabled: int) -> str | None:
    if total > MAX_DEFINED:
        return f"{total} experiments defined, at most {MAX_DEFINED}: remove stopped ones (null)"
    if enabled > MAX_EXPERIMENTS:
        return f"{enabled} experiments enabled, at most {MAX_EXPERIMENTS} may run"
    return None


def conflicts(defined: Iterable[Experiment]) -> str | None:
    """Why these experiments cannot run together (two in one scope, too many), else None."""
    defined = list(defined)
    too_many = _too_many(*_limits(defined))
    if too_many:
        return too_many
    for scope, names in _scopes(defined).items():
        if len(names) > 1:
            return _clash(scope, names)
    return None


def added_conflict(
    before: Iterable[Experiment], after: Iterable[Experiment], name: str | None
) -> str | None:
    """Why an update may not apply: a conflict it adds, or one its own experiment (`name`;
    None for a policy update) is part of. A conflict the rules already had (a rules file
    changed under topic entries, then a restart) blocks no unrelated update: else no update
    could ever be published, not even the one that resolves it."""
    before, after = list(before), list(after)
    (total, enabled), (total0, enabled0) = _limits(after), _limits(before)
    if (total > MAX_DEFINED and total > total0) or (
        enabled > MAX_EXPERIMENTS and enabled > enabled0
    ):
        return _too_many(total, enabled)
    old = _scopes(before)
    for scope, names in _scopes(after).items():
        if len(names) > 1 and (name in names or not set(names) <= set(old.get(scope, ()))):
            return _clash(scope, names)
    return None
