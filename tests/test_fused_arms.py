"""A study arm that fuses another arm's runs (`fuse`), and the best-single-model section of the
verdict, end to end through the CLI on tiny ensembles (2 members, lenet width 2, 8x8 digits,
20 steps, 2 seeds): the ensemble runs first, each seed's run fused, every figure read back
independently from the run folders."""

from __future__ import annotations

import copy
import json
import statistics
from pathlib import Path

import pytest

from conftest import TINY_EXPERIMENTS
from engine.run_folder import read_json
from workbench.tui.screens.studies import StudyMatcher

MUTANT = {"name": "mutant", "fuse": {"arm": "ens", "mode": "mutant"}}


def _experiments(tmp_path: Path, arms: list) -> Path:
    raw = copy.deepcopy(TINY_EXPERIMENTS)
    raw["experiments"]["ens"] = {
        "base": "baseline", "data": {"name": "digits", "batch_size": 32}, "model": {"name": "lenet", "width": 2},
        "partition": {"strategy": "none"}, "ensemble": {"members": 2, "implementation": "sequential"},
    }
    raw["experiments"]["ens-easgd"] = {"base": "ens", "ensemble": {"coupling": {"mode": "easgd", "rho": 0.1, "period": 1}}}
    raw["studies"]["trio"] = {"arms": arms, "reference": "ens", "seeds": 2}
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps(raw))
    return path


def test_a_fuse_arm_fuses_each_seeds_ensemble_run_and_the_verdict_names_the_best_single_model(cli, tmp_path):
    experiments = _experiments(tmp_path, ["ens", "ens-easgd", MUTANT])
    logs = tmp_path / "logs"
    args = ("trio", "--experiments", experiments, "--logs-dir", logs)

    result = cli("study", *args, "--json")
    assert result.exit_code == 0, result.stderr
    verdict = json.loads(result.stdout)
    assert verdict["arms"] == ["ens", "ens-easgd", "mutant"]
    spec = {arm: {seed: read_json(logs / run / "spec.json") for seed, run in by_seed.items()}
            for arm, by_seed in verdict["runs"].items()}
    summary = {arm: {seed: read_json(logs / run / "summary.json") for seed, run in by_seed.items()}
               for arm, by_seed in verdict["runs"].items()}
    for seed in ("0", "1"):  # seed s's mutant fuses seed s's independent ensemble, as `workbench fuse RUN` would
        fusion = spec["mutant"][seed]["fusion"]
        assert fusion["mode"] == "mutant" and fusion["runs"] == [verdict["runs"]["ens"][seed]]
        assert spec["mutant"][seed]["seed"] == int(seed) and summary["mutant"][seed]["status"] == "completed"

    section = verdict["best_single"]
    models = {m["model"]: m for m in section["models"]}
    expected = {  # model -> (per-seed accuracy read from each run's summary, parameters)
        "ens (whole ensemble of 2)": ([summary["ens"][s]["final"]["eval_acc"] for s in "01"], summary["ens"]["0"]["params"]),
        "ens best member": ([max(summary["ens"][s]["final"]["member_acc"]) for s in "01"], summary["ens"]["0"]["params"] // 2),
        "ens-easgd best member": ([max(summary["ens-easgd"][s]["final"]["member_acc"]) for s in "01"],
                                  summary["ens-easgd"]["0"]["params"] // 2),
        "ens-easgd center": ([summary["ens-easgd"][s]["final"]["center_acc"] for s in "01"],
                             summary["ens-easgd"]["0"]["params"] // 2),
        "mutant (mutant fusion of ens)": ([summary["mutant"][s]["final"]["eval_acc"] for s in "01"],
                                          summary["mutant"]["0"]["params"]),
    }
    for label, (accuracies, params) in expected.items():
        assert models[label]["eval_acc"] == pytest.approx(statistics.fmean(accuracies))
        assert models[label]["params"] == params and models[label]["n"] == 2
        assert [entry["eval_acc"][label] for entry in section["per_seed"]] == pytest.approx(accuracies)
    assert set(models) == {*expected, "ens-easgd (whole ensemble of 2)"}
    singles = [label for label in expected if "whole" not in label]
    best = max(singles, key=lambda label: statistics.fmean(expected[label][0]))
    assert section["best"] == best and section["sentence"].startswith(f"best single model: {best}")
    for label in singles:  # best minus each other single model, paired by seed
        if label != best:
            gaps = [b - m for b, m in zip(expected[best][0], expected[label][0])]
            assert models[label]["best_minus_this"]["difference"] == pytest.approx(statistics.fmean(gaps))
    assert "picked on the held-out split it is scored on, so its accuracy is optimistic" in section["sentence"]

    again = cli("study", *args)  # everything re-used: the fused specs name the same source runs
    assert again.exit_code == 0, again.stderr
    assert "re-using 6 runs, submitted 0" in again.stderr and "best single model" in again.stdout

    report = cli("report", *args)
    assert report.exit_code == 0, report.stderr
    page = Path(report.stdout.strip()).read_text()
    assert "## Best single model" in page and section["sentence"] in page

    states, error = StudyMatcher(experiments, logs).poll()  # the Studies screen: the same runs and section
    (state,) = [s for s in states if s.name == "trio"]
    assert not error and not state.error and state.complete and list(state.runs) == ["ens", "ens-easgd", "mutant"]
    assert state.verdict["best_single"]["sentence"] == section["sentence"]


@pytest.mark.parametrize(
    "arms, says",
    [
        (["ens", {"name": "m", "fuse": {"arm": "nope"}}], "'m' fuses arm 'nope', which is not an experiment arm of this study; one of: ens"),
        (["ens", "baseline", {"name": "m", "fuse": {"arm": "baseline"}}], "'m' fuses arm 'baseline', which is a single model"),
        (["ens", {"name": "m", "experiment": "ens", "fuse": {"arm": "ens"}}], "exactly one of them"),
        (["ens", {"name": "m", "fuse": {"arm": "ens", "mode": "blend"}}], "blend"),
        (["ens", {"name": "m", "fuse": {"arm": "ens", "mode": "none"}}], "fuse.mode 'none' fuses nothing"),
        (["ens", {"name": "m", "fuse": {"arm": "ens", "checkpoint": "center_final"}}], "which has no EASGD center"),
    ],
)
def test_a_bad_fuse_arm_is_one_sentence_and_nothing_is_written(cli, tmp_path, arms, says):
    experiments = _experiments(tmp_path, arms)
    logs = tmp_path / "logs"
    result = cli("study", "trio", "--experiments", experiments, "--logs-dir", logs)
    assert result.exit_code == 2, result.stdout + result.stderr
    assert says in " ".join(result.stderr.split()) and "Traceback" not in result.stderr
    assert not logs.exists()


def test_the_studies_screen_shows_a_fuse_arm_as_missing_until_its_source_runs_exist(tmp_path):
    experiments = _experiments(tmp_path, ["ens", MUTANT])
    states, error = StudyMatcher(experiments, tmp_path / "logs").poll()
    (state,) = [s for s in states if s.name == "trio"]
    assert not error and not state.error and not state.complete
    assert state.runs["mutant"] == {0: None, 1: None} and state.total == 4
