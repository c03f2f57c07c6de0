"""Two or more runs side by side: each run's movement and eval curves overlaid (one colour
per run, the same on every chart), and the spec fields where the runs differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import DataTable, Footer, Static, TabbedContent, TabPane

from engine.events import EVENTS_FILE
from engine.run_folder import read_json
from workbench.tui.feed import EventsTail
from workbench.tui.widgets.chart import OKABE_ITO, RGB, MetricChart, rich_colour
from workbench.tui.screens.polling import PollingScreen

# chart id -> (title, series name in EventsTail)
CHARTS = {
    "movement": (
        ("cmp-subset-dist", "subset dist", "subset.dist"),
        ("cmp-fixed-dist", "fixed dist", "fixed.dist"),
        ("cmp-subset-speed", "subset speed", "subset.speed"),
        ("cmp-fixed-speed", "fixed speed", "fixed.speed"),
    ),
    "eval": (
        ("cmp-eval-loss", "eval loss", "eval_loss"),
        ("cmp-eval-acc", "eval acc", "eval_acc"),
    ),
}


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value} if prefix else {}


MISSING = object()


def spec_differences(specs: list[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """(dotted key, one value per spec) for every key whose values are not all equal
    (a key absent from some specs counts as differing); sorted by key."""
    flat = [flatten(spec or {}) for spec in specs]
    keys = sorted(set().union(*flat)) if flat else []
    rows = []
    for key in keys:
        values = [f.get(key, MISSING) for f in flat]
        if any(v != values[0] for v in values[1:]):
            rows.append((key, values))
    return rows


def cell(value: Any) -> str:
    if value is MISSING:
        return "-"
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value)


class CompareChart(MetricChart):
    """A MetricChart whose line colours are given per label (per run) instead of per metric."""

    def __init__(self, title: str, colours: dict[str, RGB], *, id: str | None = None) -> None:
        super().__init__(title, id=id, palette=colours)

    @property
    def labels(self) -> list[str]:
        """The labels (run ids) currently drawn."""
        return list(self.lines)


class CompareScreen(PollingScreen):
    HELP_EXTRA = [("← →", "Previous / next tab (tab bar focused)")]
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("1", "tab('cmp-tab-movement')", "Movement"),
        Binding("2", "tab('cmp-tab-eval')", "Eval"),
        Binding("3", "tab('cmp-tab-spec')", "Spec diff"),
    ]

    def __init__(self, records: list[dict[str, Any]], logs_dir: Path) -> None:
        super().__init__(id="compare-screen")
        self.records = list(records)
        self.logs_dir = Path(logs_dir)
        self.run_ids = [r["run_id"] for r in self.records]
        self.run_dirs = {r["run_id"]: Path(r.get("run_dir") or self.logs_dir / r["run_id"]) for r in self.records}
        # run i gets the i-th colour on every chart, in the legend and in the tables
        self.plot_colours = {run_id: OKABE_ITO[i % len(OKABE_ITO)] for i, run_id in enumerate(self.run_ids)}
        self.text_colours = {run_id: rich_colour(rgb) for run_id, rgb in self.plot_colours.items()}
        self.tails = {run_id: EventsTail(self.run_dirs[run_id] / EVENTS_FILE) for run_id in self.run_ids}
        self.differences: list[tuple[str, list[Any]]] = []
        self._drawn: dict[str, int] = {}
        self._specs_shown = False

    def compose(self) -> ComposeResult:
        yield Static(self.legend(), id="cmp-legend")
        with TabbedContent(id="cmp-tabs", initial="cmp-tab-movement"):
            with TabPane("Movement", id="cmp-tab-movement"):
                with Grid(id="cmp-movement"):
                    for chart_id, title, _ in CHARTS["movement"]:
                        yield CompareChart(title, self.plot_colours, id=chart_id)
            with TabPane("Eval", id="cmp-tab-eval"):
                with Grid(id="cmp-eval"):
                    for chart_id, title, _ in CHARTS["eval"]:
                        yield CompareChart(title, self.plot_colours, id=chart_id)
            with TabPane("Spec diff", id="cmp-tab-spec"):
                yield DataTable(id="cmp-spec", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def legend(self) -> Text:
        text = Text()
        for run_id, record in zip(self.run_ids, self.records):
            if text:
                text.append("  ")
            text.append("● ", style=self.text_colours[run_id])
            text.append(run_id, style=f"bold {self.text_colours[run_id]}")
            text.append(f" {record.get('experiment') or '-'}", style="dim")
        return text

    def on_mount(self) -> None:
        self.start_polling()

    # polling: files are read in a thread, widgets changed on the UI thread -------------------
    def read(self) -> list[dict[str, Any]] | None:
        for tail in self.tails.values():
            tail.poll()
        if self._specs_shown:  # a run's spec never changes: read once
            return None
        return [read_json(self.run_dirs[run_id] / "spec.json") or {} for run_id in self.run_ids]

    def apply(self, specs: list[dict[str, Any]] | None, error: str) -> None:
        if specs is not None:
            self.show_specs(specs)
            self._specs_shown = True
        versions = {run_id: tail.version for run_id, tail in self.tails.items()}
        if versions != self._drawn:
            self._drawn = versions
            self.draw()
        if error:
            self.query_one("#cmp-legend", Static).update(Text.assemble(self.legend(), "\n", (error, "red")))

    # drawing ---------------------------------------------------------------------------------
    def draw(self) -> None:
        for charts in CHARTS.values():
            for chart_id, _, name in charts:
                lines = {run_id: self.tails[run_id].series[name] for run_id in self.run_ids}
                self.query_one(f"#{chart_id}", CompareChart).show(lines)

    def show_specs(self, specs: list[dict[str, Any]]) -> None:
        self.differences = spec_differences(specs)
        table = self.query_one("#cmp-spec", DataTable)
        table.clear(columns=True)
        table.add_column("key", key="key")
        for run_id in self.run_ids:
            table.add_column(Text(run_id, style=f"bold {self.text_colours[run_id]}"), key=run_id)
        for key, values in self.differences:
            table.add_row(key, *(cell(v) for v in values), key=key)
        if not self.differences:
            table.add_row("(the specs are identical)", *("" for _ in self.run_ids), key="-")

    # actions -----------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_tab(self, tab: str) -> None:
        self.query_one("#cmp-tabs", TabbedContent).active = tab
