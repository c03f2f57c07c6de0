"""Every spec error surfaces in `prepare` (and in submit's preflight, which uses the same
`assemble`), before a single file of the run is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.run_folder import RunFolder
from engine.spec import Experiments
from engine.train import prepare, train
from factories import tiny_spec

SHIPPED = Path(__file__).resolve().parent.parent / "experiments.json"


@pytest.mark.parametrize("name", Experiments.load(SHIPPED).names)
def test_every_shipped_experiment_prepares(name):
    spec = Experiments.load(SHIPPED).resolve(name, {"device": "cpu"})
    prep = prepare(spec)
    assert prep.spec.digest() and sum(p.numel() for p in prep.model.parameters()) > 0


@pytest.fixture(scope="module")
def resnet_member(tmp_path_factory) -> tuple[Path, str]:
    """A logs dir holding one trained (1-step) resnet run, to fuse."""
    logs = tmp_path_factory.mktemp("logs")
    folder = RunFolder.create(logs)
    spec = tiny_spec(model__name="resnet", train__steps=1, train__eval_every=0, track__every=0)
    train(prepare(spec), folder, experiment="member")
    return logs, folder.run_id


# id: (--set overrides, fragments the one-sentence error must name)
REFUSED = {
    "resnet-mutant-prune": (
        {"model.name": "resnet", "fusion.mode": "mutant", "fusion.runs": ["{member}"], "fusion.prune.every": 1},
        ["resnet"],
    ),
    "ensemble-freeze": ({"ensemble.members": 2, "partition.strategy": "none", "freeze": True}, ["ensemble.members", "freeze"]),
    "grouped-first-kernels": ({"model.groups": 2, "partition.strategy": "first_kernels"}, ["first_kernels", "model.groups"]),
    "fusion-without-runs": ({"fusion.mode": "average"}, ["fusion.runs"]),
    "prune-without-mutant": ({"fusion.prune.every": 2}, ["fusion.prune.every", "mutant"]),
    "prune-frozen-mutant": (
        {"freeze": True, "fusion.mode": "mutant", "fusion.runs": ["{member}"], "fusion.prune.every": 1},
        ["fusion.prune.every", "freeze false"],
    ),
    "everything-fixed": ({"freeze": True, "partition.fraction": 1.0, "partition.include_fc": True}, ["partition.fraction"]),
    "elastic-negative-rho": ({"freeze": {"mode": "elastic", "rho": -1}}, ["freeze", "rho", "-1"]),
    "elastic-unknown-mode": ({"freeze": {"mode": "springy", "rho": 1}}, ["freeze", "elastic", "springy"]),
    "coupling-without-ensemble": ({"ensemble.coupling.mode": "easgd"}, ["ensemble.coupling.mode", "ensemble.members"]),
    "coupling-period-0": (
        {"ensemble.members": 2, "partition.strategy": "none", "ensemble.coupling.mode": "easgd", "ensemble.coupling.period": 0},
        ["ensemble.coupling.period", "greater than or equal to 1"],
    ),
    "coupling-negative-rho": (
        {"ensemble.members": 2, "partition.strategy": "none", "ensemble.coupling.mode": "easgd", "ensemble.coupling.rho": -0.5},
        ["ensemble.coupling.rho", "-0.5"],
    ),
}


def _folders(logs: Path) -> list[Path]:
    return sorted(p for p in logs.iterdir() if p.is_dir())


def _store(logs: Path) -> str:
    path = logs / "store.json"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("command", [["run", "--headless"], ["submit"]])
@pytest.mark.parametrize("case", list(REFUSED))
def test_a_refused_combination_writes_nothing(case, command, cli, experiments_file, resnet_member):
    logs, member = resnet_member
    overrides, fragments = REFUSED[case]
    before, store_before = _folders(logs), _store(logs)
    sets = [a for key, value in overrides.items() for a in ("--set", f"{key}={json.dumps(value).replace('{member}', member)}")]

    result = cli(*command, "baseline", *sets, "--experiments", experiments_file, "--logs-dir", logs)

    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and all(line.startswith("error:") for line in lines), result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not named in {result.stderr!r}"
    assert _folders(logs) == before  # no run folder: not even spec.json, masks.pt or init.pt
    assert _store(logs) == store_before
