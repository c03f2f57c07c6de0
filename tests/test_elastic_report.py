"""rho.png: an elastic study's headline ratios against the pull strength rho."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from workbench.elastic_report import arm_rho, plot_rho, rho_points
from workbench.verdict import RunSeries

ARMS = {"baseline": False, "rho=0": {"mode": "elastic", "rho": 0}, "rho=10": {"mode": "elastic", "rho": 10},
        "rho=0.1": {"mode": "elastic", "rho": 0.1}, "hard": True}
RATIOS = {"rho=0": (1.0, 0.98), "rho=0.1": (1.1, 0.5), "rho=10": (1.2, 0.1), "hard": (1.3, None)}


def _study():
    loaded = {arm: {0: RunSeries(Path(arm), arm, {"freeze": freeze}, {})} for arm, freeze in ARMS.items()}
    comparisons = [
        {"arm": arm, "reference": "baseline", "headline": {
            "scope": "partitioned",
            "subset": {"ratio": subset, "ci": [subset * 0.9, subset * 1.1]},
            "fixed": {"ratio": fixed, "ci": None},
        }}
        for arm, (subset, fixed) in RATIOS.items()
    ]
    return {"reference": "baseline", "comparisons": comparisons}, loaded


def test_each_arm_sits_at_its_rho_and_hard_freezing_at_infinity():
    assert [arm_rho({"freeze": f}) for f in ARMS.values()] == [None, 0.0, 10.0, 0.1, float("inf")]
    verdict, loaded = _study()
    points = rho_points(verdict, loaded)
    assert [(rho, ratio) for rho, ratio, *_ in points["subset"]] == [(0.0, 1.0), (0.1, 1.1), (10.0, 1.2), (float("inf"), 1.3)]
    assert [rho for rho, *_ in points["fixed"]] == [0.0, 0.1, 10.0]  # the hard arm's fixed half has no ratio


def test_the_plot_draws_elastic_points_and_the_hard_arm_as_a_line():
    verdict, loaded = _study()
    ax = plot_rho(verdict, loaded).axes[0]
    assert ax.get_xscale() == "symlog"
    points = [line for line in ax.lines if line.get_marker() == "o"][0]
    assert list(points.get_xdata()) == [0.0, 0.1, 10.0] and list(points.get_ydata()) == [1.0, 1.1, 1.2]
    assert any(line.get_label() == "hard (hard)" and list(line.get_ydata()) == [1.3, 1.3] for line in ax.lines)
    plt.close("all")


def test_a_study_without_elastic_arms_has_no_rho_plot():
    verdict, loaded = _study()
    verdict["comparisons"] = [c for c in verdict["comparisons"] if c["arm"] == "hard"]
    assert plot_rho(verdict, loaded) is None
