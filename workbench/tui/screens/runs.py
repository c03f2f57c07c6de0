"""The start screen: every run, live, with a text filter and a status filter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Input, Static

from engine.run_folder import read_json
from workbench.run_filter import matches
from workbench.tui.feed import STATUSES, RunFeed, StepRates
from workbench.tui.run_columns import MARK, BY_KEY, Column, columns_for, row_cells, sorted_ids  # noqa: F401  (MARK: the tests read it)
from workbench.tui.screens.polling import PollingScreen
from workbench.tui.widgets.keys_footer import KeysFooter
from workbench.tui.widgets.busy_line import BusyLine
from workbench.tui.widgets.tables import cursor_key, show_rows
from workbench.tui.screens.actions import confirm_cancel, resume_run, run_workbench


def can_fuse(records: list[dict[str, Any]], ensemble_members: int) -> str:
    """"" when `f` may fuse `records` (two or more completed runs, or one completed ensemble
    run: `ensemble_members` its member count), else why not, in one sentence."""
    unfinished = [r["run_id"] for r in records if r.get("status") != "completed"]
    if unfinished:
        return f"only completed runs can be fused: {', '.join(unfinished)} not completed"
    if len(records) == 1 and ensemble_members < 2:
        return f"{records[0]['run_id']} is not an ensemble run: mark two or more completed runs with space"
    return ""


class RunsTable(DataTable):
    """The runs table: its enter (open the run) named in the footer, where DataTable's is hidden."""

    BINDINGS = [Binding("enter", "select_cursor", "Open", key_display="⏎")]


