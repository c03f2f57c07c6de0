"""Hessian-guided partitions: the HVP-built quantities against the full Hessian, the splits
against random ones, and what reaches the run folder (tiny models on the 8x8 digits)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from engine.hessian_summary import cross_interaction
from engine.kernel_split import split_kernels
from engine.models import model_layers
from engine.run_folder import RunFolder
from engine.spec import SpecError
from engine.train import prepare, train
from factories import tiny_spec

SAMPLES, BATCH = 40, 16  # 40 examples in 3 batches: the per-batch sums must add up to the mean


def hessian_spec(model: str = "lenet", strategy: str = "hessian_interaction", **overrides):
    settings = dict(
        data__name="digits", model__name=model, model__width=2, partition__strategy=strategy,
        partition__include_fc=True, partition__hessian__samples=SAMPLES, partition__hessian__batch_size=BATCH,
        train__steps=4, train__eval_every=0, track__every=2,
    )
    return tiny_spec(**{**settings, **overrides})


def full_hessian(prep, model=None, only=None) -> tuple[torch.Tensor, list[str], dict[str, slice]]:
    """torch.autograd.functional.hessian of the mean loss over every parameter (float64, eval
    mode), or over the parameters of the layers `only` (the same blocks, fewer to compute)."""
    model = copy.deepcopy(model or prep.model).double().eval().requires_grad_(False)
    keep = {n for layer in model_layers(model) if only is None or layer.name in only for n in layer.params}
    names = [n for n, _ in model.named_parameters() if n in keep]
    params = dict(model.named_parameters())
    x = prep.data.train_x[:SAMPLES].double()
    y = prep.data.train_y[:SAMPLES]
    offsets, start = {}, 0
    for n in names:
        offsets[n] = slice(start, start + params[n].numel())
        start += params[n].numel()

    def loss(flat):
        values = {n: flat[offsets[n]].view(params[n].shape) for n in names}
        return F.cross_entropy(functional_call(model, values, (x,)), y)

    flat = torch.cat([params[n].reshape(-1) for n in names])
    return torch.autograd.functional.hessian(loss, flat, vectorize=True), names, offsets


def indicators(prep, layer, offsets, size) -> torch.Tensor:
    """1_k for every kernel k of `layer`: its rows along dim 0 of each of the layer's tensors."""
    params = dict(prep.model.named_parameters())
    rows = torch.zeros(layer.kernels, size, dtype=torch.float64)
    for k in range(layer.kernels):
        for name in layer.params:
            block = torch.zeros(params[name].shape, dtype=torch.float64)
            block[k] = 1
            rows[k, offsets[name]] = block.reshape(-1)
    return rows


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def lenet():
    prep = prepare(hessian_spec())
    return prep, full_hessian(prep)


@pytest.mark.parametrize("model", ["lenet", "vgg"])
def test_interaction_and_saliency_equal_the_full_hessian(model, lenet):
    """S = block sums of H, OBD = 1/2 w^T H w per kernel (conv and FC layers; vgg: BatchNorm
    in eval mode, its scale and shift in the kernel's block)."""
    prep, (h, names, offsets) = lenet if model == "lenet" else (None, (None, None, None))
    layers = model_layers(prep.model) if prep else []
    if prep is None:  # vgg: its first two conv layers (with their BatchNorms) against their Hessian block
        prep = prepare(hessian_spec(model))
        layers = model_layers(prep.model)[:2]
        h, names, offsets = full_hessian(prep, only=[layer.name for layer in layers])
    record = prep.files["hessian.pt"]
    params = dict(prep.model.named_parameters())
    weights = torch.cat([params[n].detach().double().reshape(-1) for n in names])
    assert {layer.kind for layer in model_layers(prep.model)} == {"conv", "fc"}
    assert set(record["layers"]) == {layer.name for layer in model_layers(prep.model)}
    for layer in layers:
        ones = indicators(prep, layer, offsets, len(weights))
        measured = record["layers"][layer.name]
        assert measured["S"].dtype == torch.float64
        assert relative(measured["S"], ones @ h @ ones.T) < 1e-8, layer.name
        masked = ones * weights  # w restricted to C_k, one row per kernel
        obd = 0.5 * torch.einsum("ka,ab,kb->k", masked, h, masked)
        assert relative(measured["saliency"], obd) < 1e-8, layer.name
    if model == "vgg":
        assert any("bn" in name for layer in layers for name in layer.params)


