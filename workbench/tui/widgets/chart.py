"""A live line chart: a PlotextPlot whose lines are replaced in place, then refreshed once
(no widget is rebuilt, so a 1 s update does not flicker).

Readability rules, each checked by a test: the title and the legend sit in the chart's top
border, outside the plot area (a legend inside hides data at 80x24); the x axis is `step`
with integer ticks over a range the screen sets (the same on every chart of a run); every
series of a chart has its own colour from the Okabe-Ito palette (colour-blind safe, and
readable on the light theme as on the dark); a chart with nothing to draw says what it
waits for instead of an empty -1..1 box."""

from __future__ import annotations

import math

from rich.console import Group
from rich.text import Text
from textual_plotext import PlotextPlot

from workbench.tui.feed import Series

RGB = tuple[int, int, int]
# Okabe & Ito (2008), "Color Universal Design": told apart under every common colour-vision
# deficiency. Yellow is left out: it vanishes on the light theme's white.
OKABE_ITO: tuple[RGB, ...] = (
    (0, 114, 178),    # blue
    (213, 94, 0),     # vermillion
    (0, 158, 115),    # bluish green
    (204, 121, 167),  # reddish purple
    (230, 159, 0),    # orange
    (86, 180, 233),   # sky blue
    (128, 128, 128),  # grey
)
BLUE, VERMILLION, GREEN, PURPLE, ORANGE, SKY, GREY = OKABE_ITO

# Stable colours: the same line has the same colour on every chart and every redraw, and
# the lines of one chart never share one.
LINE_COLOURS: dict[str, RGB] = {
    "subset": BLUE,
    "fixed": VERMILLION,
    "train_loss": PURPLE,
    "eval_loss": ORANGE,
    "eval_acc": GREEN,
    # the Studies screen's ratio of an arm to the reference: the ratio blue, its 95% CI band
    # (lo, hi) sky blue, the line at 1 (no difference) grey, drawn first so the ratio is on top
    "ratio": BLUE,
    "lo": SKY,
    "hi": SKY,
    "1": GREY,
}
# A paired reference run's line ("subset (baseline)"): its own colour, paired with its arm's.
REFERENCE_COLOURS: dict[str, RGB] = {"subset": SKY, "fixed": ORANGE}
DRAWN_FIRST = ("1",)  # under every other line
LEGEND_NAMES = {"train_loss": "train loss", "eval_loss": "eval loss", "eval_acc": "eval acc",
                "lo": "95% CI", "1": "1 = no difference"}


def line_colour(label: str, index: int = 0) -> RGB:
    """A line's colour: fixed for known labels; a reference run's line its own; else the
    `index`-th of the palette (a chart of every layer, each ensemble member)."""
    base, _, reference = label.partition(" (")
    if reference and base in REFERENCE_COLOURS:
        return REFERENCE_COLOURS[base]
    return LINE_COLOURS.get(label) or OKABE_ITO[index % len(OKABE_ITO)]


def chart_colours(labels: list[str]) -> dict[str, RGB]:
    """A colour for each label, no two alike while the palette lasts: known labels keep
    theirs, the others take the palette's colours in turn, skipping those taken (lo and hi
    are one band and share theirs)."""
    colours = {label: line_colour(label) for label in labels if label in LINE_COLOURS or " (" in label}
    spare = [c for c in OKABE_ITO if c not in colours.values()] or list(OKABE_ITO)
    others = [label for label in labels if label not in colours]
    colours.update({label: spare[i % len(spare)] for i, label in enumerate(others)})
    return {label: colours[label] for label in labels}


def rich_colour(rgb: RGB) -> str:
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})"


def step_ticks(low: int, high: int, most: int = 5) -> list[int]:
    """At most `most` integer ticks from `low` to `high` at a round spacing (1, 2, 5 x 10^k)."""
    if high <= low:
        return [low]
    raw = (high - low) / max(1, most - 1)
    spacing = 1
    for scale in (10 ** k for k in range(0, 10)):
        spacing = next((m * scale for m in (1, 2, 5) if m * scale >= raw), 0)
        if spacing:
            break
    first = math.ceil(low / spacing) * spacing
    return list(range(first, high + 1, spacing))


