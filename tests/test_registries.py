"""Registries (issue 13, item 4): a choice is a declaration plus an implementation, and a new
partition strategy registered from this file alone shows up everywhere a strategy does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from textual.widgets import Select

from engine.choices import ENSEMBLE_IMPLEMENTATIONS, FUSION_MODES, OPTIMIZERS, PARTITIONS, PRUNE_CRITERIA
from engine.spec import Experiments
from engine.strategies.kernel_scores import fix_top_kernels
from workbench.tables import partition_text
from workbench.tui.devices import DeviceChoice
from workbench.tui.widgets.spec_form import SpecForm

from test_input_bounds import EXPERIMENT_DIGESTS
from tui_support import FormHost, sync

REPO = Path(__file__).resolve().parent.parent
NAME = "odd_kernels_first"

# ExperimentSpec.digest() of the tests' tiny experiments at main's HEAD before the registries
# (the shipped ones are test_input_bounds' EXPERIMENT_DIGESTS): specs that stopped matching
# these would orphan existing runs.
TINY_DIGESTS_BEFORE_REGISTRIES = {"baseline": "ddd697b141461514", "half-fixed": "bf50df5c4f39c2a4"}


def test_registries_leave_the_digests_of_existing_specs_alone(experiments_file):
    shipped = Experiments.load(REPO / "experiments.json")
    # experiments added since (elastic-half, ensemble-4-easgd, ...) have no older runs to orphan
    assert {name: shipped.resolve(name).digest() for name in EXPERIMENT_DIGESTS} == EXPERIMENT_DIGESTS
    tiny = Experiments.load(experiments_file)
    assert {name: tiny.resolve(name).digest() for name in tiny.names} == TINY_DIGESTS_BEFORE_REGISTRIES


def test_every_declared_choice_has_an_implementation():
    import engine.construction  # noqa: F401 - each torch-side module attaches its implementations
    import engine.ensemble  # noqa: F401
    import engine.optimizers  # noqa: F401
    import engine.subsets  # noqa: F401

    for registry, meta in ((PARTITIONS, ()), (OPTIMIZERS, ()), (ENSEMBLE_IMPLEMENTATIONS, ("auto",)),
                           (FUSION_MODES, ("none",))):
        for name in registry.names:
            if name not in meta:  # auto and none choose or do nothing: no implementation of their own
                assert callable(registry.implementation(name)), (registry.kind, name)
    assert PRUNE_CRITERIA.names == ["bn_scale", "channel_norm"]


def _odd_first(layer, generator) -> torch.Tensor:
    """The test's kernel ranking: odd kernels first, so fraction 0.5 fixes exactly the odd ones."""
    return torch.cat([torch.arange(1, layer.kernels, 2), torch.arange(0, layer.kernels, 2)])


@pytest.fixture
def odd_strategy():
    """A strategy registered from this file alone: one declaration, one implementation."""
    PARTITIONS.declare(NAME, "fix each layer's odd-numbered kernels", ("fraction", "include_fc"))
    PARTITIONS.implement(NAME, fix_top_kernels(_odd_first))
    yield NAME
    PARTITIONS.remove(NAME)


@pytest.fixture
def odd_experiments(experiments_file, odd_strategy) -> Path:
    raw = json.loads(experiments_file.read_text())
    raw["experiments"]["odd-fixed"] = {"base": "half-fixed", "partition": {"strategy": NAME, "fraction": 0.5}}
    path = experiments_file.parent / "odd.json"
    path.write_text(json.dumps(raw))
    return path


def test_a_registered_strategy_is_validated_listed_and_in_the_schema(cli, odd_experiments):
    validated = cli("validate", odd_experiments)
    assert validated.exit_code == 0, validated.stderr
    listed = cli("experiments", "--experiments", odd_experiments)
    assert listed.exit_code == 0, listed.stderr
    assert "odd-fixed" in listed.stdout  # the table (its partition column is cut at 80 columns)
    listed = cli("experiments", "--experiments", odd_experiments, "--json")
    assert json.loads(listed.stdout)["odd-fixed"]["partition"]["strategy"] == NAME
    # the table's partition text shows what the strategy's declaration says it reads
    assert partition_text(Experiments.load(odd_experiments).resolve("odd-fixed").partition) == f"{NAME} 0.5"
    schema = cli("schema")
    assert schema.exit_code == 0, schema.stderr
    assert NAME in json.loads(schema.stdout)["$defs"]["PartitionSpec"]["properties"]["strategy"]["enum"]


def test_an_unknown_strategy_is_still_refused_with_the_allowed_names(cli, experiments_file, tmp_path):
    raw = json.loads(experiments_file.read_text())
    raw["experiments"]["baseline"]["partition"] = {"strategy": NAME}  # not registered here
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    result = cli("validate", path)
    assert result.exit_code == 2
    assert f'(got "{NAME}")' in result.stderr and "'first_kernels'" in result.stderr and "Traceback" not in result.stderr


@sync
async def test_a_registered_strategy_is_a_choice_of_the_compose_form(odd_strategy):
    form = SpecForm(devices=[DeviceChoice("cpu", "cpu")])
    async with FormHost(form).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        strategy = form.widget_for("partition.strategy")
        assert [value for _, value in strategy._options if value is not Select.NULL] == PARTITIONS.names
        assert NAME in PARTITIONS.names
        form.set_values({"partition": {"strategy": NAME}})
        await pilot.pause()
        assert form.errors() == {}
        assert form.spec().partition.strategy == NAME


def test_a_headless_run_uses_the_registered_strategy(cli, odd_experiments, tmp_path):
    logs_dir = tmp_path / "logs"
    result = cli("run", "odd-fixed", "--headless", "--json", "--experiments", odd_experiments, "--logs-dir", logs_dir)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    (folder,) = [p for p in logs_dir.iterdir() if p.is_dir()]
    assert json.loads((folder / "spec.json").read_text())["partition"]["strategy"] == NAME
    masks = torch.load(folder / "masks.pt")
    conv = [name for name, mask in masks["fixed"].items() if mask.dim() == 4]
    assert conv, "the tiny lenet has conv layers"
    for name, mask in masks["fixed"].items():
        if name in conv or (mask.dim() == 1 and name.replace(".bias", ".weight") in conv):
            odd = torch.arange(mask.shape[0]) % 2 == 1
            # each kernel (and its bias) fixed exactly when its index is odd: the test's ranking
            assert torch.equal(mask.flatten(1).all(1) if mask.dim() > 1 else mask, odd), name
            assert torch.equal(mask.flatten(1).any(1) if mask.dim() > 1 else mask, odd), name
        elif mask.dim() == 2:  # fc layers: include_fc is false, so they wholly train
            assert not mask.any(), name
        assert torch.equal(masks["subset"][name], ~mask), name
