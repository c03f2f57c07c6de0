"""The statistics of a verdict: ratios summarised over seeds, paired tests, power.

A verdict compares paired runs (same seed: same initial weights and data order), so its
unit of evidence is the per-seed ratio arm / reference. Ratios are summarised on the log
scale: the geometric mean with a t interval on the log ratios, exponentiated. That makes
the summary symmetric: swapping arm and reference turns every log ratio into its
negative, so the ratio becomes 1/ratio and the interval [1/hi, 1/lo], exactly (an
arithmetic mean of ratios is not: the mean of 2 and 1/2 is 1.25, their inverses' too).

- `p`: the paired t test on the log ratios (H0: geometric mean ratio 1), two-sided.
- `p_wilcoxon`: the exact Wilcoxon signed-rank test on the same log ratios, two-sided,
  for n < 10, where a t test leans hardest on normality (None from n = 10 on).
- `detectable_ratio`: the smallest ratio (or its inverse) that a paired t test with this
  n and the observed spread of log ratios would detect with power 0.8 at alpha 0.05
  two-sided (exact, from the noncentral t distribution): what "no difference detected"
  can and cannot rule out.

Differences (final loss, accuracy) stay arithmetic: a mean of paired differences with a
t interval, clipped to the range the difference can take when shown.

scipy is imported inside the functions that need it: the TUI imports this module and
should start fast.
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Iterable

ALPHA = 0.05  # two-sided, everywhere: the 95% intervals and the tests agree
POWER = 0.8  # for the detectable ratio
EXACT_WILCOXON_BELOW = 10  # seeds: the exact signed-rank p is given for n < 10

# t_{0.975, df} for df = 1..30 (two-sided 95%), to four decimals.
T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
Z975 = 1.959963985


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the multiplier of the standard error in a 95% confidence interval."""
    if df < 1:
        raise ValueError(f"a t quantile needs df >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975  # Cornish-Fisher expansion of the t quantile around the normal one (1e-5 from df 31)
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def mean_ci(values: Iterable[float]) -> tuple[float | None, list[float] | None]:
    """Arithmetic mean and 95% t interval (mean +- t * sd / sqrt(n)); no interval from one value."""
    values = list(values)
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    half = t_quantile(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, [mean - half, mean + half]


def finite(found: Any) -> float | None:
    """A number read from JSON as a float; None for a missing, boolean or non-finite value."""
    if isinstance(found, bool) or not isinstance(found, (int, float)) or not math.isfinite(found):
        return None
    return float(found)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None where that means nothing (missing, or 0 below)."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    value = numerator / denominator
    return value if math.isfinite(value) else None


def geometric_summary(ratios: list[float | None]) -> dict[str, Any]:
    """Per-seed ratios (None: skipped, e.g. a reference that did not move) -> the geometric
    mean, its 95% t interval, the paired tests and the detectable ratio; see the module doc.

    A ratio of 0 (the arm's subset never moved: it was frozen) has no logarithm: all zeros
    give ratio 0 with interval [0, 0]; zeros among positive ratios give ratio 0, no interval.
    """
    kept = [r for r in ratios if r is not None]
    out: dict[str, Any] = {"ratio": None, "ci": None, "p": None, "p_wilcoxon": None, "n": len(kept),
                           "skipped": len(ratios) - len(kept), "mean": "geometric", "detectable_ratio": None}
    if not kept:
        return out
    if min(kept) <= 0:
        out.update(ratio=0.0, ci=[0.0, 0.0] if max(kept) <= 0 else None)
        return out
    logs = [math.log(r) for r in kept]
    mean = statistics.fmean(logs)
    out["ratio"] = math.exp(mean)
    if len(logs) < 2:
        return out
    sd = statistics.stdev(logs)
    half = t_quantile(len(logs) - 1) * sd / math.sqrt(len(logs))
    out["ci"] = [_exp(mean - half), _exp(mean + half)]
    out["p"] = paired_t_p(logs)
    out["p_wilcoxon"] = wilcoxon_p(logs) if len(logs) < EXACT_WILCOXON_BELOW else None
    out["detectable_ratio"] = detectable_ratio(sd, len(logs))
    return out


def paired_t_p(differences: list[float]) -> float | None:
    """Two-sided p of the one-sample t test of `differences` against 0 (a paired t test);
    None when there is no spread to test against (every difference the same)."""
    if len(differences) < 2 or statistics.stdev(differences) == 0:
        return None
    from scipy import stats

    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def wilcoxon_p(differences: list[float]) -> float | None:
    """Two-sided exact p of the Wilcoxon signed-rank test of `differences` against 0
    (zero differences dropped, as Wilcoxon did); None with nothing left to rank."""
    nonzero = [d for d in differences if d != 0]
    if not nonzero:
        return None
    from scipy import stats

    return float(stats.wilcoxon(nonzero, method="exact").pvalue)


def detectable_ratio(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """exp(delta) for the smallest mean log ratio delta that a two-sided paired t test on n
    log ratios with standard deviation `sd` detects with probability `power` at `alpha`:
    the noncentrality delta * sqrt(n) / sd that gives that power, solved exactly."""
    if n < 2 or not sd > 0:
        return None
    from scipy import optimize, stats

    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)

    def shortfall(noncentrality: float) -> float:
        # The far tail (below -critical) holds less than alpha / 2 once noncentrality > 0;
        # scipy returns NaN for it at large noncentralities, where it is ~0.
        far = stats.nct.cdf(-critical, df, noncentrality)
        return stats.nct.sf(critical, df, noncentrality) + (far if math.isfinite(far) else 0.0) - power

    high = 1.0
    while shortfall(high) < 0:  # power grows with the noncentrality: bracket the root
        high *= 2
    noncentrality = optimize.brentq(shortfall, 0.0, high)
    return _exp(noncentrality * sd / math.sqrt(n))


def _exp(x: float) -> float:
    # log ratios spread over hundreds of e-folds (a subset that barely moved in one run)
    # would overflow: cap at e^700 (~1e304), still a finite number for JSON
    return math.exp(min(x, 700.0))


def clip_interval(ci: list[float] | None, low: float, high: float) -> list[float] | None:
    """An interval shown within the range its quantity can take."""
    if ci is None:
        return None
    return [min(max(ci[0], low), high), min(max(ci[1], low), high)]