class RunsScreen(PollingScreen):
    # Not in the footer (80 columns are full), listed by `?` and the palette instead.
    HELP_EXTRA = [
        ("escape", "Leave the filter"),
        ("j k", "Down / up"),
        ("g G", "First / last run"),
        ("o", "Sort by the next column (o again on the last: newest first); click a header to sort by it"),
        ("O", "Reverse the sort"),
        ("s", "Cycle the status filter"),
        ("r", "Resume a cancelled, failed or lost run"),
    ]
    BINDINGS = [
        Binding("space", "mark", "Mark", key_display="␣"),
        # A priority binding runs while the app reads the key, before it hands the next key
        # of a burst to the focused widget: so the focus is on the filter for all of them.
        Binding("slash", "filter", "Find", key_display="/", priority=True),
        Binding("s", "cycle_status", "Status", show=False),
        Binding("c", "cancel_run", "Cancel"),
        Binding("r", "resume_run", "Resume", show=False),
        Binding("n", "compose", "New"),
        Binding("m", "compare", "Compare"),
        Binding("f", "fuse", "Fuse"),
        Binding("t", "app.studies", "Studies"),
        Binding("j", "cursor('down')", "Down", show=False),
        Binding("k", "cursor('up')", "Up", show=False),
        Binding("g", "cursor('top')", "First", show=False),
        Binding("G", "cursor('bottom')", "Last", show=False),
        Binding("o", "sort_next", "Sort", show=False),
        Binding("O", "sort_reverse", "Reverse sort", show=False),
    ]

    def __init__(self, logs_dir: Path, experiments: Path) -> None:
        super().__init__(id="runs-screen")
        self.logs_dir = Path(logs_dir)
        self.experiments = Path(experiments)
        self.feed = RunFeed(self.logs_dir)
        self.rates = StepRates()
        self.records: dict[str, dict[str, Any]] = {}  # every run, by id (the filter not applied)
        self.order: list[str] = []  # the newest-first ids of every run
        self.status_filter = "all"
        self.sort_key: str | None = None  # a column key; None: newest first
        self.sort_reverse = False
        self.columns: list[Column] = []  # those the table has now (they depend on its width)
        self.marked: set[str] = set()  # ids marked with space for the Compare screen (kept across polls)

    def compose(self) -> ComposeResult:
        with Horizontal(id="runs-bar"):
            yield Input(placeholder="/ filter: text, or tag:T exp:X status:S host:H", id="runs-filter")
            yield Static("s status: all", id="runs-status-filter")
        yield RunsTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield BusyLine("", id="runs-info")
        yield KeysFooter(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#runs-table", DataTable).focus()
        self.start_polling()

    def on_resize(self) -> None:
        self.show()

    # polling: the store is read in a thread, the table is changed on the UI thread ----------
    def read(self) -> list[dict[str, Any]]:
        return self.feed.poll()

    def apply(self, records: list[dict[str, Any]] | None, error: str) -> None:
        if records is not None:
            self.rates.observe(records)
            self.records = {r["run_id"]: r for r in records}
            self.order = [r["run_id"] for r in records]
        self.show(error)

    def visible_ids(self) -> list[str]:
        text = self.query_one("#runs-filter", Input).value
        shown = [i for i in self.order if matches(self.records[i], text, self.status_filter)]
        return sorted_ids(self.records, shown, self.sort_key, self.sort_reverse, self.rates)

    def set_columns(self, table: DataTable) -> None:
        """The columns for the screen's width, a sort mark on the sorted one's label."""
        columns = columns_for(self.size.width or 80, list(self.records.values()))
        labels = [c.label + (("▼" if self.sort_reverse else "▲") if c.key == self.sort_key else "") for c in columns]
        if columns == self.columns and [str(c.label) for c in table.ordered_columns] == labels:
            return
        self.columns = columns
        table.clear(columns=True)
        for column, label in zip(columns, labels):
            table.add_column(label, key=column.key)

    def show(self, error: str = "") -> None:
        """Bring the table up to date, changing cells in place when the rows are the same ones
        in the same order; otherwise rebuild it, keeping the cursor on the same run."""
        table = self.query_one("#runs-table", DataTable)
        keep = self.highlighted_id()
        self.set_columns(table)
        ids = self.visible_ids()
        rows = {run_id: row_cells(self.records[run_id], self.columns, self.rates, run_id in self.marked) for run_id in ids}
        show_rows(table, rows, [c.key for c in self.columns], keep)
        shown = f"{len(ids)} of {len(self.order)} runs" if len(ids) != len(self.order) else f"{len(ids)} runs"
        marked = len(self.marked_ids())
        shown += f", {marked} marked" if marked else ""
        if self.sort_key:
            shown += f", by {BY_KEY[self.sort_key].label}" + (" (reversed)" if self.sort_reverse else "")
        self.query_one("#runs-info", BusyLine).say(error or f"{shown} in {self.logs_dir}")

    def highlighted_id(self) -> str | None:
        return cursor_key(self.query_one("#runs-table", DataTable))

    def highlighted(self) -> dict[str, Any] | None:
        run_id = self.highlighted_id()
        return self.records.get(run_id) if run_id else None

    # moving and sorting ------------------------------------------------------------------------
    def action_cursor(self, where: str) -> None:
        table = self.query_one("#runs-table", DataTable)
        {"down": table.action_cursor_down, "up": table.action_cursor_up,
         "top": table.action_scroll_top, "bottom": table.action_scroll_bottom}[where]()

    def sort_by(self, key: str | None, reverse: bool = False) -> None:
        self.sort_key, self.sort_reverse = key, reverse
        self.show()

    def action_sort_next(self) -> None:
        """The next column of the table; after the last, newest first again."""
        keys = [c.key for c in self.columns]
        at = keys.index(self.sort_key) + 1 if self.sort_key in keys else 0
        self.sort_by(keys[at] if at < len(keys) else None)

    def action_sort_reverse(self) -> None:
        if self.sort_key:
            self.sort_by(self.sort_key, not self.sort_reverse)

    @on(DataTable.HeaderSelected, "#runs-table")
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        self.sort_by(key, not self.sort_reverse if key == self.sort_key else False)

    # filters -----------------------------------------------------------------------------------
    @on(Input.Changed, "#runs-filter")
    def _filter_changed(self) -> None:
        self.show()

    @on(Input.Submitted, "#runs-filter")
    def _filter_done(self) -> None:
        self.query_one("#runs-table", DataTable).focus()

    def action_filter(self) -> None:
        # At once, not after the next refresh (`focus()`): the app hands the keys typed in one
        # burst after `/` (a paste, a laggy SSH link) to whatever has the focus as it reads them.
        filter_input = self.query_one("#runs-filter", Input)
        if filter_input.has_focus:  # a `/` typed into the filter is text
            filter_input.insert_text_at_cursor("/")
            return
        self.set_focus(filter_input)

    def action_cycle_status(self) -> None:
        self.status_filter = STATUSES[(STATUSES.index(self.status_filter) + 1) % len(STATUSES)]
        self.query_one("#runs-status-filter", Static).update(f"s status: {self.status_filter}")
        self.show()

    def key_escape(self) -> None:
        filter_input = self.query_one("#runs-filter", Input)
        if filter_input.has_focus:
            self.query_one("#runs-table", DataTable).focus()

    # actions on the highlighted run ---------------------------------------------------------
    @on(DataTable.RowSelected, "#runs-table")
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        self.open_run(event.row_key.value)

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
        records = [self.records[i] for i in ids]
        members = 0
        if len(records) == 1 and records[0].get("status") == "completed":  # one small file, read once
            spec = read_json(Path(records[0].get("run_dir") or self.logs_dir / ids[0]) / "spec.json") or {}
            members = (spec.get("ensemble") or {}).get("members") or 0
        problem = can_fuse(records, members)
        if problem:
            self.notify(problem, title="nothing to fuse", severity="warning")
            return
        self.app.push_screen(FuseScreen(ids), lambda mode: mode and self._start_fuse(ids, mode))

    def _start_fuse(self, ids: list[str], mode: str) -> None:
        """`workbench fuse` takes seconds (it starts Python and checks the members): say so at
        once, and keep the table answering meanwhile (the command runs in a thread)."""
        self.notify(f"fusing {', '.join(ids)} ({mode}): checking the members and queuing...", title="fuse")
        self.query_one("#runs-info", BusyLine).start(f"fusing {', '.join(ids)} ({mode})")
        self._fuse(ids, mode)

    @work(thread=True, group="fuse")
    def _fuse(self, ids: list[str], mode: str) -> None:
        queued, problem = run_workbench(["fuse", *ids, "--mode", mode], self.logs_dir)
        self.app.call_from_thread(self._fused, ids, mode, queued, problem)

    def _fused(self, ids: list[str], mode: str, queued: list[str] | None, problem: str) -> None:
        self.query_one("#runs-info", BusyLine).stop()
        if queued is None:  # the members do not fit: `workbench fuse` said why in one sentence
            self.notify(problem, title="fuse refused", severity="error")
            return
        self.notify(f"{mode} of {', '.join(ids)}: {', '.join(queued)}", title="run queued")
        self.marked.clear()
        self.poll()

    def action_cancel_run(self) -> None:
        record = self.highlighted()
        if record:
            confirm_cancel(self, record, self.logs_dir)

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
