"""Sweeps: every cell of a study's `sweep` is a sub-study with its own verdict, end to end
through the CLI on tiny runs; the grid, the heatmap report and the refusals of bad sweeps."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from rich.console import Console

from conftest import TINY_EXPERIMENTS
from engine.run_folder import read_json
from workbench.sweep import cell_text, grid_table
from workbench.tui.screens.studies import StudyMatcher, list_cells

LRS, FRACTIONS = [0.02, 0.1], [0.25, 0.75]


def sweep_file(folder: Path, sweep: dict) -> Path:
    raw = copy.deepcopy(TINY_EXPERIMENTS)
    raw["studies"]["grid"] = {"arms": ["baseline", "half-fixed"], "seeds": 1, "set": {"train.steps": 20}, "sweep": sweep}
    path = folder / "experiments.json"
    path.write_text(json.dumps(raw))
    return path


def test_a_2x2_sweep_end_to_end(cli, tmp_path):
    experiments = sweep_file(tmp_path, {"optimizer.lr": LRS, "partition.fraction": FRACTIONS})
    logs = tmp_path / "logs"
    args = ("grid", "--experiments", experiments, "--logs-dir", logs)
    result = cli("study", *args, "--json")
    assert result.exit_code == 0, result.stderr
    verdict = json.loads(result.stdout)
    cells = verdict["cells"]
    assert [c["set"] for c in cells] == [{"optimizer.lr": lr, "partition.fraction": f} for lr in LRS for f in FRACTIONS]
    assert verdict["sweep"] == {"optimizer.lr": LRS, "partition.fraction": FRACTIONS}
    run_ids = set()
    for cell in cells:
        runs = cell["verdict"]["runs"]
        assert set(runs) == {"baseline", "half-fixed"}
        for arm, by_seed in runs.items():
            spec = read_json(logs / by_seed["0"] / "spec.json")
            # every arm of the cell ran with the cell's values
            assert spec["optimizer"]["lr"] == cell["set"]["optimizer.lr"]
            assert spec["partition"]["fraction"] == cell["set"]["partition.fraction"]
            assert spec["freeze"] == (arm == "half-fixed")
            run_ids.add(by_seed["0"])
        assert cell["verdict"]["subsets"]["subset"]["ratio"] > 0  # a real verdict per cell
    assert len(run_ids) == 8  # 4 cells x 2 arms, no run shared by two cells

    # Again, as a table: every run re-used, the 2 x 2 grid of the cells' headline ratios.
    table = cli("study", *args)
    assert table.exit_code == 0, table.stderr
    assert "re-using 8 runs, submitted 0" in table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    for lr in LRS:
        row = next(r for r in rows if r and r[0] == str(lr))
        expected = [cell_text(c["verdict"]) for c in cells if c["set"]["optimizer.lr"] == lr]
        assert row[1:] == expected

    report = cli("report", *args)
    assert report.exit_code == 0, report.stderr
    page = Path(report.stdout.strip())
    assert "![heatmap](heatmap.png)" in page.read_text()
    assert (page.parent / "heatmap.png").stat().st_size > 0
    for index in range(4):
        assert (page.parent / "cells" / f"{index:02d}" / "README.md").exists()


def synthetic(ratio, ci) -> dict:
    return {"subsets": {"subset": {"ratio": ratio, "ci": ci, "n": 3}}, "answer": "-"}


def test_the_grid_marks_cells_whose_interval_excludes_one():
    cells = [
        {"set": {"a": 1, "b": "x"}, "verdict": synthetic(1.5, [1.2, 1.8])},
        {"set": {"a": 1, "b": "y"}, "verdict": synthetic(1.1, [0.9, 1.3])},
        {"set": {"a": 2, "b": "x"}, "verdict": synthetic(0.5, [0.3, 0.7])},
        {"set": {"a": 2, "b": "y"}, "verdict": synthetic(None, None)},
    ]
    sweep = {"study": "s", "sweep": {"a": [1, 2], "b": ["x", "y"]}, "reference": "baseline", "cells": cells}
    console = Console(width=120, record=True)
    console.print(grid_table(sweep))
    rows = [line.split() for line in console.export_text().splitlines()]
    assert ["1", "1.50*", "1.10"] in rows
    assert ["2", "0.50*", "-"] in rows
    # the headline of the other branch's verdicts (partitioned layers) wins over `subsets`
    assert cell_text({"headline": {"scope": "partitioned", "subset": {"ratio": 2.0, "ci": [1.5, 2.5]}},
                      **synthetic(1.0, None)}) == "2.00*"


@pytest.mark.parametrize(
    "sweep, message",
    [
        ({"optimizer.lrr": [0.1]}, "'optimizer.lrr': unknown key"),
        ({"optimizer.lr": []}, "sweep.optimizer.lr: an empty list"),
        ({"optimizer.lr": [0.01 * i for i in range(1, 10)], "partition.fraction": [0.1 * i for i in range(1, 9)]},
         "72 cells"),
        ({"optimizer.lr": [0.1, -1]}, "optimizer.lr"),
    ],
)
def test_bad_sweeps_are_refused_in_one_sentence(cli, tmp_path, sweep, message):
    experiments = sweep_file(tmp_path, sweep)
    result = cli("study", "grid", "--experiments", experiments, "--logs-dir", tmp_path / "logs")
    assert result.exit_code == 2
    assert message in result.stderr and result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()  # nothing written


def test_the_studies_screen_lists_a_sweep_without_matching_it(tmp_path):
    experiments = sweep_file(tmp_path, {"optimizer.lr": LRS})
    states, error = StudyMatcher(experiments, tmp_path / "logs").poll()
    assert error == ""
    grid = next(s for s in states if s.name == "grid")
    assert grid.error == "" and "sweep of 2 cells" in grid.note and "workbench study grid" in grid.note
    cells = [str(c) for c in list_cells(grid)]  # study, runs, done, running, queued, seeds, arms
    assert cells[:2] == ["grid", "sweep"] and cells[-2:] == ["1", "baseline, half-fixed"]
