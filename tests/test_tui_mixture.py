"""The Run screen's Mixture tab (soft weight sharing): it appears for such runs only, and it
draws the histogram of the weights at the newest eval, which equals a histogram recomputed
from the final checkpoint, with the prior's density over it."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from textual.widgets import Tabs

from engine.run_folder import RunFolder
from engine.train import prepare, train
from factories import tiny_spec
from tui_support import SIZE, settle, sync
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.run import RunScreen
from workbench.mixture_density import histogram_density, mixture_density
from workbench.tui.widgets.mixture import MixturePlot

SOFT = {"regularizer": {"name": "soft_weight_sharing", "components": 4, "tau": 0.005, "on": "all"}}


def _trained(logs: Path, **overrides) -> RunFolder:
    spec = tiny_spec(model__width=2, data__name="digits", train__steps=12, train__eval_every=6, **overrides)
    folder = RunFolder.create(logs)
    train(prepare(spec), folder, experiment="soft" if overrides else "plain")
    Store(logs).put(record_from_folder(folder.path))
    return folder


@sync
async def test_the_mixture_tab_shows_the_final_weights_histogram_under_the_prior(tmp_path):
    logs = tmp_path / "logs"
    soft = _trained(logs, regularizer=SOFT["regularizer"])
    app = WorkbenchApp(logs, tmp_path / "experiments.json", soft.run_id)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.tail.end is not None)
        screen = app.screen
        await settle(pilot, lambda: bool(screen.query_one("#run-tabs", Tabs).query("#mixture")))
        await pilot.press("5")
        plot = screen.query_one("#mixture-plot", MixturePlot)
        await settle(pilot, lambda: plot.record is not None and plot.record["step"] == 12)
        assert screen.query_one("#run-tabs", Tabs).active == "mixture" and plot.display
        assert "step 12" in str(screen.query_one("#mixture-step").render())

        # the histogram equals one recomputed from the final checkpoint: every trainable weight
        hist = plot.record["weights_hist"]
        weights = soft.load_tensors(soft.checkpoint_path("final"))
        names = [n for n, _ in prepare(tiny_spec(model__width=2, data__name="digits")).model.named_parameters()]
        values = torch.cat([weights[n].flatten() for n in names]).double().tolist()
        low, high, bins = hist["low"], hist["high"], len(hist["counts"])
        assert low <= min(values) and max(values) <= high and hist["n"] == len(values)
        assert min(plot.record["mixture"]["mu"]) >= low and max(plot.record["mixture"]["mu"]) <= high
        counts = [0] * bins
        for v in values:
            counts[min(int((v - low) / ((high - low) / bins)), bins - 1)] += 1
        assert hist["counts"] == counts

        # what is drawn: densities that integrate to 1 over the range, histogram and prior alike
        _, density, width = histogram_density(hist)
        assert math.isclose(sum(density) * width, 1.0, rel_tol=1e-9)
        xs = [low - 3 + i * (high - low + 6) / 4000 for i in range(4001)]
        prior = mixture_density(plot.record["mixture"], xs)
        assert math.isclose(sum(prior) * (xs[1] - xs[0]), 1.0, rel_tol=1e-3)

        await pilot.press("left_square_bracket")  # one eval back: step 6
        await settle(pilot, lambda: plot.record["step"] == 6)


@sync
async def test_a_run_without_the_prior_has_no_mixture_tab(tmp_path):
    logs = tmp_path / "logs"
    plain = _trained(logs)
    app = WorkbenchApp(logs, tmp_path / "experiments.json", plain.run_id)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.tail.end is not None
                     and app.screen.spec)
        screen = app.screen
        await pilot.pause(0.2)
        assert not screen.query_one("#run-tabs", Tabs).query("#mixture")
        await pilot.press("5")  # nothing to show: the tab stays where it was
        assert screen.query_one("#run-tabs", Tabs).active == "charts"


def test_the_report_draws_the_mixture_of_soft_sharing_arms_only(tmp_path):
    from workbench.mixture_report import plot_mixture
    from workbench.verdict import read_run

    soft, plain = _trained(tmp_path / "logs", regularizer=SOFT["regularizer"]), _trained(tmp_path / "logs")
    assert plot_mixture({"plain": {0: read_run(plain.path)}}) is None
    figure = plot_mixture({"soft": {0: read_run(soft.path)}, "plain": {0: read_run(plain.path)}})
    (ax,) = figure.axes  # one panel: the arm with a prior
    final = [e for e in read_run(soft.path).evals.values() if e["step"] == 12][0]
    _, density, _ = histogram_density(final["weights_hist"])
    assert [bar.get_height() for bar in ax.patches] == density and "step 12" in ax.get_title()