def test_per_coordinate_sums_equal_the_full_hessian(lenet):
    """A = sums of |H| blocks and the diagonal OBD form, within the coordinate budget."""
    full_prep, (h, names, offsets) = lenet
    prep = prepare(hessian_spec(partition__hessian__matrix="absolute", partition__hessian__saliency="diagonal"))
    weights = torch.cat([p.detach().double().reshape(-1) for p in prep.model.parameters()])
    for layer in model_layers(prep.model):
        ones = indicators(prep, layer, offsets, len(weights))
        measured = prep.files["hessian.pt"]["layers"][layer.name]
        assert relative(measured["A"], ones @ h.abs() @ ones.T) < 1e-8, layer.name
        diagonal = 0.5 * ones @ (h.diagonal() * weights**2)
        assert relative(measured["saliency"], diagonal) < 1e-8, layer.name
        # the signed sums are the same as without the per-coordinate pass
        assert torch.equal(measured["S"], full_prep.files["hessian.pt"]["layers"][layer.name]["S"])


def test_split_beats_a_thousand_random_splits(lenet):
    prep, _ = lenet
    generator = np.random.default_rng(0)
    checked = 0
    for name, record in prep.files["hessian.pt"]["layers"].items():
        weights = record["S"].abs().numpy()
        kernels = len(weights)
        if kernels < 4:
            continue
        count = math.ceil(kernels / 2)
        randoms = []
        for _ in range(1000):
            fixed = np.zeros(kernels, bool)
            fixed[generator.permutation(kernels)[:count]] = True
            randoms.append(cross_interaction(weights, fixed))
        decoupled = split_kernels(weights, count, "decouple")
        coupled = split_kernels(weights, count, "couple")
        assert decoupled.sum() == count == coupled.sum()
        assert cross_interaction(weights, decoupled) <= min(randoms) + 1e-12, name
        assert cross_interaction(weights, coupled) >= max(randoms) - 1e-12, name
        checked += 1
    assert checked >= 2  # conv2 (4 kernels), fc1 (16), fc2 (10)


def test_the_run_uses_the_split_it_records(lenet):
    prep, _ = lenet
    fixed = prep.masks["fixed"]
    for layer in model_layers(prep.model):
        chosen = prep.files["hessian.pt"]["layers"][layer.name]["fixed"]
        assert int(chosen.sum()) == math.ceil(layer.kernels / 2)
        for name in layer.params:
            assert torch.equal(fixed[name].reshape(layer.kernels, -1).all(1), chosen), name
            assert torch.equal(fixed[name].reshape(layer.kernels, -1).any(1), chosen), name
    summary = prep.notes["hessian"]["layers"]["classifier.fc1"]
    assert summary["fixed_kernels"] == 8 and summary["kernels"] == 16 and 0 < summary["cross_share"] < 1


@pytest.mark.parametrize("strategy", ["hessian_interaction", "obd"])
def test_masks_identical_across_arms_and_computations(strategy, lenet):
    frozen = prepare(hessian_spec(strategy=strategy, freeze=True))
    again = prepare(hessian_spec(strategy=strategy, freeze=True))
    reference = lenet[0] if strategy == "hessian_interaction" else prepare(hessian_spec(strategy=strategy))
    for other in (again, reference):
        for subset in ("subset", "fixed"):
            for name, mask in frozen.masks[subset].items():
                assert torch.equal(mask, other.masks[subset][name]), (subset, name)
        for name, record in frozen.files["hessian.pt"]["layers"].items():
            assert torch.equal(record["S"], other.files["hessian.pt"]["layers"][name]["S"])


