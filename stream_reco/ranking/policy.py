"""The shop's business-rule policy: typed, validated, per placement, updated by config messages."""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import orjson

from stream_reco.config import Weights
from stream_reco.errors import ConfigError
from stream_reco.events import CONTROL, MAX_ID_LEN, Rejected, load_json
from stream_reco.experiments import config as experiments
from stream_reco.experiments.config import Experiment, Experiments
from stream_reco.ranking import rule_values as values
from stream_reco.ranking.rule_values import DISCOVERY_RANGE as DISCOVERY_RANGE
from stream_reco.ranking.rule_values import MAX_IDS as MAX_IDS
from stream_reco.ranking.rule_values import Invalid

DEFAULT_KEY = "default"  # the reco-config key (and rules-file section) of the shop-wide policy
MAX_BOOST = 10.0  # beyond this a boost is a sort by margin/price, not a nudge
# What the shop is advised to set; the built-in defaults keep plain relevance (see docs/rules.md).
RECOMMENDED = {"category_cap": 3, "mmr_lambda": 0.7, "discovery_share": 0.2}

PARSERS: dict[str, Callable[[Any], Any]] = {
    "category_cap": values.cap,
    "mmr_lambda": values.share(0.0, 1.0, " (1 = pure relevance, lower = more variety)"),
    "margin_boost": values.share(0.0, MAX_BOOST),
    "price_boost": values.share(0.0, MAX_BOOST),
    "promoted": values.names("an item id", "item ids"),
    "promoted_share": values.share(0.0, 1.0),
    "discovery_share": values.discovery,
    "exclude": values.names("an item id", "item ids", frozenset),
    "event_weights": values.weights,
    "session_half_life_s": values.half_life,
    "exclude_categories": values.names("a category", "categories", frozenset),
    "exclude_brands": values.names("a brand", "brands", frozenset),
    "exclude_item_in_view": values.flag,
}


@dataclass(frozen=True)
class Policy:
    """The rules one response is built under. The defaults are plain relevance (without the
    item in view): every diversity and business feature is opt-in."""

    category_cap: int | None = None  # most items of one category per response; None: no cap
    mmr_lambda: float = 1.0  # MMR trade-off: 1 = pure relevance order, 0 = pure variety
    margin_boost: float = 0.0  # score × (1 + margin_boost × margin / best margin in the list)
    price_boost: float = 0.0  # score × (1 + price_boost × price / highest price in the list)
    promoted: tuple[str, ...] = ()  # items to promote, in priority order
    promoted_share: float = 0.0  # share of the k slots given to promoted items
    discovery_share: float = 0.0  # share of slots from outside the session's main categories
    exclude: frozenset[str] = frozenset()  # never recommended, like a request's `exclude`
    event_weights: Mapping[str, float] = field(default_factory=lambda: Weights({}))
    session_half_life_s: float | None = None  # session-item decay by age; None: per step
    exclude_categories: frozenset[str] = frozenset()  # catalogue categories never recommended
    exclude_brands: frozenset[str] = frozenset()  # catalogue brands never recommended
    # Not the item the shopper is looking at (the page's, else the session's latest): a product
    # page need not recommend itself. False for "recently viewed" placements.
    exclude_item_in_view: bool = True

    def __post_init__(self) -> None:
        for name, parse in PARSERS.items():
            try:
                object.__setattr__(self, name, parse(getattr(self, name)))
            except Invalid as exc:
                raise ConfigError(f"invalid policy: {name} {exc}") from None

    def weights(self, base: Mapping[str, float]) -> dict[str, float]:
        """Per-event-type weights for the session's own items: `base` (the Settings weights)
        with this policy's overrides."""
        return {**base, **self.event_weights}


FIELDS = tuple(PARSERS)


def _overrides(doc: Any, where: str) -> Mapping[str, Any]:
    """A partial policy (JSON/TOML object) as typed values; `where` names it in errors."""
    if not isinstance(doc, Mapping):
        raise Invalid(f"{where} must be an object of policy fields, got {type(doc).__name__}")
    unknown = sorted(set(doc) - set(PARSERS))
    if unknown:
        raise Invalid(f"{where}: unknown fields {unknown}; valid fields: {', '.join(FIELDS)}")
    out: dict[str, Any] = {}
    for name, value in doc.items():
        try:
            out[name] = PARSERS[name](value)
        except Invalid as exc:
            raise Invalid(f"{where}.{name} {exc}") from None
    return MappingProxyType(out)


