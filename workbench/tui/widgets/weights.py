"""The Weights tab's pictures, from `snapshots.jsonl` records (engine/weights_record.py), in
text: the first conv layer's kernels as small heatmaps in half blocks, each layer's
histograms over time as shaded strips, and the 2-D projection's trajectory of a run and its
paired reference."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual_plotext import PlotextPlot

from workbench.tui.widgets.chart import BLUE, SKY, VERMILLION, rich_colour

RGB = tuple[int, int, int]
NEGATIVE, ZERO, POSITIVE = BLUE, (240, 240, 240), VERMILLION  # a diverging scale, colour-blind safe
SHADES = " ░▒▓█"
TRACK_COLOURS = (BLUE, SKY)  # this run, its reference


def track_legend(labels: list[str]) -> Text:
    text = Text("2-D trajectory  ", style="bold")
    for label, colour in zip(labels, TRACK_COLOURS):
        text.append("━━ ", style=rich_colour(colour)).append(f"{label}  ")
    return text.append("(● the newest point)", style="dim")


def diverging(value: float, reach: float) -> RGB:
    """The colour of `value` on the fixed scale -reach (blue) .. 0 (near white) .. reach (vermillion)."""
    t = max(-1.0, min(1.0, value / reach)) if reach else 0.0
    end = POSITIVE if t > 0 else NEGATIVE
    return tuple(round(z + (e - z) * abs(t)) for z, e in zip(ZERO, end))  # type: ignore[return-value]


def kernel_pixels(kernel: list[list[list[float]]]) -> list[list[float]]:
    """A kernel's h x w picture: the mean over its input channels (one channel: itself)."""
    channels = len(kernel)
    return [[sum(kernel[c][y][x] for c in range(channels)) / channels for x in range(len(kernel[0][0]))]
            for y in range(len(kernel[0]))]


def kernel_grid(record: dict[str, Any], reach: float, width: int) -> Text:
    """Every kernel of the record's first conv layer, side by side in rows that fit `width`:
    two pixel rows per text row (upper half block: top pixel as the colour, bottom pixel as
    the background). Subset kernels framed `│ │`, fixed ones `┊ ┊` (dim)."""
    kernels = (record.get("kernels") or {}).get("values") or []
    fixed = (record.get("kernels") or {}).get("fixed_kernels") or [False] * len(kernels)
    if not kernels:
        return Text("no conv kernels in this snapshot", style="dim")
    pictures = [kernel_pixels(k) for k in kernels]
    h, w = len(pictures[0]), len(pictures[0][0])
    per_row = max(1, width // (w + 3))
    text = Text()
    for start in range(0, len(pictures), per_row):
        group = list(range(start, min(start + per_row, len(pictures))))
        for y in range(0, h, 2):
            for k in group:
                side = "┊" if fixed[k] else "│"
                style = "dim" if fixed[k] else "bold"
                text.append(side, style=style)
                for x in range(w):
                    top = diverging(pictures[k][y][x], reach)
                    bottom = diverging(pictures[k][y + 1][x], reach) if y + 1 < h else None
                    text.append("▀", style=f"{rich_colour(top)} on {rich_colour(bottom)}" if bottom else rich_colour(top))
                text.append(side + " ", style=style)
            text.append("\n")
        text.append(" ".join(f"{k:>{w + 1}}" for k in group) + "\n", style="dim")
    return text


def histogram_strips(snapshots: list[dict[str, Any]], layer: str, upto: int) -> Text:
    """`layer`'s histogram of subset and of fixed at every snapshot up to index `upto`, one
    text row per snapshot (oldest on top), bins left (negative) to right (positive), each
    cell shaded by its count over the largest count of that subset's rows."""
    text = Text()
    rows = snapshots[: upto + 1]
    if not rows:
        return text
    low, high = rows[-1].get("edges", {}).get(layer, (0, 0))
    text.append(f"{layer}: histograms over time, range {low:.3g} to {high:.3g} (fixed at step 0)\n", style="bold")
    for subset in ("subset", "fixed"):
        counts = [r.get("hist", {}).get(subset, {}).get(layer) or [] for r in rows]
        most = max((max(c) for c in counts if c), default=0)
        text.append(f"{subset}  (rows: steps {rows[0]['step']}..{rows[-1]['step']}; shade: count / {most})\n",
                    style=rich_colour(BLUE if subset == "subset" else VERMILLION))
        for record, row in zip(rows, counts):
            cells = "".join(SHADES[min(len(SHADES) - 1, round((len(SHADES) - 1) * c / most))] if most else " "
                            for c in row)
            text.append(f"{record['step']:>7} ▕{cells}▏\n")
    return text


class TrajectoryPlot(PlotextPlot):
    """The weights' 2-D projection over time: this run, and its paired reference's."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.tracks: dict[str, list[tuple[float, float]]] = {}

    def on_mount(self) -> None:
        super().on_mount()
        self.plt.xlabel("projection 1")

    def show(self, tracks: dict[str, list[tuple[float, float]]]) -> None:
        self.tracks = {label: points for label, points in tracks.items() if points}
        plt = self.plt
        plt.clear_data()
        for (label, points), colour in zip(self.tracks.items(), TRACK_COLOURS):  # legend: the pane's, above
            plt.plot([p[0] for p in points], [p[1] for p in points], color=colour, marker="braille")
            plt.scatter([points[-1][0]], [points[-1][1]], color=colour, marker="●")
        self.refresh()