class MetricChart(PlotextPlot):
    """Lines `{label: Series}` over steps; labels listed in `right` use the right-hand axis."""

    def __init__(self, title: str, *, right: tuple[str, ...] = (), id: str | None = None,
                 waiting: str = "waiting for the first record", palette: dict[str, RGB] | None = None) -> None:
        super().__init__(id=id)
        self.palette = palette  # label -> colour, where the caller picks them (one per run)
        self.names: dict[str, str] = {}  # label -> what the legend calls it, where not the label
        self.chart_title = title
        self.right = right
        self.waiting = waiting  # what an empty chart says instead of an empty box
        self.points = 0  # how many points the chart currently draws (what tests look at)
        self.lines: dict[str, Series] = {}  # what it draws, by label
        self.colours: dict[str, RGB] = {}  # and in which colour
        self.x_range: tuple[int, int] | None = None  # (first, last step); None: the data's own
        self.ticks: list[int] = []  # the x ticks drawn

    def on_mount(self) -> None:
        super().on_mount()
        self.plt.xlabel("step")

    def retitle(self, title: str, waiting: str | None = None) -> None:
        if waiting is not None and waiting != self.waiting:
            self.waiting = waiting
            self.refresh()
        if title != self.chart_title:
            self.chart_title = title
            self.refresh()

    def legend(self, width: int = 10_000) -> list[Text]:
        """The title, then each line's colour and label (`right axis` for the right-hand
        axis), on as many rows of `width` as they need; an entry is never split."""
        rows = [Text(self.chart_title, style="bold")]
        for label in self.lines:
            if label == "hi":  # lo and hi are one band: one entry
                continue
            entry = Text("━━", style=rich_colour(self.colours[label]))
            name = self.names.get(label) or LEGEND_NAMES.get(label, label)
            entry.append(" " + name + (" (right axis)" if label in self.right else ""))
            if rows[-1].cell_len + 2 + entry.cell_len > width and rows[-1].cell_len:
                rows.append(entry)
            else:
                rows[-1].append("  ").append_text(entry)
        return rows

    def show(self, lines: dict[str, Series], x_range: tuple[int, int] | None = None) -> None:
        plt = self.plt
        plt.clear_data()
        self.points = 0
        kept = {label: series for label, series in lines.items() if len(series)}
        order = sorted(kept, key=lambda label: label not in DRAWN_FIRST)  # the line at 1 under the rest
        self.lines = {label: kept[label] for label in order}
        self.colours = ({label: self.palette.get(label, GREY) for label in self.lines} if self.palette
                        else chart_colours(list(self.lines)))
        self.x_range = x_range or self.x_range
        for label, series in self.lines.items():
            plt.plot(series.steps, series.values, color=self.colours[label], marker="braille",
                     yside="right" if label in self.right else "left")
            self.points += len(series)
        if self.lines:
            steps = [step for series in self.lines.values() for step in series.steps]
            low, high = self.x_range or (min(steps), max(steps))
            high = max(high, low + 1)
            self.ticks = step_ticks(low, high)
            plt.xlim(low, high)
            plt.xticks(self.ticks, [str(t) for t in self.ticks])
        self.refresh()

    def render(self):
        """The legend on its own rows above the plot (wrapped to the width, never over the
        data), then the plot in the rows left; with no data, what the chart waits for."""
        width, height = self.size
        legend = self.legend(max(1, width))
        if not self.lines:  # nothing yet: say so, no axes from -1 to 1
            return Group(*legend, Text(self.waiting, style="dim italic", justify="center"))
        rows = max(3, height - len(legend))
        self._plot.plotsize(width, rows)
        self._plot._set_size(width, rows)  # as PlotextPlot.render does (textual-plotext issue 5)
        self._plot.theme(self._get_plotext_theme_name(self.app.theme))
        return Group(*legend, Text.from_ansi(self._plot.build()))
