"""Marking runs in the Runs screen and comparing them: pilot tests at 80x24 over hand-made
run folders (no worker, no torch)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from textual.widgets import DataTable

from engine.provenance import current_engine_hash
from engine.run_folder import atomic_write_json
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.compare import CompareChart, CompareScreen, spec_differences
from workbench.tui.screens.runs import MARK, RunsScreen

from tui_support import SIZE, settle, sync

SPEC = {"seed": 0, "device": "cpu", "freeze": True, "train": {"steps": 100},
        "model": {"name": "lenet"}, "data": {"name": "mnist5k"},
        "partition": {"strategy": "first_kernels", "fraction": 0.5}}


def movement(step: int, scale: float = 0.01) -> dict:
    def figures(x: float) -> dict:
        return {"dist": x, "rel": x / 10, "speed": x / max(step, 1), "path": x * 1.5, "cos": 1 - x, "layers": {}}
    return {"type": "movement", "step": step, "subsets": {"subset": figures(scale * step), "fixed": figures(scale * step / 2)}}


def make_run(logs: Path, run_id: str, experiment: str, created: float, **spec_changes) -> Path:
    """A completed run whose spec is SPEC with `spec_changes` applied (top-level keys)."""
    folder = logs / run_id
    folder.mkdir(parents=True)
    atomic_write_json(folder / "spec.json", {**SPEC, **spec_changes})
    atomic_write_json(folder / "launch.json", {"pid": 1, "host": socket.gethostname(), "submitted": created,
                                               "experiment": experiment})
    events = [{"type": "queued", "time": created},
              {"type": "start", "provenance": {"engine_hash": current_engine_hash()}, "step": 0, "run_id": run_id, "experiment": experiment, "digest": "d", "device": "cpu",
               "pid": 1, "host": socket.gethostname(), "time": created, "subset_sizes": {"subset": 10, "fixed": 10}},
              movement(0), movement(50), movement(100),
              {"type": "eval", "step": 50, "train_loss": 2.0, "eval_loss": 1.9, "eval_acc": 0.3},
              {"type": "eval", "step": 100, "train_loss": 1.0, "eval_loss": 0.9, "eval_acc": 0.8},
              {"type": "end", "step": 100, "status": "completed"}]
    with open(folder / "events.jsonl", "w") as file:
        file.writelines(json.dumps(e) + "\n" for e in events)
    atomic_write_json(folder / "summary.json", {"steps": 100, "final": {"eval_acc": 0.8},
                                                "movement": movement(100)["subsets"]})
    (folder / "worker.log").write_text("worker says hello\n")
    Store(logs).put(record_from_folder(folder))
    return folder


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    now = time.time()
    make_run(logs, "base0001", "baseline", now - 300, freeze=False, seed=0)
    make_run(logs, "half0001", "half-fixed", now - 200, freeze=True, seed=1)
    make_run(logs, "half0002", "half-fixed", now - 100, freeze=True, seed=2)
    return logs


def id_cells(app: WorkbenchApp) -> dict[str, str]:
    table = app.screen.query_one("#runs-table", DataTable)
    return {row.key.value: str(table.get_cell(row.key, "run")) for row in table.ordered_rows}


def test_spec_differences_lists_only_differing_dotted_keys():
    a = {"seed": 0, "train": {"steps": 10, "lr": 0.1}, "tags": [1]}
    b = {"seed": 1, "train": {"steps": 10, "lr": 0.2}, "tags": [1], "extra": "x"}
    rows = dict(spec_differences([a, b]))
    assert sorted(rows) == ["extra", "seed", "train.lr"]
    assert rows["train.lr"] == [0.1, 0.2]


@sync
async def test_mark_two_runs_and_compare(logs: Path):
    app = WorkbenchApp(logs, logs.parent / "experiments.json")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(id_cells(app)) == 3)
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await pilot.press("space", "down", "space")  # half0002 (newest) and half0001
        cells = id_cells(app)
        assert cells["half0002"] == f"{MARK} half0002" and cells["half0001"] == f"{MARK} half0001"
        assert cells["base0001"] == "base0001"
        await pilot.press("down", "space", "space")  # marked, then unmarked again
        assert id_cells(app)["base0001"] == "base0001"
        await pilot.press("space")
        screen.poll()  # a refresh keeps the marks
        await pilot.pause(0.2)
        assert all(c.startswith(MARK) for c in id_cells(app).values())
        await pilot.press("space")  # unmark base0001: compare the two half-fixed runs... and then all three
        await pilot.press("m")
        assert isinstance(app.screen, CompareScreen)
        compare = app.screen
        assert compare.run_ids == ["half0002", "half0001"]
        summary = compare.query_one("#cmp-summary", DataTable)  # the first tab: the numbers
        await settle(pilot, lambda: summary.row_count == 2 and str(summary.get_cell("half0001", "dist")) != "-")
        rows = {key: [str(summary.get_cell(key, c)) for c in ("name", "step", "acc", "at", "dist", "speed")]
                for key in compare.run_ids}
        assert rows == {"half0002": ["half-fixed s2", "100", "80.00%", "first", "", ""],
                        "half0001": ["half-fixed s1", "100", "80.00%", "100", "1.00x", "1.00x"]}
        assert "half-fixed s2" in str(compare.query_one("#cmp-legend").render())
        dist = compare.query_one("#cmp-subset-dist", CompareChart)
        await settle(pilot, lambda: dist.labels == ["half0002", "half0001"])
        assert dist.points == 6 and dist.names["half0001"] == "half-fixed s1"  # the legend's name of the line
        for chart in compare.query(CompareChart):
            assert chart.labels == ["half0002", "half0001"], chart.id
        assert len(set(compare.plot_colours.values())) == 2  # one colour per run
        # the two half-fixed runs differ only in seed
        table = compare.query_one("#cmp-spec", DataTable)
        await settle(pilot, lambda: table.row_count > 0)
        assert [row.key.value for row in table.ordered_rows] == ["seed"]
        assert [str(table.get_cell("seed", run_id)) for run_id in compare.run_ids] == ["2", "1"]
        await pilot.press("4")
        assert compare.query_one("#cmp-tabs").active == "cmp-tab-spec"
        await pilot.press("escape")
        assert app.screen is screen
        await pilot.press("space", "m")  # base0001 again: three runs, seed and freeze differ
        compare = app.screen
        assert isinstance(compare, CompareScreen) and len(compare.run_ids) == 3
        table = compare.query_one("#cmp-spec", DataTable)
        await settle(pilot, lambda: table.row_count > 0)
        assert sorted(row.key.value for row in table.ordered_rows) == ["freeze", "seed"]
        assert str(table.get_cell("freeze", "base0001")) == "false"
        chart = compare.query_one("#cmp-fixed-dist", CompareChart)
        await settle(pilot, lambda: len(chart.labels) == 3)
        assert set(compare.query_one("#cmp-eval-acc", CompareChart).labels) == {"half0002", "half0001", "base0001"}
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


@sync
async def test_compare_needs_two_marks(logs: Path):
    app = WorkbenchApp(logs, logs.parent / "experiments.json")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: len(id_cells(app)) == 3)
        await pilot.press("m")
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("space", "m")
        await pilot.pause()
        assert isinstance(app.screen, RunsScreen)
        assert any("mark two or more runs with space" in str(n.message) for n in app._notifications)
        shown = {key: active.binding.description for key, active in app.screen.active_bindings.items()
                 if active.binding.show}
        assert shown["m"] == "Compare"  # in the footer
        assert shown["space"] == "Mark" and ("␣", "Mark") in app.screen_keys()  # in the footer, `?` and the palette
