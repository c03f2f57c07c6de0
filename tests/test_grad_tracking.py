"""The `grad` of a movement record is the norm of that step's loss gradient on each subset
and layer: checked against a separate forward/backward of the same batch from the same weights."""

import pytest
import torch

from engine.events import iter_events
from engine.models import model_layers
from engine.run_folder import RunFolder
from engine.train import BatchOrder, prepare, train, training_loss
from factories import tiny_spec

STEPS, EVERY = 12, 5  # records at 0, 5, 10 and the last step, 12 (not a multiple of EVERY)


def independent_grads(spec, folder: RunFolder, step: int) -> dict[str, torch.Tensor]:
    """The gradient of step `step`: a fresh, unfrozen model loaded with the weights after
    step - 1, on the batch that step drew."""
    prep = prepare(spec)
    prep.model.load_state_dict(folder.load_tensors(folder.checkpoint_path(f"step_{step - 1:06d}")))
    order = BatchOrder(len(prep.data.train_y), spec.data.batch_size, spec.seed, prep.device)
    for _ in range(step):
        index = order.next()
    loss = training_loss(prep.model(prep.data.train_x[index]), prep.data.train_y[index])
    loss.backward()
    return {name: p.grad.double() for name, p in prep.model.named_parameters()}


def masked_norm(grads, masks, names, zero) -> float:
    """||g|| over the masked coordinates of `names`; `zero(name)`: that tensor's fixed
    gradients were never computed in the frozen run, so they count as 0."""
    total = sum(float((grads[n][masks[n]] ** 2).sum()) for n in names if not zero(n))
    return total**0.5


@pytest.mark.parametrize("freeze", [False, True])
@pytest.mark.parametrize("strategy", ["first_kernels", "random_elements"])  # tracker: views / gathered order
def test_recorded_grad_equals_an_independent_backward(tmp_path, freeze, strategy):
    spec = tiny_spec(
        freeze=freeze,
        partition={"strategy": strategy, "fraction": 0.5},
        train={"steps": STEPS, "eval_every": 0},
        track={"every": EVERY},
        checkpoint={"every": 1},  # the weights before every step, for the independent backward
    )
    prep = prepare(spec)
    folder = RunFolder.create(tmp_path)
    train(prep, folder, experiment="t")
    masks = folder.load_tensors(folder.masks_path)
    records = {r["step"]: r for r in iter_events(folder.events_path, "movement")}
    assert sorted(records) == [0, 5, 10, 12]
    assert "grad" not in records[0]["subsets"]["subset"]  # no gradient before the first step

    # Whole-kernel freezing never computes the fixed kernels' gradients (they count as 0);
    # coordinate-wise freezing computes them and restores the weights after the step.
    never_computed = freeze and strategy == "first_kernels"
    layers = model_layers(prep.model)
    for step in (5, 10, 12):
        grads = independent_grads(spec, folder, step)
        for subset in ("subset", "fixed"):
            zero = (lambda name: never_computed) if subset == "fixed" else (lambda name: False)
            names = [n for layer in layers for n in layer.params]
            got = records[step]["subsets"][subset]
            expected = masked_norm(grads, masks[subset], names, zero)
            assert got["grad"] == pytest.approx(expected, rel=1e-4, abs=1e-7), (step, subset)
            for layer in layers:
                if layer.name in got["layers"]:
                    expected = masked_norm(grads, masks[subset], layer.params, zero)
                    assert got["layers"][layer.name]["grad"] == pytest.approx(expected, rel=1e-4, abs=1e-7)
        assert records[step]["subsets"]["subset"]["grad"] > 0
        if not never_computed:
            assert records[step]["subsets"]["fixed"]["grad"] > 0
