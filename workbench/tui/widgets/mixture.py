"""The Run screen's Mixture tab (a soft-weight-sharing run): the Gaussian-mixture prior drawn
over a histogram of the weights it covers, at one eval record (the newest, or the one the
`[` `]` keys step to).

Each eval event of such a run carries the mixture {pi, mu, log_var} and `weights_hist`
{low, high, counts, n}: the covered weights' counts in equal bins (engine/soft_sharing.py).
Both are drawn as densities (workbench/mixture_density.py), so they share the y axis."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group
from rich.text import Text
from textual_plotext import PlotextPlot

from workbench.mixture_density import histogram_density, mixture_records, prior_curve  # noqa: F401 (re-exported)
from workbench.tui.widgets.chart import SKY, VERMILLION, rich_colour


class MixturePlot(PlotextPlot):
    """The histogram's density as bars and the prior's density as a line, over the weights' axis."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.record: dict[str, Any] | None = None  # the eval record drawn (tests read it)

    def on_mount(self) -> None:
        super().on_mount()
        self.plt.xlabel("weight value")
        self.plt.ylabel("density")

    def show(self, record: dict[str, Any] | None) -> None:
        self.record = record
        plt = self.plt
        plt.clear_data()
        if record:
            hist = record["weights_hist"]
            centres, density, _ = histogram_density(hist)
            plt.bar(centres, density, color=SKY, width=1.0, marker="sd")
            xs, curve = prior_curve(record)
            # The pinned component's spike at 0 can dwarf the histogram: the axis follows the
            # histogram (the curve is clipped), so the weights stay readable.
            top = max(max(density, default=0.0), 1e-12) * 1.15
            plt.plot(xs, [min(y, top) for y in curve], color=VERMILLION, marker="braille")
            plt.ylim(0, top)
            plt.xlim(hist["low"], hist["high"])
            ticks = [hist["low"] + (hist["high"] - hist["low"]) * i / 4 for i in range(5)]
            plt.xticks(ticks, [f"{t:.3g}" for t in ticks])  # short labels: plotext's own run to 17 digits
        self.refresh()

    def render(self):
        width, height = self.size
        legend = Text.assemble(("██", rich_colour(SKY)), " weights (histogram density)  ",
                               ("━━", rich_colour(VERMILLION)), " mixture prior density (clipped at the top)")
        if not self.record:
            return Group(legend, Text("waiting for the first eval", style="dim italic", justify="center"))
        self._plot.plotsize(width, max(3, height - 1))
        self._plot._set_size(width, max(3, height - 1))  # as PlotextPlot.render does (textual-plotext issue 5)
        self._plot.theme(self._get_plotext_theme_name(self.app.theme))
        return Group(legend, Text.from_ansi(self._plot.build()))


def mixture_caption(record: dict[str, Any] | None, at: int, count: int) -> Text:
    """Which step is drawn and what: the covered weights, the components (pi, mu, sigma)."""
    if not record:
        return Text("no mixture yet: the prior is recorded at every eval", style="dim")
    hist, mixture = record["weights_hist"], record["mixture"]
    text = Text.assemble(("step ", "bold"), (str(record["step"]), "bold"),
                         f"  eval {at + 1}/{count}", ("  [ ] earlier/later\n", "dim"))
    text.append(f"{hist.get('n', sum(hist['counts'])):,} weights under the prior, range {hist['low']:.3g} to "
                f"{hist['high']:.3g} ({len(hist['counts'])} bins); prior NLL {record.get('prior_nll', float('nan')):.4g}\n")
    parts = [f"{pi:.3f}·N({mu:+.3g}, {math.exp(lv / 2):.3g}²)" for pi, mu, lv in
             zip(mixture["pi"], mixture["mu"], mixture["log_var"])]
    return text.append("components (pi·N(mu, sigma²), the first pinned at 0): " + "  ".join(parts), style="dim")
