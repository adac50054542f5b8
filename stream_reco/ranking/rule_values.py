"""Checkers of single rule values (shares, caps, name lists, flags, weights) with fix-it errors."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from stream_reco.config import EVENT_TYPES, Weights
from stream_reco.events import CONTROL, MAX_ID_LEN

MAX_IDS = 1000  # promoted or excluded ids per policy, like a request's `exclude`
DISCOVERY_RANGE = (0.15, 0.25)


class Invalid(ValueError):
    """A bad value; the public functions turn it into a ConfigError or a Rejected."""


def share(lo: float, hi: float, why: str = "") -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        if not is_number(value) or not lo <= value <= hi:
            raise Invalid(f"must be a number in {lo:g}..{hi:g}{why}, got {show(value)}")
        return float(value)

    return parse


def show(value: Any) -> str:
    """A value as it was written in JSON (true, not True), cut short for error messages."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no NaN; orjson would print null
    try:
        return orjson.dumps(value).decode()[:80]
    except TypeError:
        return repr(value)[:80]


def is_number(value: Any) -> bool:
    # bool is an int subclass; true/false is never a share or a boost.
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def cap(value: Any) -> int | None:
    if value is None or (type(value) is int and value == 0):  # TOML has no null: 0 is off too
        return None
    if type(value) is not int or not 1 <= value <= MAX_IDS:
        raise Invalid(
            f"must be an integer in 1..{MAX_IDS}, or 0/null for no cap; got {show(value)}"
        )
    return value


def names(one: str, many: str, into: Callable[[Any], Any] = tuple) -> Callable[[Any], Any]:
    """A parser of a bounded list of names (item ids, categories, brands), bounded like a
    request's `exclude`, made `into` a tuple or a frozenset; `one`/`many` name them in errors."""

    def parse(value: Any) -> Any:
        if not isinstance(value, list | tuple | set | frozenset):
            hint = f": write [{show(value)}]" if isinstance(value, str) else ""
            raise Invalid(f"must be a list of {many}, got {type(value).__name__}{hint}")
        if len(value) > MAX_IDS:
            raise Invalid(f"has {len(value)} {many}, more than {MAX_IDS}")
        for x in value:
            if not isinstance(x, str) or not x or len(x) > MAX_ID_LEN or CONTROL.search(x):
                raise Invalid(f"{show(x)} is not {one} (1..{MAX_ID_LEN} characters, no controls)")
        return into(dict.fromkeys(value))  # order kept (promotion priority), repeats dropped

    return parse


def flag(value: Any) -> bool:
    if not isinstance(value, bool):  # 0/1 and "no" are typos here, not switches
        raise Invalid(f"must be true or false, got {show(value)}")
    return value


def discovery(value: Any) -> float:
    lo, hi = DISCOVERY_RANGE
    if is_number(value) and (value == 0 or lo <= value <= hi):
        return float(value)
    raise Invalid(
        f"must be 0 (off) or in {lo:g}..{hi:g}, got {show(value)}: fewer discovery slots show "
        "too little to learn from, more crowd out what the shopper is looking for"
    )


def weights(value: Any) -> Weights:
    if not isinstance(value, Mapping):
        raise Invalid(f"must be an object of event type -> weight, got {type(value).__name__}")
    unknown = sorted(set(value) - set(EVENT_TYPES))
    if unknown:
        raise Invalid(f"unknown event types {unknown}; valid: {list(EVENT_TYPES)}")
    bad = sorted(t for t, w in value.items() if not (is_number(w) and w >= 0))
    if bad:
        raise Invalid(f"weights of {bad} must be finite numbers >= 0")
    return Weights({t: float(value[t]) for t in EVENT_TYPES if t in value})


def half_life(value: Any) -> float | None:
    if value is None or (is_number(value) and value == 0):  # TOML has no null: 0 is off too
        return None
    if not is_number(value) or value < 0:
        raise Invalid(f"must be a number of seconds > 0, or 0/null for per-step, got {show(value)}")
    return float(value)
