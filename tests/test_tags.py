"""Tags: labels on runs, given at submit/study, changed with `workbench tag`, listed with
`runs --tag`, kept in the run folder (so a rebuilt index keeps them), never in the spec."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from rich.console import Console

from workbench.runner import wait_until_done
from workbench.store import STORE_FILE
from workbench.tables import runs_view

from cli_support import assert_clean_exit


def _runs(cli, logs_dir: Path, *args) -> list[dict]:
    result = cli("runs", "--json", "--logs-dir", logs_dir, *args)
    assert_clean_exit(result, 0)
    return json.loads(result.stdout)


def _wait_done(logs_dir: Path, run_ids: list[str]) -> None:
    for run_id in run_ids:  # tiny runs: let them end so that no worker outlives the test
        assert wait_until_done(logs_dir / run_id, timeout=300) is not None, f"{run_id} never ended"


def test_tags_round_trip_through_the_cli_and_survive_an_index_rebuild(cli, wb, experiments_file, logs_dir):
    # submit and fuse as real processes: their workers outlive the command (and its folder)
    result = wb("submit", "baseline", "--tag", "lr-sweep", "--tag", "paper:fig2", "--tag", "lr-sweep",
                "--experiments", experiments_file, "--logs-dir", logs_dir, "--json")
    [tagged] = json.loads(result.stdout)["run_ids"]
    result = wb("submit", "baseline", "--seed", "1", "--experiments", experiments_file, "--logs-dir", logs_dir, "--json")
    [plain] = json.loads(result.stdout)["run_ids"]
    try:
        by_id = {r["run_id"]: r for r in _runs(cli, logs_dir)}
        assert by_id[tagged]["tags"] == ["lr-sweep", "paper:fig2"] and by_id[plain]["tags"] == []
        assert by_id[tagged]["host"] == by_id[plain]["host"] == socket.gethostname()  # every run says where it is
        assert json.loads((logs_dir / tagged / "tags.json").read_text()) == {"tags": ["lr-sweep", "paper:fig2"]}
        assert "tags" not in json.loads((logs_dir / tagged / "spec.json").read_text())  # metadata, not the experiment

        assert [r["run_id"] for r in _runs(cli, logs_dir, "--tag", "lr-sweep")] == [tagged]
        assert [r["run_id"] for r in _runs(cli, logs_dir, "--tag", "LR-SWEEP", "--tag", "paper:fig2")] == [tagged]
        assert _runs(cli, logs_dir, "--tag", "nope") == []

        result = cli("tag", plain[:5], "control", "--logs-dir", logs_dir)
        assert_clean_exit(result, 0)
        assert result.stdout.strip() == f"{plain}: tags control"
        result = cli("tag", tagged, "lr-sweep", "--remove", "--logs-dir", logs_dir, "--json")
        assert_clean_exit(result, 0)
        assert json.loads(result.stdout) == {"run_id": tagged, "tags": ["paper:fig2"]}
        assert [r["run_id"] for r in _runs(cli, logs_dir, "--tag", "control")] == [plain]
        assert _runs(cli, logs_dir, "--tag", "lr-sweep") == []
    finally:
        _wait_done(logs_dir, [tagged, plain])

    # The runs ended (their records rewritten from the folders by the workers): tags kept.
    assert {r["run_id"]: r["tags"] for r in _runs(cli, logs_dir)} == {tagged: ["paper:fig2"], plain: ["control"]}
    # The index lost: rebuilt from the run folders, tags included.
    (logs_dir / STORE_FILE).unlink()
    assert {r["run_id"]: r["tags"] for r in _runs(cli, logs_dir)} == {tagged: ["paper:fig2"], plain: ["control"]}
    console = Console(width=100, record=True)  # `runs`' table: each run's tags after its experiment
    console.print(runs_view(_runs(cli, logs_dir)))
    listed = console.export_text()
    assert "baseline #paper:fig2" in listed and "baseline #control" in listed

    result = wb("fuse", tagged, plain, "--mode", "average", "--tag", "fused", "--logs-dir", logs_dir, "--json")
    [fused] = json.loads(result.stdout)["run_ids"]
    _wait_done(logs_dir, [fused])
    assert [r["run_id"] for r in _runs(cli, logs_dir, "--tag", "fused")] == [fused]


@pytest.mark.parametrize("bad", ["", "   ", "two words", "a,b", "x" * 41])
def test_a_bad_tag_is_one_sentence_exit_2_and_nothing_written(cli, experiments_file, logs_dir, bad):
    result = cli("submit", "baseline", "--tag", bad, "--experiments", experiments_file, "--logs-dir", logs_dir)
    assert_clean_exit(result, 2)
    assert result.stderr.strip() == f"error: tag {bad!r}: a tag is 1 to 40 characters, no spaces or commas (e.g. lr-sweep, paper:fig2)"
    assert not logs_dir.exists()  # no run folder, no index
    for args in (("runs", "--tag", bad), ("tag", "whatever", bad), ("study", "half-fixed-vs-baseline", "--tag", bad,
                                                                       "--experiments", experiments_file)):
        result = cli(*args, "--logs-dir", logs_dir)
        assert_clean_exit(result, 2)
        assert f"tag {bad!r}: a tag is" in result.stderr
    assert not logs_dir.exists()


def test_a_study_tags_its_runs_with_its_name(cli, experiments_file, logs_dir):
    result = cli("study", "half-fixed-vs-baseline", "--seeds", "1", "--set", "train.steps=5", "--tag", "quick",
                 "--experiments", experiments_file, "--logs-dir", logs_dir, "--json")
    assert_clean_exit(result, 0)
    runs = _runs(cli, logs_dir)
    assert len(runs) == 2 and {r["experiment"] for r in runs} == {"baseline", "half-fixed"}
    assert all(r["tags"] == ["half-fixed-vs-baseline", "quick"] for r in runs), [r["tags"] for r in runs]
    assert len(_runs(cli, logs_dir, "--tag", "half-fixed-vs-baseline")) == 2
    # A second look at the study re-uses the runs (tags are not in the digest) and tags nothing twice.
    before = time.time()
    result = cli("study", "half-fixed-vs-baseline", "--seeds", "1", "--set", "train.steps=5",
                 "--experiments", experiments_file, "--logs-dir", logs_dir, "--json")
    assert_clean_exit(result, 0)
    again = _runs(cli, logs_dir)
    assert {r["run_id"] for r in again} == {r["run_id"] for r in runs} and all(r["created"] < before for r in again)
    assert all(r["tags"] == ["half-fixed-vs-baseline", "quick"] for r in again)
