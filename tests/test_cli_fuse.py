"""`workbench fuse`: trained runs in, a new background run out; bad input refused before anything is queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.events import iter_events
from workbench.runner import wait_until_done

PATIENCE = 600  # seconds: a guard against a hung run, not a speed goal (a loaded 2-core machine is slow)


@pytest.fixture()
def trained(wb):
    """`trained(seed, *set)` -> the id of a completed headless run of the tiny baseline."""

    def train(seed: int, *overrides: str) -> str:
        sets = [arg for item in overrides for arg in ("--set", item)]
        return json.loads(wb("run", "baseline", "--headless", "--json", "--seed", seed, *sets).stdout)["run_id"]

    return train


def test_fuse_mutant_runs_in_the_background_and_scores_the_average(wb, trained):
    logs_dir = wb.logs
    members = [trained(0), trained(1)]
    average = wb("fuse", *members, "--mode", "average", "--device", "cpu", "--json")
    mutant = wb("fuse", *members, "--mode", "mutant", "--steps", "0", "--device", "cpu", "--json")
    scores = []
    for result in (average, mutant):
        (run_id,) = json.loads(result.stdout)["run_ids"]
        done = wait_until_done(logs_dir / run_id, PATIENCE)
        assert done and done["status"] == "completed", (logs_dir / run_id / "worker.log").read_text()
        spec = json.loads((logs_dir / run_id / "spec.json").read_text())
        assert spec["fusion"]["runs"] == members
        scores.append([e["eval_acc"] for e in iter_events(logs_dir / run_id / "events.jsonl") if e["type"] == "eval"])
    assert len(scores[0]) == 1 and scores[0] == scores[1]  # the mutant at step 0 is the ensemble


def test_fuse_refuses_bad_input_without_queueing(cli, trained, wb):
    logs_dir = wb.logs
    one = trained(0)
    wider = trained(1, "model.width=8")
    grouped = trained(2, "model.groups=2", "partition.strategy=none")
    cases = [
        ((one,), "at least two models"),
        ((one, "zzzzzzzz"), "'zzzzzzzz'"),
        ((one, wider), wider),
        ((one, grouped), f"run {grouped} is a grouped or fused run"),
        ((one, one, "--mode", "blend"), "'blend'"),
        ((one, one, "--checkpoint", "step_000005"), "no checkpoint 'step_000005'"),
    ]
    before = sorted(p.name for p in logs_dir.iterdir())
    for args, message in cases:
        result = cli("fuse", *args, "--logs-dir", logs_dir)
        assert result.exit_code == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in logs_dir.iterdir()) == before


def test_one_ensemble_run_is_enough_to_fuse(wb, trained):
    """An ensemble run brings its K members: `workbench fuse ENSEMBLE_RUN` needs nothing else."""
    ensemble = trained(0, "ensemble.members=2", "partition.strategy=none", "ensemble.implementation=grouped")
    result = wb("fuse", ensemble, "--mode", "average", "--device", "cpu", "--json")
    (run_id,) = json.loads(result.stdout)["run_ids"]
    done = wait_until_done(wb.logs / run_id, PATIENCE)
    assert done and done["status"] == "completed", (wb.logs / run_id / "worker.log").read_text()
    start = next(e for e in iter_events(wb.logs / run_id / "events.jsonl") if e["type"] == "start")
    assert start["members"] == 2 and start["fused_runs"] == [ensemble]
