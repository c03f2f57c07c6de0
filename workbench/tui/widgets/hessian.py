"""The Run screen's Hessian tab: each layer's interaction matrix S as a heatmap in half
blocks, and the within-set vs cross-set summary that `workbench hessian` prints.

Read from the run's hessian.json (engine/strategies/hessian.py writes it beside hessian.pt:
the same numbers as plain lists, so this process never imports torch).
- Cell (i, j) is S[i, j] = 1_i^T H 1_j, the signed sum of the Hessian entries between kernels
  i and j; kernels ordered by the split, fixed first (the order of the report's heatmap),
  the fixed block set off by a rule after its last row and column.
- Colour: a fixed diverging scale of 2 * LEVELS + 1 steps, blue (negative) through near
  white (0) to vermillion (positive), over -reach..+reach with reach the largest |S[i, j]|
  off the diagonal (the entries the split weighs); a diagonal S[k, k] beyond it is drawn at
  the end colour (the legend says by how much the largest one exceeds it).
- Two matrix rows per text row: upper half block, the top row's colour in front and the
  bottom row's behind, so a cell is about square.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static, Tab, Tabs

from engine.hessian_summary import hessian_note
from engine.run_folder import read_json
from workbench.hessian_view import HESSIAN_FILE, describe, summary_table
from workbench.tui.widgets.chart import rich_colour
from workbench.tui.widgets.weights import diverging

LEVELS = 4  # colour steps on each side of 0
HESSIAN_JSON = "hessian.json"  # engine/strategies/hessian.py writes it (kept torch-free here)
HESSIAN_MISSING = ("this run's hessian.json is missing or unreadable (a run made before it was written): "
                   "`workbench hessian RUN` prints the same from hessian.pt")


def read_hessian(run_dir: Path) -> dict[str, Any] | None:
    """hessian.json's contents; {} for a run with hessian.pt but no readable hessian.json;
    None for a run that has not measured (or never measures) the Hessian."""
    saved = read_json(Path(run_dir) / HESSIAN_JSON)
    if saved is not None and isinstance(saved.get("layers"), dict) and saved["layers"]:
        return saved
    return {} if (Path(run_dir) / HESSIAN_FILE).exists() else None


def split_order(fixed: list[bool]) -> list[int]:
    """The kernels, fixed first, each set in index order."""
    return [k for k in range(len(fixed)) if fixed[k]] + [k for k in range(len(fixed)) if not fixed[k]]


def reach_of(s: list[list[float]]) -> float:
    """The largest |S[i, j]| with i != j (the colour scale's end); the diagonal's when K = 1."""
    off = [abs(v) for i, row in enumerate(s) for j, v in enumerate(row) if i != j]
    return max(off) if off and max(off) > 0 else max((abs(row[i]) for i, row in enumerate(s)), default=0.0)


def level(value: float, reach: float) -> int:
    """The colour step of `value`: -LEVELS .. LEVELS (clipped beyond -reach..reach)."""
    if not reach:
        return 0
    return max(-LEVELS, min(LEVELS, round(value / reach * LEVELS)))


def level_colour(step: int) -> str:
    return rich_colour(diverging(step / LEVELS, 1.0))


def heatmap(record: dict[str, Any]) -> Text:
    """S in split order: rows in pairs per text row, a rule between the fixed and the other kernels."""
    s, fixed = record["S"], [bool(f) for f in record["fixed"]]
    order, count = split_order(fixed), sum(fixed)
    reach = reach_of(s)
    text = Text(no_wrap=True, overflow="crop")
    text.append(f"{count} fixed kernels first, then {len(order) - count} subset kernels\n", style="dim")
    for block, rows in enumerate((order[:count], order[count:])):
        if block == 1 and count and rows:
            text.append("─" * count + "┼" + "─" * (len(order) - count) + "\n", style="bold")
        for top in range(0, len(rows), 2):
            pair = rows[top : top + 2]
            for position, j in enumerate(order):
                if position == count and 0 < count < len(order):
                    text.append("│", style="bold")
                upper = level_colour(level(s[pair[0]][j], reach))
                if len(pair) == 2:
                    text.append("▀", style=f"{upper} on {level_colour(level(s[pair[1]][j], reach))}")
                else:
                    text.append("▀", style=upper)
            text.append(f" {','.join(str(k) for k in pair)}\n", style="dim")
    return text


def legend(record: dict[str, Any]) -> Text:
    s = record["S"]
    reach = reach_of(s)
    text = Text("S[i, j] = 1_i^T H 1_j", style="bold").append(", the signed sum of H between kernels i and j: ")
    for step in range(-LEVELS, LEVELS + 1):
        text.append("█", style=level_colour(step))
    text.append(f" -{reach:.3g} .. 0 .. +{reach:.3g}, the largest |S| off the diagonal")
    diagonal = max((abs(row[i]) for i, row in enumerate(s)), default=0.0)
    if reach and diagonal > reach:
        text.append(f" (the diagonal reaches {diagonal:.3g}: clipped)", style="dim")
    text.append("\nkernels in split order, fixed first (the rules after them); at the right: each text row's "
                "two kernels (upper, lower half)", style="dim")
    return text


class HessianPane(VerticalScroll):
    """A layer selector, the chosen layer's S heatmap with its legend, and the summary table."""

    DEFAULT_CSS = """
    HessianPane #hessian-layers { height: 2; }
    HessianPane Static { width: auto; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.saved: dict[str, Any] | None = None
        self.shown_layer: str | None = None

    def compose(self) -> ComposeResult:
        yield Static("", id="hessian-title")
        yield Tabs(id="hessian-layers")
        yield Static("", id="hessian-legend")
        yield Static("", id="hessian-map")
        yield Static("", id="hessian-summary")

    def show(self, saved: dict[str, Any] | None, missing: str = "") -> None:
        """Draw `saved` (hessian.json's contents), or say why there is nothing to draw."""
        if saved is None:
            self.query_one("#hessian-title", Static).update(Text(missing, style="dim"))
            return
        self.saved = saved
        tabs = self.query_one("#hessian-layers", Tabs)
        names = list(saved["layers"])
        if tabs.tab_count != len(names):
            tabs.clear()
            for index, name in enumerate(names):
                tabs.add_tab(Tab(name, id=f"hessian-layer-{index}"))
        self.shown_layer = self.shown_layer if self.shown_layer in names else names[0]
        self.query_one("#hessian-title", Static).update(Text(describe(saved), style="bold"))
        self.draw_layer()
        self.query_one("#hessian-summary", Static).update(Group(summary_table(hessian_note(saved))))

    def draw_layer(self) -> None:
        if not self.saved or self.shown_layer is None:
            return
        record = self.saved["layers"][self.shown_layer]
        self.query_one("#hessian-legend", Static).update(legend(record))
        self.query_one("#hessian-map", Static).update(heatmap(record))

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tabs.id != "hessian-layers" or not self.saved:
            return
        event.stop()  # the Run screen's own tab bar listens for its tabs only
        index = int(event.tab.id.rsplit("-", 1)[1])
        self.shown_layer = list(self.saved["layers"])[index]
        self.draw_layer()
