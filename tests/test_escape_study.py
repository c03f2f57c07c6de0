"""A study that `continues` converged runs, end to end through the CLI on tiny runs: the
source run per seed first, every arm started from it, the escape sentence in `study --json`
and in the report."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from conftest import TINY_EXPERIMENTS
from engine.run_folder import read_json
from workbench.tui.screens.studies import StudyMatcher


def test_an_escape_study_continues_each_seeds_converged_run(cli, tmp_path):
    raw = copy.deepcopy(TINY_EXPERIMENTS)
    raw["studies"]["escape"] = {
        "continues": "baseline",
        "arms": [{"name": "control", "experiment": "baseline"},
                 {"name": "frozen-0.75", "experiment": "half-fixed", "set": {"partition.fraction": 0.75}}],
        "reference": "control",
        "seeds": 1,
        "set": {"train.steps": 6, "train.eval_every": 3, "partition.strategy": "random_kernels", "partition.seed": "run"},
    }
    experiments = tmp_path / "experiments.json"
    experiments.write_text(json.dumps(raw))
    logs = tmp_path / "logs"
    args = ("escape", "--experiments", experiments, "--logs-dir", logs)

    result = cli("study", *args, "--json")
    assert result.exit_code == 0, result.stderr
    verdict = json.loads(result.stdout)
    arm_runs = {arm: by_seed["0"] for arm, by_seed in verdict["runs"].items()}
    sources = {read_json(logs / run / "spec.json")["init"]["run"] for run in arm_runs.values()}
    (source,) = sources  # both arms continue the same run: seed 0 of `baseline`, 20 steps
    source_spec = read_json(logs / source / "spec.json")
    assert source_spec["train"]["steps"] == 20 and source_spec["seed"] == 0 and not source_spec["freeze"]
    (entry,) = verdict["escape"]
    assert entry["arm"] == "frozen-0.75" and entry["frozen"] == 0.75 and entry["n"] == 1
    assert entry["sentence"].startswith("continuing with 75% frozen reached a train loss lower than continuing with "
                                        f"everything trained in {entry['lower_in']} of 1 seeds")
    assert len(entry["interpolation"]) == 21 and entry["best_train_loss"]["per_seed"][0]["ratio"] > 0

    again = cli("study", *args)
    assert again.exit_code == 0, again.stderr
    words = " ".join(again.stdout.split())  # rich wraps the lines
    assert "re-using 2 runs, submitted 0" in again.stderr and entry["sentence"] in words

    report = cli("report", *args)
    assert report.exit_code == 0, report.stderr
    page = Path(report.stdout.strip())
    assert entry["sentence"] in page.read_text() and (page.parent / "interpolation.png").stat().st_size > 0

    # the Studies screen matches the continued runs too, and carries the same escape figures
    states, error = StudyMatcher(experiments, logs).poll()
    (state,) = [s for s in states if s.name == "escape"]
    assert not error and not state.error and state.complete
    assert [e["sentence"] for e in state.verdict["escape"]] == [entry["sentence"]]
