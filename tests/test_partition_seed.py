"""`partition.seed: "run"`: each run seed draws its own random partition, the same in every
arm of a study for that seed; specs that existed before keep their digests."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.spec import Experiments, SpecError
from engine.train import prepare
from factories import tiny_spec

REPO = Path(__file__).resolve().parents[1]
BEFORE = "be7efec"  # main's HEAD before partition.seed "run", seeds 10 and sweeps existed


def fixed_masks(**overrides):
    return prepare(tiny_spec(**overrides)).masks["fixed"]


def same(a, b) -> bool:
    return all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.parametrize("strategy", ["random_kernels", "random_elements"])
def test_run_seed_draws_a_partition_per_seed_shared_by_the_arms(strategy):
    partition = {"strategy": strategy, "fraction": 0.5, "seed": "run"}
    seed0 = fixed_masks(seed=0, partition=partition)
    seed1 = fixed_masks(seed=1, partition=partition)
    assert not same(seed0, seed1)  # another seed, another subset
    assert same(seed1, fixed_masks(seed=1, partition=partition, freeze=True))  # paired: the frozen arm tracks the same
    # an int partition.seed keeps one partition for every run seed, as before
    fixed = {**partition, "seed": 7}
    assert same(fixed_masks(seed=0, partition=fixed), fixed_masks(seed=1, partition=fixed))


def test_shipped_random_studies_vary_the_partition_with_the_seed():
    catalog = Experiments.load(REPO / "experiments.json")
    for name in ("random-kernels", "random-elements"):
        resolved = catalog.study(name)
        assert len(resolved.seeds) == 10
        for by_seed in resolved.specs.values():
            assert all(spec.partition.seed == "run" for spec in by_seed.values())
    assert all(len(catalog.study(name).seeds) == 10 for name in catalog.studies)


def test_a_bad_partition_seed_is_refused_in_one_sentence():
    catalog = Experiments({"experiments": {"x": {}}})
    with pytest.raises(SpecError, match="partition.seed"):
        catalog.resolve("x", {"partition.seed": "banana"})


def _old_spec_module(tmp_path):
    """engine/spec.py as it was at BEFORE, imported under another name."""
    if shutil.which("git") is None:
        pytest.skip("git is not available")
    shown = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE}:engine/spec.py"], capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip(f"commit {BEFORE} is not in this checkout")
    path = tmp_path / "old_spec.py"
    path.write_text(shown.stdout)
    module_spec = importlib.util.spec_from_file_location("old_spec", path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules["old_spec"] = module  # pydantic resolves the postponed annotations through it
    module_spec.loader.exec_module(module)
    return module, json.loads(subprocess.run(
        ["git", "-C", str(REPO), "show", f"{BEFORE}:experiments.json"], capture_output=True, text=True, check=True
    ).stdout)


def _digests(experiments_class, raw, seeds=None):
    catalog = experiments_class(raw)
    found = {name: catalog.resolve(name).digest() for name in catalog.names}
    for name in catalog.studies:
        resolved = catalog.study(name, seeds)
        for arm, by_seed in resolved.specs.items():
            found.update({f"{name}/{arm}/{seed}": spec.digest() for seed, spec in by_seed.items()})
    return found


def test_existing_digests_do_not_change(tmp_path):
    old, old_raw = _old_spec_module(tmp_path)
    before = _digests(old.Experiments, old_raw)
    assert before == _digests(Experiments, old_raw)  # this code, the old file: every digest as it was
    # The new file: experiments unchanged; studies re-use their old runs for the seeds they had,
    # except the random ones, which now draw a partition per seed on purpose.
    now = _digests(Experiments, json.loads((REPO / "experiments.json").read_text()), seeds=3)
    changed = {key for key in before if now.get(key) != before[key]}
    assert changed and all(key.startswith(("random-kernels/", "random-elements/")) for key in changed)
