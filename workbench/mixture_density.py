"""The soft-weight-sharing prior and the weights it covers, as densities on one axis (the
Run screen's Mixture tab and the report's mixture.png draw them; torch-free).

Each eval event of such a run carries the mixture {pi, mu, log_var} and `weights_hist`
{low, high, counts, n}: the covered weights' counts in equal bins (engine/soft_sharing.py).
The histogram's density is counts / (n x bin width), the prior's
sum_j pi_j N(x | mu_j, exp(log_var_j)): both integrate to 1, so they share the y axis.
"""

from __future__ import annotations

import math
from typing import Any

CURVE_POINTS = 160  # where the prior's density is evaluated across the histogram's range


def mixture_records(evals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The eval records that carry a mixture and a histogram of the weights, oldest first."""
    return [e for e in evals if e.get("mixture") and e.get("weights_hist")]


def histogram_density(hist: dict[str, Any]) -> tuple[list[float], list[float], float]:
    """(bin centres, counts / (n x bin width), bin width)."""
    counts, low, high = hist["counts"], hist["low"], hist["high"]
    width = (high - low) / len(counts)
    total = hist.get("n") or sum(counts) or 1
    return [low + (i + 0.5) * width for i in range(len(counts))], [c / (total * width) for c in counts], width


def mixture_density(mixture: dict[str, list[float]], xs: list[float]) -> list[float]:
    """sum_j pi_j N(x | mu_j, sigma_j^2) at every x."""
    components = list(zip(mixture["pi"], mixture["mu"], mixture["log_var"]))
    return [sum(pi * math.exp(-0.5 * (x - mu) ** 2 / math.exp(lv)) / math.sqrt(2 * math.pi * math.exp(lv))
                for pi, mu, lv in components) for x in xs]


def prior_curve(record: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The prior's density at CURVE_POINTS points across the record's histogram range."""
    low, high = record["weights_hist"]["low"], record["weights_hist"]["high"]
    xs = [low + (high - low) * i / (CURVE_POINTS - 1) for i in range(CURVE_POINTS)]
    return xs, mixture_density(record["mixture"], xs)
