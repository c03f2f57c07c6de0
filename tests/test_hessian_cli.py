"""Hessian-guided runs from the command line: `workbench hessian`, `show`'s summary, and
bad settings refused in one sentence, exit 2, before any run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import assert_clean_exit
from conftest import TINY_EXPERIMENTS

HESSIAN_EXPERIMENT = {
    "base": "baseline",
    "data": {"name": "digits", "batch_size": 32},
    "model": {"name": "lenet", "width": 2},
    "train": {"steps": 4, "eval_every": 0},
    "partition": {"strategy": "hessian_interaction", "fraction": 0.5, "include_fc": False,
                  "hessian": {"samples": 40, "batch_size": 20}},
}


@pytest.fixture(scope="module")
def hessian_run(tmp_path_factory, cli):
    folder = tmp_path_factory.mktemp("hessian")
    experiments = folder / "experiments.json"
    raw = json.loads(json.dumps(TINY_EXPERIMENTS))
    raw["experiments"]["hess"] = HESSIAN_EXPERIMENT
    raw["experiments"]["plain"] = {**HESSIAN_EXPERIMENT, "partition": {"strategy": "first_kernels"}}
    experiments.write_text(json.dumps(raw))
    logs = folder / "logs"
    result = cli("run", "--headless", "hess", "--experiments", experiments, "--logs-dir", logs, "--json")
    assert_clean_exit(result, 0)
    return experiments, logs, json.loads(result.stdout)["run_id"]


def test_hessian_command_prints_each_layers_split(hessian_run, cli):
    experiments, logs, run_id = hessian_run
    result = cli("hessian", run_id, "--logs-dir", logs, "--json")
    assert_clean_exit(result, 0)
    out = json.loads(result.stdout)
    assert out["run_id"] == run_id and out["samples"] == 40 and out["at"] == "init"
    assert set(out["layers"]) == {"features.conv1", "features.conv2"}  # include_fc false: conv layers only
    conv2 = out["layers"]["features.conv2"]
    assert conv2["kernels"] == 4 and sum(conv2["fixed"]) == 2 and len(conv2["S"]) == 4 and len(conv2["saliency"]) == 4
    fixed = [k for k in range(4) if conv2["fixed"][k]]
    rest = [k for k in range(4) if not conv2["fixed"][k]]
    assert conv2["cross"] == pytest.approx(sum(abs(conv2["S"][i][j]) for i in fixed for j in rest), rel=1e-12)
    assert conv2["within_fixed"] == pytest.approx(abs(conv2["S"][fixed[0]][fixed[1]]), rel=1e-12)
    table = cli("hessian", run_id, "--logs-dir", logs, "--layer", "features.conv2")
    assert_clean_exit(table, 0)
    assert "S of features.conv2" in table.stdout and "decouple" in table.stdout


def test_show_summarises_the_hessian(hessian_run, cli):
    experiments, logs, run_id = hessian_run
    result = cli("show", run_id, "--logs-dir", logs)
    assert_clean_exit(result, 0)
    assert "hessian_interaction: decouple on |S|" in " ".join(result.stdout.split())
    assert "features.conv2" in result.stdout and "2/4" in result.stdout
    shown = json.loads(cli("show", run_id, "--logs-dir", logs, "--json").stdout)
    assert shown["hessian"]["layers"]["features.conv1"]["kernels"] == 2


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--set", "model.width=1"], ["'features.conv1' has 1 kernel"]),
        (["--set", "partition.hessian.matrix=absolute", "--set", "partition.hessian.budget=100"],
         ["204 coordinates", "partition.hessian.budget 100"]),
        (["--set", 'partition.hessian.at={"run": "nosuchrn"}'], ["no run 'nosuchrn'"]),
        (["--set", "partition.hessian.objective=split"], ["partition.hessian.objective", "'decouple' or 'couple'"]),
    ],
)
@pytest.mark.parametrize("command", ["run", "submit"])
def test_bad_hessian_settings_exit_2_before_any_folder(command, args, fragments, hessian_run, cli, tmp_path):
    experiments, _, _ = hessian_run
    logs = tmp_path / "logs"
    head = ["run", "--headless"] if command == "run" else ["submit"]
    result = cli(*head, "hess", *args, "--experiments", experiments, "--logs-dir", logs)
    assert_clean_exit(result, 2)
    error = result.stderr.strip()
    assert error.count("\n") == 0 and all(f in error for f in fragments), error
    assert not logs.exists() or not [p for p in logs.iterdir() if p.is_dir()]


def test_hessian_of_an_unknown_or_unmeasured_run_exits_2(hessian_run, cli):
    experiments, logs, run_id = hessian_run
    unknown = cli("hessian", "zzzzzzzz", "--logs-dir", logs)
    assert_clean_exit(unknown, 2)
    assert "'zzzzzzzz' matches no runs" in unknown.stderr
    bad_layer = cli("hessian", run_id, "--logs-dir", logs, "--layer", "features.conv9")
    assert_clean_exit(bad_layer, 2)
    assert "features.conv1, features.conv2" in bad_layer.stderr
    plain = json.loads(cli("run", "--headless", "plain", "--experiments", experiments, "--logs-dir", logs, "--json").stdout)
    result = cli("hessian", plain["run_id"], "--logs-dir", logs)
    assert_clean_exit(result, 2)
    assert "no hessian.pt" in result.stderr and "'first_kernels'" in result.stderr


def test_report_heatmap_orders_kernels_by_the_split(hessian_run, cli):
    import numpy as np

    from workbench.hessian_view import study_heatmap

    _, logs, run_id = hessian_run
    saved = json.loads(cli("hessian", run_id, "--logs-dir", logs, "--json").stdout)["layers"]["features.conv2"]
    figure = study_heatmap([logs / "not-a-run", logs / run_id])
    axes = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title().split(":")[0] for ax in axes] == ["features.conv1", "features.conv2"]
    order = [k for k in range(4) if saved["fixed"][k]] + [k for k in range(4) if not saved["fixed"][k]]
    shown = np.asarray(axes[1].images[0].get_array())
    assert np.allclose(shown, np.asarray(saved["S"])[np.ix_(order, order)])
    assert axes[1].patches[0].get_width() == 2  # the fixed block, outlined
    assert study_heatmap([logs / "not-a-run"]) is None
