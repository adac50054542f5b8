"""The report's statistics, pure functions of counts and sums (no scipy): intervals, tests,
sample sizes and the sample-ratio-mismatch check."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

_N = NormalDist()
ALPHA = 0.05
POWER = 0.8
SRM_P = 0.001  # below this the traffic split is broken, not unlucky
_EPS = 1e-15
_ITERATIONS = 300


def z_for(confidence: float = 1 - ALPHA) -> float:
    """The two-sided normal quantile: 1.96 for 95 %."""
    return _N.inv_cdf(1 - (1 - confidence) / 2)


def wilson(k: float, n: float, confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n; (0, 1) when nothing was observed. Unlike
    the normal interval it stays inside [0, 1] and is honest for small k."""
    if n <= 0:
        return 0.0, 1.0
    z, p = z_for(confidence), k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportions(k1: float, n1: float, k2: float, n2: float) -> tuple[float, float]:
    """Pooled two-proportion z-test of k2/n2 against k1/n1: (z, two-sided p). (0, 1) when a
    side has no trials or nothing varies."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (k2 / n2 - k1 / n1) / se
    return z, 2 * (1 - _N.cdf(abs(z)))


@dataclass(frozen=True, slots=True)
class Moments:
    """A sample summarised by count, sum and sum of squares (what the counters keep)."""

    n: float
    total: float
    squares: float

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        """Unbiased sample variance (0 below two observations)."""
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


def mean_interval(
    m: Moments, confidence: float = 1 - ALPHA, floor: float | None = None
) -> tuple[float, float]:
    """Student-t interval of the mean (normal for large n), raised to `floor` when the
    quantity cannot go below it (revenue: 0). Below two observations nothing bounds the
    spread: (floor or -inf, inf), never a zero-width interval that claims certainty."""
    low, high = -math.inf, math.inf
    if m.n >= 2:
        half = t_quantile(1 - (1 - confidence) / 2, m.n - 1) * math.sqrt(m.variance / m.n)
        low, high = m.mean - half, m.mean + half
    return (low, high) if floor is None else (max(floor, low), max(floor, high))


def welch(a: Moments, b: Moments) -> tuple[float, float, float]:
    """Welch's t-test of b's mean against a's: (t, degrees of freedom, two-sided p)."""
    if a.n < 2 or b.n < 2:
        return 0.0, 0.0, 1.0
    va, vb = a.variance / a.n, b.variance / b.n
    if va + vb == 0:
        return 0.0, 0.0, 1.0
    t = (b.mean - a.mean) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    return t, df, 2 * t_sf(abs(t), df)


def n_proportions(p1: float, p2: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Units per group to detect p1 vs p2 (two-sided, equal groups); inf when they are equal."""
    if p1 == p2:
        return math.inf
    za, zb = z_for(1 - alpha), _N.inv_cdf(power)
    bar = (p1 + p2) / 2
    root = za * math.sqrt(2 * bar * (1 - bar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return math.ceil(root * root / (p1 - p2) ** 2)


def n_means(
    delta: float, var1: float, var2: float, alpha: float = ALPHA, power: float = POWER
) -> float:
    """Units per group to detect a difference `delta` of means with these variances."""
    if delta == 0:
        return math.inf
    z = z_for(1 - alpha) + _N.inv_cdf(power)
    return math.ceil(z * z * (var1 + var2) / (delta * delta))


def srm(observed: Mapping[str, float], shares: Mapping[str, float]) -> tuple[float, float]:
    """Chi-square goodness of fit of observed counts against the configured shares:
    (statistic, p). p < SRM_P means the split is broken (assignment, logging or filtering)."""
    total = sum(observed.get(k, 0.0) for k in shares)
    if total <= 0 or len(shares) < 2:
        return 0.0, 1.0
    stat = sum((observed.get(k, 0.0) - total * s) ** 2 / (total * s) for k, s in shares.items())
    return stat, chi2_sf(stat, len(shares) - 1)


# -- distributions --------------------------------------------------------------------------


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` degrees of freedom (t >= 0)."""
    if df <= 0:
        return 0.5
    x = df / (df + t * t)
    return 0.5 * _beta_inc(df / 2, 0.5, x)


def t_quantile(q: float, df: float) -> float:
    """The q-quantile (q > 0.5) of Student's t, by bisection on t_sf."""
    lo, hi = 0.0, 1e3
    for _ in range(100):
        mid = (lo + hi) / 2
        if t_sf(mid, df) > 1 - q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def chi2_sf(x: float, df: int) -> float:
    """P(X > x) for chi-square with `df` degrees of freedom."""
    if x <= 0:
        return 1.0
    return _gamma_q(df / 2, x / 2)


def _beta_inc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta I_x(a, b), by its continued fraction (Lentz)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(ln + a * math.log(x) + b * math.log(1 - x))
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only on this side
        return 1 - front * _beta_fraction(b, a, 1 - x) / b
    return front * _beta_fraction(a, b, x) / a


def _beta_fraction(a: float, b: float, x: float) -> float:
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > _EPS else _EPS)
    out = d
    for m in range(1, _ITERATIONS):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1 + num * d
            d = 1 / (d if abs(d) > _EPS else _EPS)
            c = 1 + num / c
            c = c if abs(c) > _EPS else _EPS
            out *= c * d
        if abs(c * d - 1) < 1e-14:
            break
    return out


def _gamma_q(s: float, x: float) -> float:
    """The regularised upper incomplete gamma Q(s, x): a series below s + 1, else a
    continued fraction."""
    front = math.exp(-x + s * math.log(x) - math.lgamma(s))
    if x < s + 1:
        term = total = 1 / s
        for n in range(1, _ITERATIONS):
            term *= x / (s + n)
            total += term
            if term < total * 1e-15:
                break
        return max(0.0, 1 - front * total)
    b, c, d = x + 1 - s, 1 / _EPS, 1 / (x + 1 - s)
    h = d
    for n in range(1, _ITERATIONS):
        an = -n * (n - s)
        b += 2
        d = an * d + b
        d = 1 / (d if abs(d) > _EPS else _EPS)
        c = b + an / c
        c = c if abs(c) > _EPS else _EPS
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return front * h


def lift(control: float, variant: float) -> float | None:
    """Relative change of the variant over control (None when control is 0)."""
    return None if control == 0 else variant / control - 1


def pct(values: Sequence[float]) -> list[float]:
    return [round(v * 100, 3) for v in values]
