"""Code provenance: each run records which engine code made it, `show` prints it, and a study
never re-uses a run of other (or unknown) engine code unless told to (--reuse-any-code)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.events import read_events
from engine.provenance import ENGINE_DIR, current_engine_hash, engine_hash
from engine.run_folder import atomic_write
from engine.spec import Experiments
from workbench.records import record_from_folder
from workbench.store import Store
from workbench.study import gather
from workbench.tui.screens.studies import StudyMatcher

OTHER = "0123456789abcdef"  # the engine hash of some other version of the code


def test_the_engine_hash_changes_when_an_engine_file_changes(tmp_path):
    copy = tmp_path / "engine"
    shutil.copytree(ENGINE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert engine_hash(copy) == current_engine_hash()  # the bytes, not the location
    tracking = copy / "tracking.py"
    tracking.write_text(tracking.read_text() + "\n# an edit\n")
    assert engine_hash(copy) != current_engine_hash()
    (copy / "tracking.py").write_text((ENGINE_DIR / "tracking.py").read_text())
    (copy / "new_module.py").write_text("")  # a new engine file is new code too
    assert engine_hash(copy) != current_engine_hash()


def set_engine(run_dir: Path, engine: str | None) -> None:
    """Rewrite the run's start events as if `engine` made it (None: a run from before provenance)."""
    events, _ = read_events(run_dir / "events.jsonl")
    for event in events:
        if event["type"] == "start":
            if engine is None:
                event.pop("provenance")
            else:
                event.setdefault("provenance", {})["engine_hash"] = engine
    atomic_write(run_dir / "events.jsonl", lambda f: f.write("".join(json.dumps(e) + "\n" for e in events).encode()))
    Store(run_dir.parent).put(record_from_folder(run_dir))


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory, write_experiments):
    """One seed of the tiny study (baseline and half-fixed), run through the CLI."""
    from conftest import _invoke

    folder = tmp_path_factory.mktemp("provenance")
    experiments = write_experiments(folder)
    logs = folder / "logs"
    result = _invoke("study", "half-fixed-vs-baseline", "--seeds", 1, "--experiments", experiments, "--logs-dir", logs, "--json")
    assert result.exit_code == 0, result.stderr
    runs = json.loads(result.stdout)["runs"]
    return experiments, logs, {arm: logs / by_seed["0"] for arm, by_seed in runs.items()}


def test_runs_record_and_show_their_provenance(study_runs, cli):
    _, logs, runs = study_runs
    start = next(e for e in read_events(runs["baseline"] / "events.jsonl")[0] if e["type"] == "start")
    provenance = start["provenance"]
    assert provenance["engine_hash"] == current_engine_hash()
    import torch

    assert provenance["torch"] == torch.__version__ and provenance["cuda"] == torch.version.cuda
    assert set(provenance) == {"engine_hash", "git_commit", "git_dirty", "torch", "cuda"}
    shown = cli("show", runs["baseline"].name, "--logs-dir", logs, "--json")
    assert json.loads(shown.stdout)["provenance"] == provenance
    text = cli("show", runs["baseline"].name, "--logs-dir", logs)
    assert f"engine {current_engine_hash()}" in text.stdout and f"torch {torch.__version__}" in text.stdout


def test_a_study_does_not_reuse_runs_of_other_engine_code(study_runs, cli):
    experiments, logs, runs = study_runs
    resolved = Experiments.load(experiments).study("half-fixed-vs-baseline", 1)
    assert gather(resolved, logs, launch=False).missing == []
    try:
        for engine, label in ((OTHER, "other code"), (None, "unknown code")):
            set_engine(runs["half-fixed"], engine)
            assert gather(resolved, logs, launch=False).missing == [("half-fixed", 0)], label
            assert gather(resolved, logs, launch=False, any_code=True).missing == [], label
            matched = StudyMatcher(experiments, logs).match(resolved, Store(logs).all())
            assert matched["half-fixed"][0] is None and matched["baseline"][0] is not None, label
            # the old run stays readable
            shown = cli("show", runs["half-fixed"].name, "--logs-dir", logs)
            assert shown.exit_code == 0, shown.stderr

        args = ("half-fixed-vs-baseline", "--seeds", 1, "--experiments", experiments, "--logs-dir", logs)
        refused = cli("report", *args, "-o", logs / "refused")
        assert refused.exit_code == 2 and "half-fixed seed 0" in refused.stderr and "--reuse-any-code" in refused.stderr
        assert not (logs / "refused").exists()
        report = cli("report", *args, "--reuse-any-code", "-o", logs / "any")
        assert report.exit_code == 0, report.stderr
        page = (logs / "any" / "README.md").read_text()
        assert "--reuse-any-code" in page and "unknown" in page and current_engine_hash() in page
    finally:
        set_engine(runs["half-fixed"], current_engine_hash())
