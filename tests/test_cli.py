"""The command line, end to end: the run-folder contract, listing and showing runs, validation,
one-line errors for bad input, and runs that are interrupted or killed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from engine.events import read_events
from workbench.store import Store
from cli_support import assert_clean_exit

REPO = Path(__file__).resolve().parent.parent
SHIPPED_EXPERIMENTS = REPO / "experiments.json"
SHIPPED_SCHEMA = REPO / "experiments.schema.json"
METRICS = ("dist", "rel", "speed", "path", "cos")
RUN_ID = re.compile(r"^[a-z0-9]{8}$")


def run_folders(logs_dir: Path) -> list[Path]:
    return sorted(p for p in logs_dir.iterdir() if p.is_dir()) if logs_dir.exists() else []


def stored_runs(logs_dir: Path) -> list[dict]:
    """The records in store.json, read raw (no Store: that would create the logs dir)."""
    path = logs_dir / "store.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text() or "{}").get("runs", {}).values())


# ---------------------------------------------------------------------------------------
# One completed run, shared by the tests that only read it.


@pytest.fixture(scope="module")
def done(tmp_path_factory, cli, write_experiments):
    """A finished `half-fixed` run with --seed/--device/--set overrides, run via --json."""
    root = tmp_path_factory.mktemp("done")
    experiments, logs = write_experiments(root), root / "logs"
    result = cli(
        "run", "--headless", "half-fixed", "--json",
        "--experiments", experiments, "--logs-dir", logs,
        "--seed", "3",
        "--set", "device=auto", "--device", "cpu",  # the option wins over --set
        "--set", "optimizer.lr=0.02",
        "--set", "partition.fraction=0.25",
    )  # fmt: skip
    assert_clean_exit(result, 0)
    return {"result": result, "experiments": experiments, "logs": logs}


def test_headless_json_prints_one_object_and_writes_the_run_folder(done):
    lines = done["result"].stdout.strip().splitlines()
    assert len(lines) == 1, done["result"].stdout
    payload = json.loads(lines[0])
    assert RUN_ID.match(payload["run_id"]), payload["run_id"]
    assert payload["status"] == "completed"
    run_dir = Path(payload["run_dir"])
    assert run_dir.is_dir() and run_dir.name == payload["run_id"]
    assert [p.name for p in run_folders(done["logs"])] == [payload["run_id"]]
    for name in ("spec.json", "events.jsonl", "masks.pt", "checkpoints/init.pt", "checkpoints/final.pt",
                 "summary.json", "worker.log"):  # fmt: skip
        assert (run_dir / name).is_file(), name

    summary = payload["summary"]
    assert summary == json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["steps"] == 20
    for subset in ("subset", "fixed"):
        for metric in METRICS:
            assert isinstance(summary["movement"][subset][metric], float), (subset, metric)
    for key in ("train_loss", "eval_loss", "eval_acc"):
        assert isinstance(summary["final"][key], float), key
    assert 0.0 <= summary["final"]["eval_acc"] <= 1.0
    assert summary["movement"]["subset"]["dist"] > 0  # the subset trained
    assert summary["movement"]["fixed"]["dist"] == 0.0  # frozen exactly

    events, _ = read_events(run_dir / "events.jsonl")
    assert events[0]["type"] == "start" and events[0]["run_id"] == payload["run_id"]
    assert events[-1]["type"] == "end" and events[-1]["status"] == "completed"
    assert "start run " + payload["run_id"] in (run_dir / "worker.log").read_text()


def test_masks_and_checkpoints_are_plain_tensors(done):
    torch = pytest.importorskip("torch")
    run_dir = Path(json.loads(done["result"].stdout)["run_dir"])
    masks = torch.load(run_dir / "masks.pt", weights_only=True)
    init = torch.load(run_dir / "checkpoints/init.pt", weights_only=True)
    final = torch.load(run_dir / "checkpoints/final.pt", weights_only=True)

    assert set(masks) == {"subset", "fixed"}
    assert set(masks["subset"]) == set(masks["fixed"]) and masks["subset"]
    assert set(init) == set(final) and set(masks["subset"]) <= set(init)
    assert all(isinstance(t, torch.Tensor) for t in (*init.values(), *final.values()))
    for name, subset in masks["subset"].items():
        fixed = masks["fixed"][name]
        assert subset.dtype == torch.bool and fixed.dtype == torch.bool
        assert subset.shape == fixed.shape == init[name].shape
        assert torch.equal(subset, ~fixed), name  # complements: every coordinate in exactly one
    assert any(m.any() for m in masks["fixed"].values())
    # freeze=true: fixed coordinates end bit-for-bit at their initial values; the subset moved.
    for name, fixed in masks["fixed"].items():
        assert torch.equal(final[name][fixed], init[name][fixed]), name
    assert any(not torch.equal(final[n][m], init[n][m]) for n, m in masks["subset"].items())


def test_seed_device_and_set_overrides_land_in_spec_json(done):
    spec = json.loads((Path(json.loads(done["result"].stdout)["run_dir"]) / "spec.json").read_text())
    assert spec["seed"] == 3
    assert spec["device"] == "cpu"
    assert spec["optimizer"]["lr"] == 0.02
    assert spec["partition"]["fraction"] == 0.25
    assert spec["freeze"] is True  # from the experiment, through its base
    assert spec["model"]["width"] == 4 and spec["train"]["steps"] == 20


def test_runs_json_lists_the_run_with_its_figures(done, cli):
    payload = json.loads(done["result"].stdout)
    result = cli("runs", "--json", "--logs-dir", done["logs"])
    assert_clean_exit(result, 0)
    records = json.loads(result.stdout)
    assert [r["run_id"] for r in records] == [payload["run_id"]]
    record, summary = records[0], payload["summary"]
    assert record["status"] == "completed"
    assert record["experiment"] == "half-fixed"
    assert record["step"] == summary["steps"]
    assert record["eval_acc"] == summary["final"]["eval_acc"]
    assert record["subset_dist"] == summary["movement"]["subset"]["dist"]
    assert record["fixed_dist"] == summary["movement"]["fixed"]["dist"]


def test_show_prints_the_run_and_per_layer_movement_by_id_or_prefix(done, cli):
    payload = json.loads(done["result"].stdout)
    run_id, layers = payload["run_id"], payload["summary"]["movement"]["subset"]["layers"]
    assert layers
    for key in (run_id, run_id[:3]):
        result = cli("show", key, "--logs-dir", done["logs"])
        assert_clean_exit(result, 0)
        assert run_id in result.stdout
        assert f"{payload['summary']['params']:,} params" in " ".join(result.stdout.split())
        for layer, figures in layers.items():
            row = next((line for line in result.stdout.splitlines() if layer in line), None)
            assert row is not None, f"layer {layer} missing from:\n{result.stdout}"
            assert f"{figures['dist']:.4g}" in row, (layer, row)


def test_show_unknown_id_is_one_line_and_exit_2(done, cli):
    result = cli("show", "nosuchid", "--logs-dir", done["logs"])
    assert_clean_exit(result, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nosuchid" in lines[0]


# ---------------------------------------------------------------------------------------
# Experiments files: listing, validation, the schema.


def test_experiments_lists_the_names(cli, experiments_file):
    names = list(json.loads(experiments_file.read_text())["experiments"])
    as_json = cli("experiments", "--json", "--experiments", experiments_file)
    assert_clean_exit(as_json, 0)
    resolved = json.loads(as_json.stdout)
    assert list(resolved) == names
    assert resolved["half-fixed"]["freeze"] is True and resolved["half-fixed"]["model"]["width"] == 4  # via base
    table = cli("experiments", "--experiments", experiments_file)
    assert_clean_exit(table, 0)
    for name in names:
        assert name in table.stdout


def test_validate_accepts_the_shipped_experiments(cli):
    result = cli("validate", SHIPPED_EXPERIMENTS)
    assert_clean_exit(result, 0)
    assert "ok" in result.stdout


def test_validate_reports_every_error_with_its_location(cli, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(
        json.dumps(
            {
                "experiments": {
                    "good": {"model": {"width": 4}},
                    "lr": {"optimizer": {"lr": -0.1}},
                    "frac": {"base": "good", "partition": {"fraction": 1.5}},
                    "strat": {"partition": {"strategy": "zigzag"}},
                    "typo": {"train": {"stepz": 3}},
                    "loop_a": {"base": "loop_b"},
                    "loop_b": {"base": "loop_a"},
                    "orphan": {"base": "nobody"},
                }
            }
        )
    )
    result = cli("validate", path)
    assert_clean_exit(result, 2)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    expected = {
        "experiments.lr.optimizer.lr": "-0.1",
        "experiments.frac.partition.fraction": "1.5",
        "experiments.strat.partition.strategy": "zigzag",
        "experiments.typo.train.stepz": "unknown key",
        "experiments.loop_a.base": "cycle",
        "experiments.orphan.base": "nobody",
    }
    for location, detail in expected.items():
        assert any(location in e and detail in e for e in errors), f"{location} ({detail}) not in:\n{result.stderr}"
    assert not any("experiments.good" in e for e in errors)
    assert "Traceback" not in result.stderr


def test_schema_command_matches_the_committed_schema(cli):
    result = cli("schema")
    assert_clean_exit(result, 0)
    assert result.stdout == SHIPPED_SCHEMA.read_text(), (
        "experiments.schema.json is stale: regenerate it with `workbench schema -o experiments.schema.json`"
    )


def test_shipped_experiments_validate_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SHIPPED_SCHEMA.read_text())
    jsonschema.validate(json.loads(SHIPPED_EXPERIMENTS.read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):  # and the schema does reject things
        jsonschema.validate({"experiments": {"x": {"optimizer": {"lr": "fast"}}}}, schema)


# ---------------------------------------------------------------------------------------
# Bad input: one line per error, exit 2, no traceback, no run folder.


def _no_gpu_two() -> bool:
    import torch

    return torch.cuda.device_count() <= 2


BAD_INPUT = {
    # id: (args after `run --headless`, fragments the error must name)
    "device": (["--device", "cuda:2"], ["cuda:2"]),
    "malformed": (["--experiments", "{malformed}"], ["malformed.json", "JSON"]),
    "unknown-experiment": (["nosuchexp"], ["nosuchexp"]),
    "strategy": (["--set", "partition.strategy=bogus"], ["partition.strategy", "bogus"]),
    "fraction": (["--set", "partition.fraction=1.5"], ["partition.fraction", "1.5"]),
    "unknown-key": (["--set", "no.such.key=1"], ["no.such.key"]),
    "lr": (["--set", "optimizer.lr=-1"], ["optimizer.lr", "-1"]),
    "missing-file": (["--experiments", "{missing}"], ["nothere.json"]),
    "dataset": (["--set", "data.name=cifar10", "--set", "data.dir={empty}"], ["cifar10"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_no_run(case, cli, tmp_path, experiments_file, logs_dir):
    if case == "device" and not _no_gpu_two():
        pytest.skip("this machine has a cuda:2")
    args, fragments = BAD_INPUT[case]
    (tmp_path / "malformed.json").write_text('{"experiments": {"a": {"seed": 1,}}}')
    (tmp_path / "empty").mkdir()
    paths = {"malformed": tmp_path / "malformed.json", "missing": tmp_path / "nothere.json", "empty": tmp_path / "empty"}
    args = [a.format(**paths) for a in args]
    if "--experiments" not in args:
        args += ["--experiments", str(experiments_file)]

    result = cli("run", "--headless", *args, "--logs-dir", logs_dir, "--json")

    assert_clean_exit(result, 2)
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error:") for line in lines), result.stderr
    for fragment in fragments:
        assert any(fragment in line for line in lines), f"{fragment!r} not named in:\n{result.stderr}"
    assert result.stdout.strip() == ""
    assert run_folders(logs_dir) == []
    assert stored_runs(logs_dir) == []


# ---------------------------------------------------------------------------------------
# Real processes: Ctrl-C stops cleanly; kill -9 leaves a run that shows as lost.


def _start_long_run(workbench_exe: Path, experiments: Path, logs: Path, cwd: Path):
    """A frozen run long enough to interrupt, started as a real process; returns (process, run folder)
    once the run has started and recorded some progress."""
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_LOGS"}
    proc = subprocess.Popen(
        [str(workbench_exe), "run", "--headless", "half-fixed", "--json",
         "--experiments", str(experiments), "--logs-dir", str(logs),
         "--set", "train.steps=20000", "--set", "train.eval_every=0"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"run ended early with {proc.returncode}:\n{out.decode()}\n{err.decode()}")
            folders = run_folders(logs)
            if folders:
                assert len(folders) == 1, folders
                events, _ = read_events(folders[0] / "events.jsonl")
                if any(e["type"] == "start" for e in events) and any(
                    e["type"] == "movement" and e["step"] > 0 for e in events
                ):
                    return proc, folders[0]
            time.sleep(0.05)
        pytest.fail("the run recorded no progress within 120 s")
    except BaseException:
        proc.kill()
        proc.communicate()
        raise


def test_ctrl_c_cancels_cleanly_with_exit_130(workbench_exe, experiments_file, logs_dir, tmp_path):
    torch = pytest.importorskip("torch")
    proc, folder = _start_long_run(workbench_exe, experiments_file, logs_dir, tmp_path)
    try:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    out, err = out.decode(), err.decode()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err
    payload = json.loads(out)
    assert payload["run_id"] == folder.name and payload["status"] == "cancelled"

    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "cancelled"
    assert 0 < summary["steps"] < 20000
    record = Store(logs_dir).get(folder.name)
    assert record is not None and record["status"] == "cancelled"
    events, _ = read_events(folder / "events.jsonl")
    assert events[-1]["type"] == "end" and events[-1]["status"] == "cancelled"
    assert events[-1]["step"] == summary["steps"]

    # The last checkpoint is the cancelled step's, and frozen coordinates are still exactly init.
    checkpoints = sorted(folder.glob("checkpoints/step_*.pt"))
    assert checkpoints and checkpoints[-1].name == f"step_{summary['steps']:06d}.pt"
    masks = torch.load(folder / "masks.pt", weights_only=True)
    init = torch.load(folder / "checkpoints/init.pt", weights_only=True)
    last = torch.load(checkpoints[-1], weights_only=True)
    assert any(m.any() for m in masks["fixed"].values())
    for name, fixed in masks["fixed"].items():
        assert torch.equal(last[name][fixed], init[name][fixed]), name
    assert any(not torch.equal(last[n][m], init[n][m]) for n, m in masks["subset"].items())


def test_a_killed_run_shows_as_lost(workbench_exe, experiments_file, logs_dir, tmp_path, cli):
    proc, folder = _start_long_run(workbench_exe, experiments_file, logs_dir, tmp_path)
    proc.kill()  # SIGKILL: no chance to write an end event or a final status
    proc.communicate()
    assert Store(logs_dir).get(folder.name)["status"] == "running"  # what the dead process left behind

    result = cli("runs", "--json", "--logs-dir", logs_dir)
    assert_clean_exit(result, 0)
    [record] = json.loads(result.stdout)
    assert record["run_id"] == folder.name
    assert record["status"] == "lost"


def test_show_lists_an_ensembles_member_accuracies(tmp_path):
    """`workbench show` of an ensemble: each member's final accuracy next to the average's."""
    from rich.console import Console

    from engine.run_folder import RunFolder
    from workbench.tables import run_detail

    summary = {"run_id": "ens00001", "status": "completed", "steps": 10, "planned_steps": 10, "params": 12345,
               "final": {"eval_acc": 0.9, "member_acc": [0.81, 0.835]}, "movement": {}}
    console = Console(width=80, record=True)
    console.print(run_detail(summary, RunFolder(tmp_path / "ens00001")))
    text = console.export_text()
    assert "member eval_acc 0.81 0.835" in text and "12,345 params" in text
