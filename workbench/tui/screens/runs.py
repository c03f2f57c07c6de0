"""The start screen: every run, live, with a text filter and a status filter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Input, Static

from workbench.tables import STATUS_STYLE
from workbench.tui.feed import STATUSES, RunFeed, age, matches, progress_bar, short_number
from workbench.tui.screens.polling import PollingScreen
from workbench.tui.widgets.tables import cursor_key, show_rows
from workbench.tui.screens.actions import cancel_run, resume_run, run_workbench

COLUMNS = (  # key, label
    ("run", "run"),
    ("experiment", "experiment"),
    ("status", "status"),
    ("device", "device"),
    ("step", "step"),
    ("subset", "subset"),
    ("fixed", "fixed"),
    ("age", "age"),
)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


MARK = "●"


def row_cells(record: dict[str, Any], marked: bool = False) -> list[Any]:
    status = record.get("status") or "?"
    run_id = record["run_id"]
    return [
        Text(f"{MARK} {run_id}", style="bold yellow") if marked else run_id,
        clip(record.get("experiment") or "-", 13),
        Text(status, style=STATUS_STYLE.get(status, "")),
        record.get("device") or "-",
        progress_bar(record.get("step"), record.get("steps")),
        short_number(record.get("subset_dist")),
        short_number(record.get("fixed_dist")),
        age(record.get("created")),
    ]


class RunsScreen(PollingScreen):
    # Not in the footer (80 columns are full), listed by `?` and the palette instead.
    HELP_EXTRA = [
        ("enter", "Open the highlighted run"),
        ("escape", "Leave the filter"),
        ("␣", "Mark / unmark a run to compare or fuse"),
        ("f", "Fuse the marked runs (or the highlighted ensemble run) into a new run"),
        ("t", "Studies"),
    ]
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("s", "cycle_status", "Status"),
        Binding("c", "cancel_run", "Cancel"),
        Binding("r", "resume_run", "Resume"),
        Binding("n", "compose", "New"),
        Binding("space", "mark", "Mark", key_display="␣", show=False),
        Binding("m", "compare", "Compare"),
        Binding("f", "fuse", "Fuse", show=False),
    ]

    def __init__(self, logs_dir: Path, experiments: Path) -> None:
        super().__init__(id="runs-screen")
        self.logs_dir = Path(logs_dir)
        self.experiments = Path(experiments)
        self.feed = RunFeed(self.logs_dir)
        self.records: dict[str, dict[str, Any]] = {}  # every run, by id (the filter not applied)
        self.order: list[str] = []  # the newest-first ids of every run
        self.status_filter = "all"
        self.marked: set[str] = set()  # ids marked with space for the Compare screen (kept across polls)

    def compose(self) -> ComposeResult:
        with Horizontal(id="runs-bar"):
            yield Input(placeholder="/ filter: id, experiment, status, device", id="runs-filter")
            yield Static("status: all", id="runs-status-filter")
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("", id="runs-info")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#runs-table", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self.start_polling()

    # polling: the store is read in a thread, the table is changed on the UI thread ----------
    def read(self) -> list[dict[str, Any]]:
        return self.feed.poll()

    def apply(self, records: list[dict[str, Any]] | None, error: str) -> None:
        if records is not None:
            self.records = {r["run_id"]: r for r in records}
            self.order = [r["run_id"] for r in records]
        self.show(error)

    def visible_ids(self) -> list[str]:
        text = self.query_one("#runs-filter", Input).value
        return [i for i in self.order if matches(self.records[i], text, self.status_filter)]

    def show(self, error: str = "") -> None:
        """Bring the table up to date, changing cells in place when the rows are the same ones
        in the same order; otherwise rebuild it, keeping the cursor on the same run."""
        table = self.query_one("#runs-table", DataTable)
        ids = self.visible_ids()
        rows = {run_id: row_cells(self.records[run_id], run_id in self.marked) for run_id in ids}
        show_rows(table, rows, [key for key, _ in COLUMNS], self.highlighted_id())
        shown = f"{len(ids)} of {len(self.order)} runs" if len(ids) != len(self.order) else f"{len(ids)} runs"
        marked = len(self.marked_ids())
        shown += f", {marked} marked" if marked else ""
        self.query_one("#runs-info", Static).update(error or f"{shown} in {self.logs_dir}")

    def highlighted_id(self) -> str | None:
        return cursor_key(self.query_one("#runs-table", DataTable))

    def highlighted(self) -> dict[str, Any] | None:
        run_id = self.highlighted_id()
        return self.records.get(run_id) if run_id else None

    # filters -----------------------------------------------------------------------------------
    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self) -> None:
        self.show()

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self) -> None:
        self.query_one("#runs-table", DataTable).focus()

    def action_filter(self) -> None:
        self.query_one("#runs-filter", Input).focus()

    def action_cycle_status(self) -> None:
        self.status_filter = STATUSES[(STATUSES.index(self.status_filter) + 1) % len(STATUSES)]
        self.query_one("#runs-status-filter", Static).update(f"status: {self.status_filter}")
        self.show()

    def key_escape(self) -> None:
        filter_input = self.query_one("#runs-filter", Input)
        if filter_input.has_focus:
            self.query_one("#runs-table", DataTable).focus()

    # actions on the highlighted run ---------------------------------------------------------
    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.open_run(event.row_key.value)

    def action_open(self) -> None:
        run_id = self.highlighted_id()
        if run_id:
            self.open_run(run_id)

    def open_run(self, run_id: str) -> None:
        from workbench.tui.screens.run import RunScreen

        record = self.records.get(run_id)
        if record:
            self.app.push_screen(RunScreen(record, self.logs_dir))

    # marking and comparing --------------------------------------------------------------------
    def marked_ids(self) -> list[str]:
        """The marked runs still in the store, newest first."""
        return [i for i in self.order if i in self.marked]

    def action_mark(self) -> None:
        run_id = self.highlighted_id()
        if not run_id:
            return
        self.marked.symmetric_difference_update({run_id})
        self.show()  # the row's id cell gains or loses its mark

    def action_compare(self) -> None:
        ids = self.marked_ids()
        if len(ids) < 2:
            self.notify("mark two or more runs with space", severity="warning")
            return
        from workbench.tui.screens.compare import CompareScreen

        self.app.push_screen(CompareScreen([self.records[i] for i in ids], self.logs_dir))

    def action_fuse(self) -> None:
        """Fuse the marked runs; with none marked, the highlighted run (an ensemble's members)."""
        from workbench.tui.screens.fuse import FuseScreen

        ids = self.marked_ids() or ([self.highlighted_id()] if self.highlighted_id() else [])
        if not ids:
            self.notify("mark the runs to fuse with space", severity="warning")
            return
        self.app.push_screen(FuseScreen(ids), lambda mode: mode and self._fuse(ids, mode))

    @work(thread=True, group="fuse")
    def _fuse(self, ids: list[str], mode: str) -> None:
        queued, problem = run_workbench(["fuse", *ids, "--mode", mode], self.logs_dir)
        self.app.call_from_thread(self._fused, ids, mode, queued, problem)

    def _fused(self, ids: list[str], mode: str, queued: list[str] | None, problem: str) -> None:
        if queued is None:  # the members do not fit: `workbench fuse` said why in one sentence
            self.notify(problem, title="fuse refused", severity="error")
            return
        self.notify(f"{mode} of {', '.join(ids)}: {', '.join(queued)}", title="run queued")
        self.marked.clear()
        self.poll()

    def action_cancel_run(self) -> None:
        record = self.highlighted()
        if record:
            self.notify(cancel_run(record, self.logs_dir))
            self.poll()

    def action_resume_run(self) -> None:
        record = self.highlighted()
        if record:
            self.notify(resume_run(record, self.logs_dir))

    def action_compose(self) -> None:
        from workbench.tui.screens.compose import ComposeScreen  # torch-free, loaded on first use

        self.app.push_screen(ComposeScreen(experiments_path=self.experiments, logs_dir=self.logs_dir), self._composed)

    def _composed(self, run_ids: list[str] | None) -> None:
        if run_ids:
            self.notify(f"launched {', '.join(run_ids)}")
        self.poll()
