"""A live line chart: a PlotextPlot whose lines are replaced in place, then refreshed once
(no widget is rebuilt, so a 1 s update does not flicker)."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from workbench.tui.feed import Series

# Stable colours: the same line has the same colour on every chart and every redraw.
LINE_COLOURS = {
    "subset": "cyan+",
    "fixed": "orange+",
    "train_loss": "magenta+",
    "eval_loss": "red+",
    "eval_acc": "green+",
    # the Studies screen's ratio of an arm to the reference: the ratio bright, its 95% CI
    # band (lo, hi) dim, the line at 1 (no difference) neutral
    "ratio": "yellow+",
    "lo": 136,
    "hi": 136,
    "1": "gray",
}
# A paired reference run's line ("subset (baseline)"): the same hue, dimmer (xterm-256 codes).
REFERENCE_COLOURS = {"subset": 30, "fixed": 130}


# Lines that are not one of the above (a chart of every layer) take these in turn.
SPARE_COLOURS = ("cyan+", "orange+", "magenta+", "green+", "blue+", "red+", "yellow+", "white", "gray")


MEMBER_COLOUR = 65  # an ensemble member's accuracy ("member 0 acc"): a dim eval_acc green


def line_colour(label: str, index: int = 0) -> str | int:
    """A line's colour: fixed for known labels; a reference run's line dimmer; an ensemble
    member's accuracy dim green; else the `index`-th spare colour."""
    base, _, reference = label.partition(" (")
    if reference and base in REFERENCE_COLOURS:
        return REFERENCE_COLOURS[base]
    if label.startswith("member ") and label.endswith(" acc"):
        return MEMBER_COLOUR
    return LINE_COLOURS.get(label) or SPARE_COLOURS[index % len(SPARE_COLOURS)]


class MetricChart(PlotextPlot):
    """Lines `{label: Series}` over steps; labels listed in `right` use the right-hand axis."""

    def __init__(self, title: str, *, right: tuple[str, ...] = (), id: str | None = None) -> None:
        super().__init__(id=id)
        self.chart_title = title
        self.right = right
        self.points = 0  # how many points the chart currently draws (what tests look at)
        self.lines: dict[str, Series] = {}  # what it draws, by label
        self.colours: dict[str, str | int] = {}  # and in which colour

    def on_mount(self) -> None:
        super().on_mount()
        self.plt.title(self.chart_title)

    def retitle(self, title: str) -> None:
        if title != self.chart_title:
            self.chart_title = title
            self.plt.title(title)

    def show(self, lines: dict[str, Series]) -> None:
        plt = self.plt
        plt.clear_data()
        self.points = 0
        self.lines = {label: series for label, series in lines.items() if len(series)}
        self.colours = {label: line_colour(label, i) for i, label in enumerate(lines) if label in self.lines}
        for label, series in lines.items():
            if not len(series):
                continue
            plt.plot(
                series.steps,
                series.values,
                label=label,
                color=self.colours[label],
                marker="braille",
                yside="right" if label in self.right else "left",
            )
            self.points += len(series)
        self.refresh()
