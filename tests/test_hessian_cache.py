"""The Hessian measurement is computed once per study: a content-addressed cache in the logs
dir shared by the arms and strategies that measure the same thing, never trusted when damaged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import engine.strategies.hessian as strategy
from engine.hessian_cache import CACHE_DIR
from engine.train import prepare
from test_hessian import hessian_spec


@pytest.fixture
def computations(monkeypatch):
    """How many times the Gauss-Newton pass (the costly part of every measurement) ran."""
    calls = []
    real = strategy.gauss_newton

    def counted(probe, layers):
        calls.append(len(layers))
        return real(probe, layers)

    monkeypatch.setattr(strategy, "gauss_newton", counted)
    return calls


def layers_of(prep) -> dict:
    return prep.files["hessian.pt"]["layers"]


def assert_same_measurement(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for name in a:
        for quantity in ("S", "saliency"):
            assert torch.equal(a[name][quantity], b[name][quantity]), (name, quantity)


def test_arms_and_strategies_share_one_computation(tmp_path, computations):
    logs = tmp_path / "logs"
    uncached = prepare(hessian_spec())  # no logs dir: computed, not cached
    assert len(computations) == 1
    frozen = prepare(hessian_spec(freeze=True), runs_dir=logs)
    reference = prepare(hessian_spec(), runs_dir=logs)
    couple = prepare(hessian_spec(partition__hessian__objective="couple"), runs_dir=logs)
    obd = prepare(hessian_spec(strategy="obd", partition__hessian__fix="high"), runs_dir=logs)
    assert len(computations) == 2  # the uncached one, then one for the four runs of the logs dir
    assert len(list((logs / CACHE_DIR).glob("*.pt"))) == 1
    for prep in (frozen, reference, couple, obd):
        assert_same_measurement(layers_of(prep), layers_of(uncached))  # bit for bit, with or without the cache
    assert torch.equal(frozen.masks["fixed"]["features.conv2.weight"], reference.masks["fixed"]["features.conv2.weight"])
    # each run's own record still has its own choice
    assert not all(torch.equal(layers_of(couple)[n]["fixed"], layers_of(reference)[n]["fixed"]) for n in layers_of(couple))
    # other weights (another seed) or other examples are another measurement
    prepare(hessian_spec(seed=1), runs_dir=logs)
    prepare(hessian_spec(partition__hessian__samples=30), runs_dir=logs)
    assert len(computations) == 4 and len(list((logs / CACHE_DIR).glob("*.pt"))) == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong shapes"])
def test_a_damaged_cache_file_is_recomputed(damage, tmp_path, computations):
    logs = tmp_path / "logs"
    first = prepare(hessian_spec(), runs_dir=logs)
    (path,) = (logs / CACHE_DIR).glob("*.pt")
    if damage == "garbage":
        path.write_bytes(b"not a torch file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        saved = torch.load(path, weights_only=True)
        saved["layers"]["features.conv1"]["S"] = saved["layers"]["features.conv1"]["S"][:1]
        torch.save(saved, path)
    again = prepare(hessian_spec(), runs_dir=logs)
    assert len(computations) == 2
    assert_same_measurement(layers_of(again), layers_of(first))
    prepare(hessian_spec(), runs_dir=logs)  # the recomputation replaced the damaged file
    assert len(computations) == 2


STARTER = """
import sys
import engine.strategies.hessian as strategy
from engine.train import prepare
from test_hessian import hessian_spec

real = strategy.gauss_newton

def counted(probe, layers):
    with open(sys.argv[2], "a") as marks:
        marks.write("computed\\n")
    return real(probe, layers)

strategy.gauss_newton = counted
prepare(hessian_spec(freeze=sys.argv[3] == "frozen"), runs_dir=sys.argv[1])
"""


def test_two_runs_starting_together_compute_once(tmp_path):
    """Two processes (the arms of a pair) preparing at once: one computes, the other waits for
    the lock and reads what it wrote."""
    logs, marks = tmp_path / "logs", tmp_path / "computed.txt"
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests), os.environ.get("PYTHONPATH", "")])}
    starts = [
        subprocess.Popen([sys.executable, "-c", STARTER, str(logs), str(marks), arm], env=env)
        for arm in ("frozen", "reference")
    ]
    assert [start.wait() for start in starts] == [0, 0]
    assert marks.read_text().splitlines() == ["computed"]
    assert len(list((logs / CACHE_DIR).glob("*.pt"))) == 1
