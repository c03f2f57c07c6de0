"""Elastic freezing (engine/elastic.py): the fixed coordinates train, pulled back to init."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from engine.elastic import ElasticPull
from engine.run_folder import RunFolder
from engine.train import prepare, train
from factories import tiny_spec

PARTITION = {"strategy": "random_elements", "include_fc": True, "fraction": 0.5}  # partly fixed tensors
WHOLE = {"strategy": "layers", "layers": ["features.conv1"]}  # a tensor fixed whole


def run(tmp_path, freeze, partition=PARTITION, **overrides):
    folder = RunFolder.create(tmp_path)
    train(prepare(tiny_spec(freeze=freeze, partition=partition, **overrides)), folder, experiment="t")
    tensors = [folder.load_tensors(folder.checkpoint_path(n)) for n in ("init", "final")]
    return (*tensors, folder.load_tensors(folder.masks_path)["fixed"])


def fixed_distance(init, final, fixed) -> float:
    return sum(float(((final[n] - init[n])[m] ** 2).sum()) for n, m in fixed.items()) ** 0.5


def test_rho_zero_is_the_plain_run_bit_for_bit(tmp_path):
    _, plain, _ = run(tmp_path, False)
    _, elastic, _ = run(tmp_path, {"mode": "elastic", "rho": 0})
    for name in plain:
        assert torch.equal(plain[name].view(torch.int32), elastic[name].view(torch.int32)), name


@pytest.mark.parametrize("partition", [PARTITION, WHOLE], ids=["elements", "whole-tensor"])
@pytest.mark.parametrize("optimizer", [{"name": "sgd", "momentum": 0.9}, {"name": "adamw", "lr": 0.01, "weight_decay": 0.1}])
def test_a_huge_rho_holds_fixed_coordinates_at_init(tmp_path, partition, optimizer):
    init, final, fixed = run(tmp_path, {"mode": "elastic", "rho": 1e6}, partition, optimizer=optimizer)
    assert any(m.any() for m in fixed.values())
    for name, mask in fixed.items():
        if mask.any():
            assert (final[name][mask] - init[name][mask]).abs().max() <= 1e-6, name
    assert any(not torch.equal(final[n][~m], init[n][~m]) for n, m in fixed.items() if (~m).any()), "nothing trained"


def test_a_stronger_pull_keeps_the_fixed_coordinates_closer(tmp_path):
    distances = [fixed_distance(*run(tmp_path, {"mode": "elastic", "rho": rho})) for rho in (0, 2, 10)]
    assert distances[0] > distances[1] > distances[2] > 0, distances


def test_the_pull_is_the_decoupled_rule_on_fixed_coordinates_only():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    fixed = {"weight": torch.rand(3, 4) < 0.5, "bias": torch.ones(3, dtype=torch.bool)}
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    hook = ElasticPull(model, fixed, rho=3.0)
    lr = 0.1
    state = SimpleNamespace(optimizer=torch.optim.SGD(model.parameters(), lr=lr))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))  # where an optimizer step might have taken them
    moved = {n: p.detach().clone() for n, p in model.named_parameters()}
    hook.after_optimizer_step(state)
    alpha = lr * 3.0
    for name, p in model.named_parameters():
        expected = torch.where(fixed[name], moved[name] - alpha * (moved[name] - init[name]), moved[name])
        torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
        assert torch.equal(p.detach()[~fixed[name]], moved[name][~fixed[name]])  # the subset is never pulled
    assert hook.alpha(lr=1.0) == 1.0 and hook.alpha(lr=1e-3) == pytest.approx(3e-3)  # capped at w0, never past it
