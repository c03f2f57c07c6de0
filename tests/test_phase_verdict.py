"""The verdict per phase of a schedule study (workbench/phase_verdict.py) over real tiny runs:
frozen arm vs the same schedule with everything training, paired by seed."""

from __future__ import annotations

import math

import pytest

from rich.console import Console

from engine.run_folder import RunFolder
from engine.train import prepare, train
from factories import tiny_spec
from workbench.scoped_verdict import scope_rows
from workbench.tables import run_detail
from workbench.report import markdown
from workbench.verdict import fmt_ci, fmt_ratio, read_run, study_verdict


def test_each_phase_gets_a_ratio_of_the_dist_its_trained_coordinates_moved(tmp_path):
    runs: dict[str, dict[int, object]] = {"tracked": {}, "frozen": {}}
    for seed in (0, 1):
        for arm, freeze in (("tracked", False), ("frozen", True)):
            folder = RunFolder.create(tmp_path)
            spec = tiny_spec(seed=seed, freeze=freeze, schedule__every=4, schedule__mode="alternate")
            train(prepare(spec), folder, experiment=arm)
            runs[arm][seed] = folder.path
    verdict = study_verdict("alternate", runs, "tracked")
    phases = verdict["comparisons"][0]["phases"]
    assert [(p["phase"], p["start_step"], p["step"]) for p in phases] == [(0, 0, 4), (1, 4, 8), (2, 8, 12)]
    for entry in phases:
        expected = []
        for seed in (0, 1):
            arm, ref = (RunFolder(runs[side][seed]).summary()["phases"][entry["phase"]] for side in ("frozen", "tracked"))
            expected.append(arm["subsets"]["subset"]["dist"] / ref["subsets"]["subset"]["dist"])
        assert [p["ratio"] for p in entry["per_seed"]] == pytest.approx(expected)
        assert entry["ratio"] == pytest.approx(math.sqrt(expected[0] * expected[1])) and entry["n"] == 2
    assert verdict["phases"] == phases  # the first comparison's, at the top level too
    rows = [row for row in scope_rows(verdict["comparisons"][0]) if row[0] == "phase"]
    assert [row[1] for row in rows] == ["phase 0 (steps 0-4)", "phase 1 (steps 4-8)", "phase 2 (steps 8-12)"]

    # the report's markdown has the same table: a row per phase with its ratio, CI, p and n
    loaded = {arm: {seed: read_run(path) for seed, path in by_seed.items()} for arm, by_seed in runs.items()}
    page = markdown(verdict, loaded, []).splitlines()
    title = next(i for i, line in enumerate(page) if line.startswith("### Per phase"))
    assert page[title + 2].startswith("| phase | side | ratio | 95% CI |")
    for entry, line in zip(phases, page[title + 4: title + 4 + len(phases)]):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[:4] == [f"phase {entry['phase']} (steps {entry['start_step']}-{entry['step']})", "subset",
                             fmt_ratio(entry["ratio"]), fmt_ci(entry["ci"])]
        assert cells[-1] == "2"

    # `workbench show` draws each run's phases: the steps and the dist of what each phase trained
    folder = RunFolder(runs["frozen"][0])
    console = Console(width=160, record=True)
    console.print(run_detail(folder.summary(), folder))
    shown = console.export_text()
    assert "movement per phase" in shown
    for record in folder.summary()["phases"]:
        start, end = record["start_step"], record["step"]
        row = next(line for line in shown.splitlines() if f" {start}-{end} " in line)
        assert f"{record['subsets']['subset']['dist']:.4g}" in row and row.split()[1] == str(record["phase"])
