"""The elastic-freezing plot of a study: the movement ratio against the pull strength rho.

A study whose arms freeze elastically (`freeze: {"mode": "elastic", "rho": R}`), and
perhaps one arm that freezes hard, answers "how does the main question's answer change as
the fixed part is held more and more tightly?". `rho.png` puts each arm's headline ratio
(arm / reference, the partitioned layers' coordinates, geometric mean over seeds with its
95% CI) at its R, for the kept-training coordinates (`subset`) and for the pulled ones
(`fixed`); the hard arm is a dashed line (R = infinity), the reference the line at 1.
R = 0 sits on a linear stretch of a symlog axis (0 has no logarithm). Imports no torch.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from workbench.verdict import RunSeries  # noqa: E402

SIDES = ("subset", "fixed")


def arm_rho(spec: dict[str, Any]) -> float | None:
    """An arm's pull: R for elastic freezing, infinity for hard freezing, None for none."""
    freeze = spec.get("freeze")
    if isinstance(freeze, dict) and freeze.get("mode") == "elastic":
        return float(freeze.get("rho", 0.0))
    return float("inf") if freeze is True else None


def rho_points(verdict: dict[str, Any], loaded: dict[str, dict[int, RunSeries]]) -> dict[str, list[tuple]]:
    """side -> [(rho, ratio, ci, arm)] of every comparison whose arm freezes, by rho."""
    points: dict[str, list[tuple]] = {side: [] for side in SIDES}
    for comparison in verdict.get("comparisons", []):
        runs = loaded.get(comparison["arm"]) or {}
        rho = arm_rho(runs[min(runs)].spec) if runs else None
        headline = comparison.get("headline") or {}
        if rho is None:
            continue
        for side in SIDES:
            figures = headline.get(side) or {}
            if figures.get("ratio") is not None:
                points[side].append((rho, figures["ratio"], figures.get("ci"), comparison["arm"]))
    return {side: sorted(found) for side, found in points.items()}


def plot_rho(verdict: dict[str, Any], loaded: dict[str, dict[int, RunSeries]]):
    """The figure, or None when no arm freezes elastically."""
    points = rho_points(verdict, loaded)
    if not any(rho != float("inf") for found in points.values() for rho, *_ in found):
        return None
    finite = [rho for found in points.values() for rho, *_ in found if 0 < rho < float("inf")]
    figure, axes = plt.subplots(1, 2, figsize=(8.4, 3.2), squeeze=False)
    scope = next((c["headline"].get("scope") for c in verdict.get("comparisons", []) if c.get("headline")), "")
    for ax, side in zip(axes[0], SIDES):
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label=f"reference ({verdict.get('reference')})")
        elastic = [p for p in points[side] if p[0] != float("inf")]
        for rho, ratio, ci, arm in points[side]:
            if rho == float("inf"):
                ax.axhline(ratio, color="C3", linestyle=":", linewidth=1.5, label=f"{arm} (hard)")
        if elastic:
            xs = [p[0] for p in elastic]
            ys = [p[1] for p in elastic]
            lo = [p[1] - (p[2][0] if p[2] else p[1]) for p in elastic]
            hi = [(p[2][1] if p[2] else p[1]) - p[1] for p in elastic]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", markersize=4, capsize=3, color="C0", label="elastic (95% CI)")
        ax.set_xscale("symlog", linthresh=min(finite, default=1.0))
        ax.set_xlabel("rho (pull strength; alpha = min(lr*rho, 1))")
        ax.set_title(f"{side}, {scope} layers: dist ratio")
    axes[0][0].legend(fontsize="small")
    figure.tight_layout()
    return figure
