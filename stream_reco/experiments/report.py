"""The experiments report: per variant its figures, intervals and test against control, from
the counters alone (seconds behind the stream); as JSON data or a terminal table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from stream_reco import runtime
from stream_reco.config import Settings
from stream_reco.experiments import stats
from stream_reco.experiments.config import Experiment
from stream_reco.experiments.store import COUNTERS
from stream_reco.ranking import policy
from stream_reco.ranking.policy import RulesConfig
from stream_reco.storage.protocol import Store

# Rates: (name, numerator counter, denominator counter). CTR is the share of answers shown
# that were clicked (by their recommendation id); the others count sessions. The session_*
# ones count every outcome of an exposed session, attributed to an answer or not: a holdout
# shows little or nothing to attribute to, so only they compare an arm against it.
RATES = (
    ("ctr", "clicked_impressions", "impressions"),
    # CTR by the unit of randomisation: its test does not assume a session's answers are
    # independent, which CTR's per-impression z-test does.
    ("click_rate", "click_sessions", "sessions"),
    ("cart_rate", "cart_sessions", "sessions"),
    ("conversion", "purchase_sessions", "sessions"),
    ("session_cart_rate", "session_cart_sessions", "sessions"),
    ("session_conversion", "session_purchase_sessions", "sessions"),
)
# Revenue per session: (name, revenue counter, its sum-of-squares counter).
REVENUES = (
    ("revenue_per_session", "revenue", "revenue2"),
    ("session_revenue_per_session", "session_revenue", "session_revenue2"),
)
COUNTS = (
    "sessions",
    "impressions",
    "clicks",
    "carts",
    "purchases",
    "revenue",
    "clicked_impressions",
    "session_carts",
    "session_purchases",
    "session_revenue",
)


def _num(x: float | None, digits: int = 6) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(x, digits)


def _rate(k: float, n: float, ck: float, cn: float, is_control: bool) -> dict[str, Any]:
    """A proportion with its Wilson interval and, beside control, the z-test, the lift and
    the units still needed per arm to detect the observed difference at 80 % power."""
    value = k / n if n else 0.0
    low, high = stats.wilson(k, n)
    out: dict[str, Any] = {"value": _num(value), "low": _num(low), "high": _num(high)}
    if is_control:
        return out
    base = ck / cn if cn else 0.0
    _, p = stats.two_proportions(ck, cn, k, n)
    need = stats.n_proportions(base, value) if n and cn else math.inf
    out |= {"lift": _num(stats.lift(base, value)), "p_value": _num(p, 8)}
    out["needed"] = None if math.isinf(need) else int(max(0.0, need - min(n, cn)))
    return out


def _revenue(m: stats.Moments, c: stats.Moments, is_control: bool) -> dict[str, Any]:
    """Revenue per session with its t interval and, beside control, Welch's test."""
    low, high = stats.mean_interval(m, floor=0.0)  # revenue is never negative
    out: dict[str, Any] = {"value": _num(m.mean), "low": _num(low), "high": _num(high)}
    if is_control:
        return out
    _, _, p = stats.welch(c, m)
    need = stats.n_means(m.mean - c.mean, c.variance, m.variance)
    out |= {"lift": _num(stats.lift(c.mean, m.mean)), "p_value": _num(p, 8)}
    out["needed"] = None if math.isinf(need) else int(max(0.0, need - min(m.n, c.n)))
    return out


def _moments(c: Mapping[str, float], total: str, squares: str) -> stats.Moments:
    return stats.Moments(c["sessions"], c[total], c[squares])