def _placement(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_ID_LEN or CONTROL.search(name):
        shown = name[:MAX_ID_LEN] if isinstance(name, str) else name
        raise Invalid(f"{where}: {shown!r} is not a placement name (1..{MAX_ID_LEN} characters)")
    if name.startswith(experiments.KEY_PREFIX):
        raise Invalid(f"{where}: {name!r}: names starting {experiments.KEY_PREFIX!r} name tests")
    return name


def _experiment(key: str, doc: Any) -> Experiment:
    try:
        return experiments.parse(key.removeprefix(experiments.KEY_PREFIX), doc)
    except experiments.Invalid as exc:
        raise Invalid(str(exc)) from None


@dataclass(frozen=True, slots=True)
class RulesUpdate:
    """One reco-config message: the overrides for `key` ("default" or a placement), or the
    experiment (key "experiment:<name>"), or None to remove that key's entry so the rules
    file's entry (if any) applies again."""

    key: str
    overrides: Mapping[str, Any] | Experiment | None


@dataclass(frozen=True, eq=False)
class RulesConfig:
    """Policies per placement, from two layers: the rules file, then the reco-config topic.
    For each key the topic's entry, when present, replaces the file's; placements are merged
    field by field over the resolved default. Keys "experiment:<name>" hold experiments."""

    file: Mapping[str, Any] = field(default_factory=dict)
    topic: Mapping[str, Any] = field(default_factory=dict)
    default: Policy = field(init=False)
    experiments: Experiments = field(init=False)
    _resolved: Mapping[str, Policy] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "file", MappingProxyType(dict(self.file)))
        object.__setattr__(self, "topic", MappingProxyType(dict(self.topic)))
        default = Policy(**self._entry(DEFAULT_KEY))
        # Resolved once per config change, so a request's lookup is one dict get.
        keys = set(self.file) | set(self.topic)
        tests = {k for k in keys if k.startswith(experiments.KEY_PREFIX)}
        names = keys - tests - {DEFAULT_KEY}
        resolved = {p: dataclasses.replace(default, **self._entry(p)) for p in names}
        object.__setattr__(self, "default", default)
        running = Experiments.of(self._entry(k) for k in sorted(tests))
        object.__setattr__(self, "experiments", running)
        object.__setattr__(self, "_resolved", MappingProxyType(resolved))

    def _entry(self, key: str) -> Any:
        return self.topic.get(key, self.file.get(key, {}))

    def defined(self) -> list[Experiment]:
        """Every experiment of both layers (the topic's replacing the file's by name)."""
        keys = (set(self.file) | set(self.topic)) - {DEFAULT_KEY}
        return [self._entry(k) for k in sorted(keys) if k.startswith(experiments.KEY_PREFIX)]

    def for_placement(self, name: str | None) -> Policy:
        """The policy of a request's placement; unknown or missing placements get the default."""
        return self._resolved.get(name, self.default) if name else self.default

    def problem(self) -> str | None:
        """Why these rules cannot all apply (two experiments in one scope), else None."""
        return experiments.conflicts(self.defined())

    @property
    def placements(self) -> tuple[str, ...]:
        return tuple(sorted(self._resolved))

    def apply(self, update: RulesUpdate) -> RulesConfig:
        """A new config with one reco-config message applied; this one is unchanged."""
        topic = dict(self.topic)
        if update.overrides is None:
            topic.pop(update.key, None)
        else:
            topic[update.key] = update.overrides
        return RulesConfig(self.file, topic)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RulesConfig):
            return NotImplemented
        return self.file == other.file and self.topic == other.topic

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mappings inside


def from_dict(doc: Any) -> RulesConfig:
    """A rules file's content: {"default": {...}, "placements": {"cart": {...}},
    "experiments": {"name": {...}}}; raises ConfigError naming the field at fault."""
    try:
        rules = RulesConfig(file=_layer(doc))
    except Invalid as exc:
        raise ConfigError(str(exc)) from None
    problem = rules.problem()
    if problem:
        raise ConfigError(problem)
    return rules


def _layer(doc: Any) -> dict[str, Any]:
    if not isinstance(doc, Mapping):
        raise Invalid(f"the top level must be an object, got {type(doc).__name__}")
    top = [DEFAULT_KEY, "placements", "experiments"]
    unknown = sorted(set(doc) - set(top))
    if unknown:
        raise Invalid(f"unknown top-level keys {unknown}; valid: {top}")
    layer: dict[str, Any] = {DEFAULT_KEY: _overrides(doc.get(DEFAULT_KEY, {}), DEFAULT_KEY)}
    tests = doc.get("experiments", {})
    if not isinstance(tests, Mapping):
        raise Invalid("experiments must be an object of experiment name -> definition")
    for name, definition in tests.items():
        key = f"{experiments.KEY_PREFIX}{name}"
        layer[key] = _experiment(key, definition)
    placements = doc.get("placements", {})
    if not isinstance(placements, Mapping):
        raise Invalid("placements must be an object of placement name -> policy fields")
    for name, overrides in placements.items():
        _placement(name, "placements")
        if name == DEFAULT_KEY:
            raise Invalid("placements.default: put the shop-wide policy under the top-level key")
        layer[name] = _overrides(overrides, f"placements.{name}")
    return layer


def load_file(path: str | Path) -> RulesConfig:
    """Read a rules file (TOML if it ends in .toml, else JSON); errors name the file and field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        doc = tomllib.loads(raw.decode()) if path.suffix == ".toml" else orjson.loads(raw)
    except OSError as exc:
        raise ConfigError(f"rules file {path}: cannot read it: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:  # both JSON and TOML errors are ValueErrors
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ConfigError(f"rules file {path}: not valid {kind}: {exc}") from None
    try:
        return from_dict(doc)
    except ConfigError as exc:
        raise ConfigError(f"rules file {path}: {exc}") from None


def decode_config(key: bytes | None, value: bytes | None) -> RulesUpdate | Rejected:
    """Parse one reco-config record: key = "default" or a placement, value = JSON object of
    policy overrides; or key = "experiment:<name>", value = the experiment (docs/experiments.md);
    a null/empty value (or JSON null) removes that key's entry."""
    try:
        if not key:
            raise Invalid("no key: set it to 'default', a placement or experiment:<name>")
        try:
            text = key.decode()
        except UnicodeDecodeError:
            raise Invalid("key is not UTF-8") from None
        test = text.startswith(experiments.KEY_PREFIX)
        name = text if test else _placement(text, "key")
        if test:
            try:
                experiments.check_name(text.removeprefix(experiments.KEY_PREFIX))
            except experiments.Invalid as exc:
                raise Invalid(f"key {text!r}: {exc}") from None
        if value is None or not value.strip() or value.strip() == b"null":
            return RulesUpdate(name, None)
        try:
            doc = load_json(value)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        return RulesUpdate(name, _experiment(name, doc) if test else _overrides(doc, name))
    except Invalid as exc:
        return Rejected(f"invalid rules message: {exc}")
