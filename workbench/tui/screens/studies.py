"""The studies of experiments.json, live: which arm x seed runs exist, how far they are, and
once every one completed, the verdict (the answer, ratios with 95% CIs by scope led by the
headline, and the headline ratio over steps).

Runs are matched to a study by `workbench.study.match_runs`, the one torch-free matcher that
`workbench study` and `workbench report` use too (so this screen shows the runs they re-use).
A failed/cancelled/lost run is shown when nothing better exists (`workbench study` replaces it).

A study with a sweep is listed with a pointer to `workbench study NAME`, which shows its grid.

All reading happens in a thread worker every POLL_SECONDS (PollingScreen); a completed
study's verdict is computed once per set of run folders and cached (completed runs do not
change).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import DataTable, Static

from engine.spec import Experiments, ResolvedStudy
from workbench.best_single import best_single_table
from workbench.escape import escape_section
from workbench.study import RunKeys, match_runs, stored_runs, with_prerequisites
from workbench.tables import STATUS_STYLE
from workbench.tui.feed import Series, progress_bar
from workbench.tui.widgets.keys_footer import KeysFooter
from workbench.tui.widgets.chart import MetricChart
from workbench.scoped_verdict import scope_rows
from workbench.verdict import s_cells, study_verdict
from workbench.tui.screens.actions import start_detached
from workbench.tui.screens.polling import PollingScreen
from workbench.tui.widgets.tables import cursor_key, show_rows


@dataclass
class StudyState:
    """One study as this screen shows it."""

    name: str
    description: str = ""
    arms: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    reference: str = ""
    runs: dict[str, dict[int, dict[str, Any] | None]] = field(default_factory=dict)  # arm -> seed -> record
    verdict: dict[str, Any] | None = None
    error: str = ""
    note: str = ""  # shown instead of runs and verdict (a sweep's cells live in the CLI)

    def records(self) -> list[dict[str, Any] | None]:
        return [record for seeds in self.runs.values() for record in seeds.values()]

    @property
    def total(self) -> int:
        return len(self.arms) * len(self.seeds)

    def count(self, *statuses: str) -> int:
        return sum(1 for r in self.records() if r and (not statuses or r.get("status") in statuses))

    @property
    def complete(self) -> bool:
        records = self.records()
        return bool(records) and all(r and r.get("status") == "completed" for r in records)


class StudyMatcher:
    """Reads the store and run folders (spec.json cached per folder: it never changes)."""

    def __init__(self, experiments_path: Path, logs_dir: Path) -> None:
        self.experiments_path = Path(experiments_path)
        self.logs_dir = Path(logs_dir)
        self._keys = RunKeys()  # each run's spec read once: it never changes
        self._verdicts: dict[tuple, dict[str, Any]] = {}

    def records(self) -> list[dict[str, Any]]:
        return stored_runs(self.logs_dir)

    def match(self, resolved: ResolvedStudy, records: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any] | None]]:
        return match_runs(resolved, records, keys=self._keys)

    def reference_of(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """(reference arm, its run with the same seed) when `record` is the run of an arm
        of a study other than its reference, the pairing the verdict compares; else None."""
        catalog = Experiments.load(self.experiments_path)
        records = None
        for name in catalog.studies:
            try:
                resolved = catalog.study(name)
            except Exception:  # a bad study is the Studies screen's to show
                continue
            mine = match_runs(resolved, [record], keys=self._keys)  # the arm x seeds `record` is a run of
            for arm, seeds in mine.items():
                for seed, own in seeds.items():
                    if arm == resolved.reference or own is None:
                        continue
                    records = records if records is not None else self.records()
                    reference = self.match(resolved, records)[resolved.reference][seed]
                    if reference is not None:
                        return resolved.reference, reference
        return None

    def verdict(self, state: StudyState, resolved: ResolvedStudy) -> dict[str, Any]:
        folders = {arm: {seed: Path(r["run_dir"]) for seed, r in seeds.items() if r} for arm, seeds in state.runs.items()}
        key = (state.name, resolved.reference, tuple((arm, s, str(p)) for arm, by in folders.items() for s, p in by.items()))
        if key not in self._verdicts:
            self._verdicts[key] = study_verdict(state.name, folders, resolved.reference)
            if resolved.continues:
                self._verdicts[key]["escape"] = escape_section(folders, resolved.reference)
        return self._verdicts[key]

    def poll(self) -> tuple[list[StudyState], str]:
        """Every study's state, and an error about the file as a whole ("" when none)."""
        try:
            catalog = Experiments.load(self.experiments_path)
        except Exception as exc:
            return [], f"cannot read {self.experiments_path}: {exc}"
        records = self.records()
        states = []
        for name in catalog.studies:
            state = StudyState(name)
            try:
                # arms whose specs name other runs: continuing converged runs, fusing an arm's runs
                resolved = with_prerequisites(catalog.study(name), self.logs_dir, launch=False, pending_ok=True)
                state.description, state.reference = resolved.description, resolved.reference
                state.arms, state.seeds = resolved.arms, list(resolved.seeds)
                if resolved.cells:
                    state.note = f"sweep of {len(resolved.cells)} cells: see `workbench study {name}`"
                    states.append(state)
                    continue
                # a fuse arm waiting for its source runs has no spec yet: no runs, so the study is not complete
                state.runs = {**{arm: dict.fromkeys(resolved.seeds) for arm in resolved.arms}, **self.match(resolved, records)}
                if state.complete:
                    state.verdict = self.verdict(state, resolved)
            except Exception as exc:  # one bad study must not hide the others
                state.error = str(exc)
            states.append(state)
        return states, ""