def figures(exp: Experiment, counters: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """One experiment's report from its counters (pure: the unit tests feed it)."""
    control = exp.control.name
    shares = exp.shares()
    variants = []
    # A counter never incremented (or stored before it existed) is 0.
    counters = {n: {k: got.get(k, 0.0) for k in COUNTERS} for n, got in counters.items()}
    ctl = counters[control]
    for name, c in counters.items():
        is_control = name == control
        row: dict[str, Any] = {
            "variant": name,
            "control": is_control,
            "share": shares.get(name),
            **{k: _num(c[k], 4) for k in COUNTS},
        }
        for rate, num, den in RATES:
            row[rate] = _rate(c[num], c[den], ctl[num], ctl[den], is_control)
        for rev, total, squares in REVENUES:
            m, base = _moments(c, total, squares), _moments(ctl, total, squares)
            row[rev] = _revenue(m, base, is_control)
        variants.append(row)
    chi2, p = stats.srm({n: c["sessions"] for n, c in counters.items()}, shares)
    return {
        "experiment": exp.name,
        "placement": exp.placement,
        "enabled": exp.enabled,
        "control": control,
        "definition": exp.to_json(),
        "srm": {"chi2": _num(chi2), "p_value": _num(p, 8), "mismatch": p < stats.SRM_P},
        "variants": variants,
    }


async def current_rules(store: Store, settings: Settings) -> RulesConfig:
    """The rules the workers run: the rules file with the published reco-config updates."""
    base = policy.load_file(settings.rules_file) if settings.rules_file else RulesConfig()
    return runtime.rules_from(base, await store.read_published(runtime.RULES))


async def report(
    store: Store,
    settings: Settings | None = None,
    rules: RulesConfig | None = None,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """Every defined experiment's report, stopped ones too (or only `name`'s), read from its
    counters."""
    settings = settings or store.settings
    rules = rules or await current_rules(store, settings)
    out = []
    for exp in rules.defined():
        if name is None or exp.name == name:
            out.append(figures(exp, await store.experiments.counters(exp)))
    return out


async def summary(
    store: Store, settings: Settings | None = None, rules: RulesConfig | None = None
) -> list[dict[str, Any]]:
    """One JSON-ready row per (experiment, variant): the counts (COUNTS) as numbers, each
    rate (RATES) and revenue per session (REVENUES) as {value, low, high[, lift, p_value,
    needed]}, `control`, `share`, `enabled` (false: a stopped experiment's final figures) and
    `srm_mismatch`."""
    rows = []
    for exp in await report(store, settings, rules):
        for v in exp["variants"]:
            rows.append(
                {
                    "experiment": exp["experiment"],
                    "enabled": exp["enabled"],
                    **v,
                    "srm_mismatch": exp["srm"]["mismatch"],
                }
            )
    return rows


# -- the terminal table ---------------------------------------------------------------------


def _pct(r: Mapping[str, Any]) -> str:
    return f"{r['value'] * 100:5.2f}% [{r['low'] * 100:5.2f}, {r['high'] * 100:5.2f}]"


def _vs(r: Mapping[str, Any]) -> str:
    if "p_value" not in r:
        return "control"
    lift = "n/a" if r["lift"] is None else f"{r['lift'] * 100:+.1f}%"
    need = "-" if r["needed"] is None else f"{r['needed']}"
    p = r["p_value"]
    star = " *" if p < stats.ALPHA else ""
    shown = f"p={p:.4f}" if p >= 1e-4 else "p<0.0001"
    return f"{lift} {shown}{star} need {need}"


# The two views of a variant's outcomes; only the second compares against a holdout.
_BLOCKS = (
    ("attributed to recommendations", ""),
    ("all outcomes of exposed sessions", "session_"),
)


def _money(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"  # None: unbounded (fewer than two sessions)


def _outcomes(v: Mapping[str, Any], prefix: str) -> list[str]:
    rev = v[f"{prefix}revenue_per_session"]
    lines = [
        f"{label:<16}{_pct(v[prefix + rate])}  {_vs(v[prefix + rate])}"
        for rate, label in (("cart_rate", "add-to-cart"), ("conversion", "conversion"))
    ]
    lines.append(
        f"{'revenue/session':<16}{rev['value']:.2f} [{_money(rev['low'])}, "
        f"{_money(rev['high'])}]  {_vs(rev)}"
    )
    return lines


def render(reports: list[dict[str, Any]]) -> str:
    """The report as a table per experiment (95 % intervals in brackets; * = p < 0.05)."""
    if not reports:
        return "no experiment is defined (docs/experiments.md says how)"
    lines: list[str] = []
    for exp in reports:
        scope = exp["placement"] or "the whole shop"
        state = "" if exp["enabled"] else ", stopped"
        lines.append(
            f"experiment {exp['experiment']} on {scope} (control: {exp['control']}{state})"
        )
        for v in exp["variants"]:
            lines.append(
                f"  {v['variant']}: {v['sessions']:.0f} sessions "
                f"(share {v['share']:.3f}), {v['impressions']:.0f} impressions"
            )
            lines.append(f"    {'CTR':<18}{_pct(v['ctr'])}  {_vs(v['ctr'])}")
            lines.append(
                f"    {'clicking sessions':<18}{_pct(v['click_rate'])}  {_vs(v['click_rate'])}"
            )
            for title, prefix in _BLOCKS:
                lines.append(f"    {title}:")
                lines += [f"      {line}" for line in _outcomes(v, prefix)]
        srm = exp["srm"]
        if srm["mismatch"]:
            lines.append(
                f"  WARNING sample-ratio mismatch: sessions do not follow the configured shares "
                f"(chi2 {srm['chi2']:.1f}, p={srm['p_value']:.2g}): check assignment and logging "
                "before trusting any figure"
            )
    return "\n".join(lines)