def test_obd_fixes_the_lowest_or_highest_saliency():
    for end in ("low", "high"):
        prep = prepare(hessian_spec(strategy="obd", partition__hessian__fix=end))
        for name, record in prep.files["hessian.pt"]["layers"].items():
            saliency, fixed = record["saliency"], record["fixed"]
            if end == "low":
                assert saliency[fixed].max() <= saliency[~fixed].min(), name
            else:
                assert saliency[fixed].min() >= saliency[~fixed].max(), name


def test_hessian_at_another_runs_checkpoint(tmp_path, lenet):
    """At a run's `init` checkpoint (same seed): the run's own S, bit for bit; at its final
    weights: another S, the Hessian of the trained model."""
    logs = tmp_path / "logs"
    folder = RunFolder.create(logs)
    train(prepare(hessian_spec(strategy="first_kernels")), folder, experiment="source")
    at_init = prepare(hessian_spec(partition__hessian__at={"run": folder.run_id, "checkpoint": "init"}), runs_dir=logs)
    at_final = prepare(hessian_spec(partition__hessian__at={"run": folder.run_id}), runs_dir=logs)
    own = lenet[0].files["hessian.pt"]["layers"]
    assert at_final.files["hessian.pt"]["at"] == {"run": folder.run_id, "checkpoint": "final"}
    for name, record in at_init.files["hessian.pt"]["layers"].items():
        assert torch.equal(record["S"], own[name]["S"]), name
    final_state = folder.load_tensors(folder.checkpoint_path("final"))
    model = copy.deepcopy(lenet[0].model)
    model.load_state_dict(final_state)
    layer = model_layers(model)[1]
    h, names, offsets = full_hessian(lenet[0], model, only=[layer.name])
    ones = indicators(lenet[0], layer, offsets, h.shape[0])
    measured = at_final.files["hessian.pt"]["layers"][layer.name]["S"]
    assert relative(measured, ones @ h @ ones.T) < 1e-8
    assert not torch.equal(measured, own[layer.name]["S"])


def test_hessian_pt_in_the_run_folder(tmp_path):
    folder = RunFolder.create(tmp_path / "logs")
    prep = prepare(hessian_spec(strategy="obd"))
    train(prep, folder, experiment="t")
    saved = folder.load_tensors(folder.path / "hessian.pt")  # weights_only: readable by anyone's torch.load
    assert saved["samples"] == SAMPLES and saved["at"] == "init" and saved["strategy"] == "obd"
    assert torch.equal(saved["layers"]["features.conv2"]["S"], prep.files["hessian.pt"]["layers"]["features.conv2"]["S"])


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        ({"model__width": 1}, ["'features.conv1' has 1 kernel", "model.width"]),
        ({"partition__hessian__matrix": "absolute", "partition__hessian__budget": 100},
         ["'features.conv2' has 204 coordinates", "budget 100"]),
        ({"partition__hessian__samples": 100_000}, ["100,000", "training examples"]),
        ({"partition__hessian__at": {"run": "nosuchrun"}}, ["no run 'nosuchrun'"]),
    ],
)
def test_bad_hessian_settings_are_one_sentence(overrides, fragments, tmp_path):
    with pytest.raises(SpecError) as caught:
        prepare(hessian_spec(**overrides), runs_dir=tmp_path)
    message = str(caught.value)
    assert "\n" not in message and all(f in message for f in fragments), message


def test_default_hessian_settings_leave_digests_alone():
    spec = tiny_spec()
    assert "hessian" not in str(spec.model_dump(mode="json", exclude={"partition": {"hessian"}}))
    changed = tiny_spec(partition__hessian__samples=10)
    assert changed.digest() != spec.digest()
    # a spec written before partition.hessian existed (no such key) has the same digest as now
    raw = spec.model_dump(mode="json")
    del raw["partition"]["hessian"]
    assert type(spec).model_validate(raw).digest() == spec.digest()
