"""Two or more runs side by side: each run's movement and eval curves overlaid (one colour
per run, the same on every chart), and the spec fields where the runs differ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from engine.events import EVENTS_FILE
from engine.run_folder import read_json
from workbench.tui.feed import EventsTail, short_number
from workbench.tui.live_ratio import LiveRatio, live_ratio
from workbench.tui.widgets.keys_footer import KeysFooter
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


# The answer first (the ratios fit at 80 columns), then the figures behind it.
SUMMARY_COLUMNS = (("name", "run"), ("dist", "subset dist ÷1st"), ("speed", "speed ÷1st"), ("at", "at step"),
                   ("acc", "eval acc"), ("loss", "eval loss"), ("subset", "subset dist"), ("fixed", "fixed dist"),
                   ("step", "step"), ("id", "id"))


def run_name(record: dict[str, Any]) -> str:
    """What a run is, to a researcher: `half-fixed s1` (experiment and seed)."""
    seed = record.get("seed")
    return f"{record.get('experiment') or '-'}" + (f" s{seed}" if seed is not None else "")


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

    def __init__(self, title: str, colours: dict[str, RGB], names: dict[str, str], *, id: str | None = None) -> None:
        super().__init__(title, id=id, palette=colours)
        self.names = names  # run id -> "experiment s<seed>"

    @property
    def labels(self) -> list[str]:
        """The labels (run ids) currently drawn."""
        return list(self.lines)


class CompareScreen(PollingScreen):
    HELP_EXTRA = [("← →", "Previous / next tab (tab bar focused)")]
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("1", "tab('cmp-tab-summary')", "Summary"),
        Binding("2", "tab('cmp-tab-movement')", "Movement"),
        Binding("3", "tab('cmp-tab-eval')", "Eval"),
        Binding("4", "tab('cmp-tab-spec')", "Spec diff"),
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
        self.names = {r["run_id"]: run_name(r) for r in self.records}
        self.specs: list[dict[str, Any]] = []  # read once, in the read thread
        self.ratios: dict[str, LiveRatio] = {}  # run id -> against the first marked run
        self.differences: list[tuple[str, list[Any]]] = []
        self._drawn: dict[str, int] = {}
        self._specs_shown = False

    def compose(self) -> ComposeResult:
        yield Static(self.legend(), id="cmp-legend")
        with TabbedContent(id="cmp-tabs", initial="cmp-tab-summary"):
            with TabPane("Summary", id="cmp-tab-summary"):
                yield DataTable(id="cmp-summary", cursor_type="row", zebra_stripes=True)
            with TabPane("Movement", id="cmp-tab-movement"):
                with Grid(id="cmp-movement"):
                    for chart_id, title, _ in CHARTS["movement"]:
                        yield CompareChart(title, self.plot_colours, self.names, id=chart_id)
            with TabPane("Eval", id="cmp-tab-eval"):
                with Grid(id="cmp-eval"):
                    for chart_id, title, _ in CHARTS["eval"]:
                        yield CompareChart(title, self.plot_colours, self.names, id=chart_id)
            with TabPane("Spec diff", id="cmp-tab-spec"):
                yield DataTable(id="cmp-spec", cursor_type="row", zebra_stripes=True)
        yield KeysFooter(compact=True)

    def legend(self) -> Text:
        text = Text()
        for run_id, record in zip(self.run_ids, self.records):
            if text:
                text.append("  ")
            text.append("● ", style=self.text_colours[run_id])
            text.append(self.names[run_id], style=f"bold {self.text_colours[run_id]}")
            text.append(f" {run_id}", style="dim")
        return text

    def on_mount(self) -> None:
        self.start_polling()

    # polling: files are read in a thread, widgets changed on the UI thread -------------------
    def read(self) -> list[dict[str, Any]] | None:
        for tail in self.tails.values():
            tail.poll()
        specs = None
        if not self._specs_shown:  # a run's spec never changes: read once
            specs = self.specs = [read_json(self.run_dirs[run_id] / "spec.json") or {} for run_id in self.run_ids]
        first = self.tails[self.run_ids[0]].standing("movement")
        self.ratios = {run_id: live_ratio(spec, self.tails[run_id].standing("movement"), first)
                       for run_id, spec in zip(self.run_ids[1:], self.specs[1:])}
        return specs

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
        self.show_summary()
        for charts in CHARTS.values():
            for chart_id, _, name in charts:
                lines = {run_id: self.tails[run_id].series[name] for run_id in self.run_ids}
                self.query_one(f"#{chart_id}", CompareChart).show(lines)

    def show_summary(self) -> None:
        """Each run's latest figures, and its subset's movement over the first marked run's
        (the partitioned layers, at the latest step both recorded: the Run screen's ratio)."""
        table = self.query_one("#cmp-summary", DataTable)
        if not table.columns:
            for key, label in SUMMARY_COLUMNS:
                table.add_column(label, key=key)
        table.clear()
        for run_id in self.run_ids:
            series, ratio = self.tails[run_id].series, self.ratios.get(run_id)

            def last(name: str) -> Any:
                return series[name].values[-1] if len(series[name]) else None

            acc = last("eval_acc")
            first = run_id == self.run_ids[0]
            shared = ratio is not None and ratio.step is not None
            cells = {
                "name": Text(self.names[run_id], style=f"bold {self.text_colours[run_id]}"), "id": run_id,
                "at": "first" if first else (str(ratio.step) if shared else "-"),
                **{m: "" if first else (f"{ratio.ratios[m]:.2f}x" if shared and ratio.ratios.get(m) is not None else "-")
                   for m in ("dist", "speed")},
                "acc": "-" if acc is None else f"{100 * acc:.2f}%", "loss": short_number(last("eval_loss")),
                "subset": short_number(last("subset.dist")), "fixed": short_number(last("fixed.dist")),
                "step": str(self.tails[run_id].step),
            }
            table.add_row(*(cells[key] for key, _ in SUMMARY_COLUMNS), key=run_id)

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
