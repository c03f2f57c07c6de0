"""Ensembles: every implementation trains its members exactly as K independent plain models would."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import engine.ensemble as ensemble
from engine.ensemble import (
    IMPLEMENTATIONS,
    build_ensemble,
    ensemble_logits,
    ensemble_loss,
    load_members,
    member_states,
    pick_implementation,
)
from engine.models import build_model
from engine.spec import ModelSpec

MEMBERS = 3
CLASSES = 5
# Tiny models on small inputs: vgg has BatchNorm after every conv, resnet BatchNorm and 1x1 shortcuts.
FAMILY = {"lenet": (1, 12, 12), "vgg": (3, 8, 8), "resnet": (3, 8, 8)}
TOL = dict(rtol=1e-5, atol=1e-6)


def batch(shape: tuple[int, int, int], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(8, *shape, generator=generator), torch.randint(CLASSES, (8,), generator=generator)


def sgd(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-3)


def independent_training(spec: ModelSpec, shape, steps: int = 2):
    """The reference: K plain models built in order from seed 0, each trained alone on the same batches."""
    torch.manual_seed(0)
    models = [build_model(spec, shape, CLASSES) for _ in range(MEMBERS)]
    logits, losses = [], []
    for model in models:
        optimizer = sgd(model.parameters())
        for step in range(steps):
            x, y = batch(shape, seed=step)
            optimizer.zero_grad()
            out = model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            optimizer.step()
            if step == 0:
                logits.append(out.detach())
                losses.append(loss.detach())
    return torch.stack(logits, dim=1), torch.stack(losses).sum(), [m.state_dict() for m in models], models


def ensemble_training(spec: ModelSpec, shape, implementation: str, steps: int = 2):
    torch.manual_seed(0)
    model = build_ensemble(spec, shape, CLASSES, MEMBERS, implementation)
    optimizer = sgd(model.parameters())
    for step in range(steps):
        x, y = batch(shape, seed=step)
        optimizer.zero_grad()
        out = model(x)
        loss = ensemble_loss(out, y)
        loss.backward()
        optimizer.step()
        if step == 0:
            first_logits, first_loss = out.detach(), loss.detach()
    return first_logits, first_loss, model


def assert_states_close(actual: list[dict], expected: list[dict]) -> None:
    assert len(actual) == len(expected)
    for k, (a, e) in enumerate(zip(actual, expected)):
        assert a.keys() == e.keys()
        for name in e:
            assert torch.allclose(a[name].double(), e[name].double(), **TOL), f"member {k} {name}"


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_implementations_train_like_independent_models(name: str, implementation: str) -> None:
    shape, spec = FAMILY[name], ModelSpec(name=name, width=4)
    logits, loss, states, models = independent_training(spec, shape)
    got_logits, got_loss, model = ensemble_training(spec, shape, implementation)

    assert got_logits.shape == (8, MEMBERS, CLASSES)
    assert torch.allclose(got_logits, logits, **TOL)
    assert torch.allclose(got_loss, loss, **TOL)
    # Weights after two SGD-with-momentum steps, BatchNorm running stats and batch counts.
    assert_states_close(member_states(model), states)
    if name != "lenet":
        moved = states[0][next(n for n in states[0] if n.endswith("running_mean"))]
        assert moved.abs().sum() > 0  # the running stats really were updated, so the check above bites

    # Eval mode uses those running stats.
    x, _ = batch(shape, seed=5)
    model.eval()
    with torch.no_grad():
        expected = torch.stack([m.eval()(x) for m in models], dim=1)
        assert torch.allclose(model(x), expected, **TOL)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_same_initial_weights_and_caller_rng_for_every_implementation(implementation: str) -> None:
    spec, shape = ModelSpec(name="vgg", width=4), FAMILY["vgg"]
    torch.manual_seed(0)
    reference = member_states(build_ensemble(spec, shape, CLASSES, MEMBERS, "sequential"))
    after_reference = torch.rand(3)
    torch.manual_seed(0)
    model = build_ensemble(spec, shape, CLASSES, MEMBERS, implementation)
    assert torch.equal(torch.rand(3), after_reference)
    assert_states_close(member_states(model), reference)
    assert reference[0]["features.conv1.weight"].ne(reference[1]["features.conv1.weight"]).any()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_member_states_load_members_round_trip(implementation: str) -> None:
    spec, shape = ModelSpec(name="resnet", width=4), FAMILY["resnet"]
    _, _, trained = ensemble_training(spec, shape, implementation, steps=1)  # BatchNorm stats moved off their init
    states = member_states(trained)
    for state in states:  # each is a plain model's state dict
        build_model(spec, shape, CLASSES).load_state_dict(state)

    torch.manual_seed(123)
    fresh = build_ensemble(spec, shape, CLASSES, MEMBERS, implementation)
    assert not torch.equal(member_states(fresh)[0]["conv1.weight"], states[0]["conv1.weight"])
    load_members(fresh, states)
    assert_states_close(member_states(fresh), states)
    x, _ = batch(shape)
    trained.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), trained(x))


def test_members_move_between_implementations() -> None:
    spec, shape = ModelSpec(name="vgg", width=4), FAMILY["vgg"]
    _, _, grouped = ensemble_training(spec, shape, "grouped", steps=1)
    vmapped = build_ensemble(spec, shape, CLASSES, MEMBERS, "vmap")
    load_members(vmapped, member_states(grouped))
    x, _ = batch(shape)
    grouped.eval(), vmapped.eval()
    with torch.no_grad():
        assert torch.allclose(vmapped(x), grouped(x), **TOL)
    with pytest.raises(ValueError):
        load_members(vmapped, member_states(grouped)[:2])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_one_member_ensemble_predicts_like_the_plain_model(implementation: str) -> None:
    spec, shape = ModelSpec(name="vgg", width=4), FAMILY["vgg"]
    x, _ = batch(shape)
    torch.manual_seed(0)
    plain = build_model(spec, shape, CLASSES)
    torch.manual_seed(0)
    model = build_ensemble(spec, shape, CLASSES, 1, implementation)
    assert torch.allclose(ensemble_logits(model(x)), plain(x), **TOL)


def test_loss_sums_member_means_and_prediction_averages() -> None:
    logits = torch.randn(6, 4, CLASSES)
    labels = torch.randint(CLASSES, (6,))
    expected = sum(F.cross_entropy(logits[:, k], labels) for k in range(4))
    assert torch.allclose(ensemble_loss(logits, labels), expected)
    assert torch.allclose(ensemble_logits(logits), sum(logits[:, k] for k in range(4)) / 4)


def test_grouped_members_need_plain_specs() -> None:
    with pytest.raises(ValueError, match="groups"):
        build_ensemble(ModelSpec(name="lenet", width=4, groups=2), (1, 12, 12), CLASSES, 2, "sequential")
    with pytest.raises(ValueError, match="implementation"):
        build_ensemble(ModelSpec(name="lenet", width=4), (1, 12, 12), CLASSES, 2, "auto")


def test_pick_implementation_returns_the_fastest_measured() -> None:
    spec = ModelSpec(name="lenet", width=4)
    picked, times = pick_implementation(spec, (1, 12, 12), CLASSES, 2, 8, "cpu", ["vmap", "grouped"], steps=2, repeats=1, warmup=1)
    assert set(times) == {"sequential", "vmap", "grouped"}  # sequential is always a candidate
    assert all(seconds > 0 for seconds in times.values())
    assert picked == min(times, key=times.__getitem__)


def test_pick_implementation_skips_one_that_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real = ensemble.build_ensemble

    def vmap_unsupported(*args):
        if args[-1] == "vmap":
            raise RuntimeError("vmap: no batching rule on this device")
        return real(*args)

    monkeypatch.setattr(ensemble, "build_ensemble", vmap_unsupported)
    picked, times = pick_implementation(ModelSpec(name="lenet", width=4), (1, 12, 12), CLASSES, 2, 8, "cpu", ["vmap"], steps=1, repeats=1, warmup=1)
    assert picked == "sequential" and set(times) == {"sequential"}