def study_command(name: str, experiments_path: Path, logs_dir: Path) -> list[str]:
    return [str(Path(sys.executable).parent / "workbench"), "study", name,
            "--experiments", str(experiments_path), "--logs-dir", str(logs_dir), "--json"]


# --- the screen -------------------------------------------------------------------------------
# The counts first and the arms last (clipped): at 120 columns every count shows.
LIST_COLUMNS = (("study", "study"), ("runs", "runs"), ("done", "done"), ("running", "running"),
                ("queued", "queued"), ("seeds", "seeds"), ("arms", "arms"))
ARMS_WIDTH = 40


def clip(text: str, width: int = ARMS_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def list_cells(state: StudyState) -> list[Any]:
    arms = clip(", ".join(state.arms))
    if state.error:
        return [state.name, Text("error", style="red"), "-", "-", "-", "-", "-"]
    if state.note:
        return [state.name, Text("sweep", style="dim"), "-", "-", "-", str(len(state.seeds)), arms]
    done = state.count("completed")
    return [
        state.name,
        f"{state.count()}/{state.total}",
        Text(f"{done}/{state.total}", style="green" if done == state.total else ""),
        str(state.count("running")),  # a queued run waits for a device slot: not running
        str(state.count("queued")),
        str(len(state.seeds)),
        arms,
    ]


class StudiesScreen(PollingScreen):
    POLL_SECONDS = 2.0
    HELP_EXTRA = [("↑ ↓", "Choose a study"), ("enter", "Scroll its detail (escape: back to the list)")]
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("l", "launch", "Launch study"),
        Binding("enter", "detail", "Detail", show=False),
    ]

    def __init__(self, experiments_path: Path, logs_dir: Path) -> None:
        super().__init__(id="studies-screen")
        self.experiments_path = Path(experiments_path)
        self.logs_dir = Path(logs_dir)
        self.matcher = StudyMatcher(self.experiments_path, self.logs_dir)
        self.states: dict[str, StudyState] = {}
        self.error = ""
        self.selected: str | None = None
        self._charted: int | None = None  # id() of the verdict on the chart

    def compose(self) -> ComposeResult:
        yield DataTable(id="studies-table", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="study-detail"):
            yield Static("", id="study-header")
            yield DataTable(id="study-runs", cursor_type="none", zebra_stripes=True)
            yield Static("", id="study-answer")
            yield DataTable(id="study-verdict", cursor_type="none")
            yield Static("", id="study-best")  # a study with ensemble arms: the best single model
            yield MetricChart("headline subset dist ratio (arm / reference) over steps", id="study-chart")
        yield KeysFooter(compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#studies-table", DataTable)
        for key, label in LIST_COLUMNS:  # arms: a fixed width (clipped), so the header never lags its rows
            table.add_column(label, key=key, width=ARMS_WIDTH if key == "arms" else None)
        runs = self.query_one("#study-runs", DataTable)
        for label in ("arm", "seed", "run", "status", "step"):
            runs.add_column(label, key=label)
        verdict = self.query_one("#study-verdict", DataTable)
        for label in ("scope", "side", "ratio", "95% CI", "p", "n"):
            verdict.add_column(label, key=label)
        self.show_detail()
        table.focus()
        self.start_polling()

    # polling ---------------------------------------------------------------------------------
    def read(self) -> tuple[list[StudyState], str]:
        return self.matcher.poll()

    def apply(self, result: tuple[list[StudyState], str] | None, error: str) -> None:
        states, error = result or (None, error)
        if states is not None:
            self.states = {s.name: s for s in states}
        self.error = error
        self.show_list()
        self.show_detail()

    # drawing ---------------------------------------------------------------------------------
    def show_list(self) -> None:
        table = self.query_one("#studies-table", DataTable)
        rows = {name: list_cells(state) for name, state in self.states.items()}
        show_rows(table, rows, [key for key, _ in LIST_COLUMNS], self.selected)
        if self.selected not in self.states:
            self.selected = self.highlighted()

    def highlighted(self) -> str | None:
        return cursor_key(self.query_one("#studies-table", DataTable))

    def show_detail(self) -> None:
        header = self.query_one("#study-header", Static)
        runs = self.query_one("#study-runs", DataTable)
        answer = self.query_one("#study-answer", Static)
        verdict_table = self.query_one("#study-verdict", DataTable)
        chart = self.query_one("#study-chart", MetricChart)
        state = self.states.get(self.selected or "")
        runs.clear()
        verdict_table.clear()
        self.query_one("#study-best", Static).display = False  # shown by show_verdict for a study with ensembles
        if state is None:
            header.update(Text(self.error or f"no studies in {self.experiments_path}", style="red" if self.error else ""))
            for widget in (runs, answer, verdict_table, chart):
                widget.display = False
            return
        text = Text.assemble((state.name, "bold"), "  ")
        if state.error or state.note:
            header.update(text.append(state.error or state.note, style="red" if state.error else ""))
            for widget in (runs, answer, verdict_table, chart):
                widget.display = False
            return
        done, total = state.count("completed"), state.total
        text.append(f"{done}/{total} runs completed; reference {state.reference}; seeds {', '.join(map(str, state.seeds))}")
        if state.description:
            text.append("\n" + state.description, style="dim")
        header.update(text)
        runs.display = True
        for arm, seeds in state.runs.items():
            for seed, record in seeds.items():
                if record is None:
                    runs.add_row(arm, str(seed), "-", Text("missing", style="dim"), "-")
                    continue
                status = record.get("status") or "?"
                runs.add_row(arm, str(seed), record["run_id"], Text(status, style=STATUS_STYLE.get(status, "")),
                             progress_bar(record.get("step"), record.get("steps")))
        verdict = state.verdict
        if verdict is None:
            missing = state.total - state.count()
            why = f"{missing} missing: l launches them" if missing else "waiting for every run to complete"
            answer.update(Text(f"no verdict yet ({why})", style="dim"))
            answer.display = True
            verdict_table.display = chart.display = False
            return
        self.show_verdict(verdict)

    def show_verdict(self, verdict: dict[str, Any]) -> None:
        answer = self.query_one("#study-answer", Static)
        table = self.query_one("#study-verdict", DataTable)
        chart = self.query_one("#study-chart", MetricChart)
        comparisons = verdict["comparisons"]
        escape = [f"{e['arm']}: {e['sentence']}; left the basin in {e['escaped']} of {e['n']}" for e in verdict.get("escape", [])]
        best = verdict.get("best_single")
        answer.update("\n".join([c["answer"] for c in comparisons] + escape + ([best["sentence"]] if best else [])))
        best_table = self.query_one("#study-best", Static)
        best_table.display = bool(best)
        best_table.update(best_single_table(best) if best else "")
        answer.display = table.display = chart.display = True
        for comparison in comparisons:
            # the headline (partitioned layers) first, then all layers, kinds, layers,
            # normalised and loss-matched ratios: geometric means over seeds (dist unless named)
            prefix = f"{comparison['arm']}: " if len(comparisons) > 1 else ""
            for _, scope, side, figures in scope_rows(comparison):
                table.add_row(prefix + scope, side, *s_cells(figures))
        for entry in verdict.get("escape", []):  # continuing converged runs: arm / control per fraction
            table.add_row(f"{entry['arm']}: best train loss", "all", *s_cells(entry["best_train_loss"]))
            table.add_row(f"{entry['arm']}: distance from start", "all", *s_cells(entry["distance"]))
        if self._charted != id(verdict):
            self._charted = id(verdict)
            headline = comparisons[0].get("headline") or {}
            over = (headline.get("over_steps") or {}).get("dist") or {}
            lines = {}
            for label in ("ratio", "lo", "hi"):
                series = Series()
                for step, value in zip(over.get("step", []), over.get(label, [])):
                    series.add(step, value)
                lines[label] = series
            if len(lines["ratio"]):
                lines["1"] = Series([lines["ratio"].steps[0], lines["ratio"].steps[-1]], [1.0, 1.0])
            chart.show(lines)

    # events and actions -------------------------------------------------------------------
    @on(DataTable.RowHighlighted, "#studies-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        name = event.row_key.value
        if name != self.selected:
            self.selected = name
            self._charted = None
            self.show_detail()

    @on(DataTable.RowSelected, "#studies-table")
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.query_one("#study-detail", VerticalScroll).focus()

    def action_detail(self) -> None:
        self.query_one("#study-detail", VerticalScroll).focus()

    def action_back(self) -> None:
        table = self.query_one("#studies-table", DataTable)
        if not table.has_focus:
            table.focus()
            return
        self.app.pop_screen()

    def action_launch(self) -> None:
        """`workbench study NAME` in its own session (it imports torch; this process never
        does): it re-uses what exists and submits the missing runs, which show up on the
        next polls; quitting the TUI leaves it going."""
        name = self.selected or self.highlighted()
        if not name:
            self.notify("no study to launch", severity="warning")
            return
        failed = start_detached(study_command(name, self.experiments_path, self.logs_dir), subprocess.Popen)
        if failed:
            self.notify(f"cannot start workbench study: {failed}", severity="error")
            return
        self.notify(f"study {name}: launched; its missing runs appear as they are submitted")
        self.poll()
