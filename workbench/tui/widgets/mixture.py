"""The Run screen's Mixture tab (a soft-weight-sharing run): the Gaussian-mixture prior drawn
over a histogram of the weights it covers, at one eval record (the newest, or the one the
`[` `]` keys step to).

Each eval event of such a run carries the mixture {pi, mu, log_var} and `weights_hist`
{low, high, counts, n}: the covered weights' counts in equal bins (engine/soft_sharing.py).
Both are drawn as densities, so they share the y axis: the histogram as counts / (n x bin
width), the prior as sum_j pi_j N(x | mu_j, exp(log_var_j)). Torch-free: plain arithmetic
on the event's numbers."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Group
from rich.text import Text
from textual_plotext import PlotextPlot

from workbench.tui.widgets.chart import SKY, VERMILLION, rich_colour

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
            hist, mixture = record["weights_hist"], record["mixture"]
            centres, density, _ = histogram_density(hist)
            plt.bar(centres, density, color=SKY, width=1.0, marker="sd")
            xs = [hist["low"] + (hist["high"] - hist["low"]) * i / (CURVE_POINTS - 1) for i in range(CURVE_POINTS)]
            curve = mixture_density(mixture, xs)
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
