"""Shared fixtures: a tiny experiments file, a logs dir, and the CLI (in-process or as a real process)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app

# The shipped experiments.json's shape, shrunk so that a run takes well under a second on a CPU.
TINY_EXPERIMENTS = {
    "experiments": {
        "baseline": {
            "description": "tiny baseline for tests",
            "seed": 0,
            "device": "cpu",
            "data": {"name": "mnist5k", "batch_size": 64},
            "model": {"name": "lenet", "width": 4},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005},
            "train": {"steps": 20, "eval_every": 10},
            "partition": {"strategy": "first_kernels", "fraction": 0.5, "include_fc": False},
            "freeze": False,
            "track": {"every": 5},
            "checkpoint": {"every": 0},
        },
        "half-fixed": {"base": "baseline", "description": "tiny frozen run for tests", "freeze": True},
    },
    "studies": {
        "half-fixed-vs-baseline": {"arms": ["baseline", "half-fixed"], "seeds": 2, "set": {"train.steps": 30}},
    },
}


def _runner() -> CliRunner:
    # Click < 8.2 (typer < 0.16) mixes stderr into stdout unless told not to; newer
    # CliRunners always keep them apart and no longer accept the argument.
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def _invoke(*args: object):
    """`workbench ARGS...` in this process, from an empty scratch directory (so a default path
    like `logs/` can never land in the repo). Returns the runner's result: exit_code, stdout,
    stderr, exception."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            return _runner().invoke(app, [str(a) for a in args], env={"WORKBENCH_LOGS": None})
        finally:
            os.chdir(here)


@pytest.fixture(scope="session")
def cli():
    """`cli("runs", "--json", "--logs-dir", path)` -> result; pass absolute paths."""
    return _invoke


@pytest.fixture(scope="session")
def workbench_exe() -> Path:
    """The installed console script, for tests that need a real process (signals, kill -9)."""
    exe = Path(sys.executable).parent / "workbench"
    if not exe.exists():
        pytest.skip(f"no workbench console script beside {sys.executable}")
    return exe


def _write_experiments(folder: Path) -> Path:
    path = Path(folder) / "experiments.json"
    path.write_text(json.dumps(TINY_EXPERIMENTS, indent=2))
    return path


@pytest.fixture(scope="session")
def write_experiments():
    """`write_experiments(folder)` -> the path of a tiny experiments.json written there (for wider-scoped fixtures)."""
    return _write_experiments


@pytest.fixture
def experiments_file(tmp_path: Path) -> Path:
    """experiments.json with `baseline` and `half-fixed`: lenet width 4, 20 steps, cpu, mnist5k."""
    return _write_experiments(tmp_path)


@pytest.fixture
def logs_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def wb(workbench_exe, experiments_file):
    """`wb("submit", "baseline", ...)` -> CompletedProcess, run as a real process in the
    experiments file's folder with its own logs dir."""
    cwd = experiments_file.parent
    env = {k: v for k, v in os.environ.items() if k not in ("WORKBENCH_LOGS", "WORKBENCH_MAX_PER_DEVICE")}

    def run(*args: object, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(workbench_exe), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    run.logs = cwd / "logs"
    return run
