"""The CLI names elastic freezing, EASGD and soft weight sharing; `workbench quantize`."""

from __future__ import annotations

import json

from cli_support import assert_clean_exit

SHARING = ["--set", "regularizer.name=soft_weight_sharing", "--set", "regularizer.components=4",
           "--set", "partition.strategy=none", "--set", "train.steps=8"]


def _run(cli, experiments_file, logs_dir, *sets):
    result = cli("run", "--headless", "baseline", *sets, "--json", "--experiments", experiments_file, "--logs-dir", logs_dir)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)["run_id"]


def test_quantize_a_soft_sharing_run_and_show_names_its_prior(cli, experiments_file, logs_dir):
    run_id = _run(cli, experiments_file, logs_dir, *SHARING)
    result = cli("quantize", run_id, "--json", "--logs-dir", logs_dir)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    figures = json.loads(result.stdout)
    assert figures["covered_weights"] > 0 and 0 <= figures["zero_share"] <= 1 and 1 <= figures["components_used"] <= 4
    assert (logs_dir / run_id / "checkpoints" / "quantized.pt").exists()
    text = cli("quantize", run_id, "--logs-dir", logs_dir).stdout
    assert "zero share" in text and "bits/weight" in text
    shown = cli("show", run_id, "--logs-dir", logs_dir).stdout
    assert "regularizer" in shown and "soft_weight_sharing" in shown


def test_quantize_refuses_a_run_without_the_prior(cli, experiments_file, logs_dir):
    run_id = _run(cli, experiments_file, logs_dir, "--set", "train.steps=2")
    result = cli("quantize", run_id, "--logs-dir", logs_dir)
    assert_clean_exit(result, 2)
    assert "soft_weight_sharing" in result.stderr and run_id in result.stderr


def test_experiments_name_elastic_easgd_and_sharing():
    from rich.console import Console

    from engine.spec import ExperimentSpec
    from workbench.tables import experiments_table

    specs = {
        "soft": ExperimentSpec.model_validate(
            {"freeze": {"mode": "elastic", "rho": 0.5}, "regularizer": {"name": "soft_weight_sharing"}}),
        "coupled": ExperimentSpec.model_validate(
            {"partition": {"strategy": "none"}, "ensemble": {"members": 2, "coupling": {"mode": "easgd", "rho": 0.2, "period": 4}}}),
    }
    console = Console(width=200, record=True)
    console.print(experiments_table(specs))
    text = console.export_text()
    assert "elastic 0.5" in text and "swsh J16 tau 0.005" in text and "easgd rho 0.2/4" in text
