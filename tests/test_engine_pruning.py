import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.fusion import mutant_state
from engine.models import build_model
from engine.pruning import channel_scores, plan_pruning, prune_channels, prune_step, shrink_to_state, widths
from engine.spec import ModelSpec, PruneSpec, SpecError

SHAPE = (1, 28, 28)
CLASSES = 5


def model_with_dead_channels(name: str, width: int = 4) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A model where every conv layer's odd channels have exactly zero outgoing effect.

    VGG: the BatchNorm scale and shift of those channels are zero (its output is 0 whatever
    the batch statistics). LeNet (no BatchNorm): the kernel and bias are zero.
    """
    torch.manual_seed(0)
    model = build_model(ModelSpec(name=name, width=width), SHAPE, CLASSES)
    dead = {}
    with torch.no_grad():
        for conv_name, conv in model.named_modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            odd = torch.arange(1, conv.out_channels, 2)
            dead[conv_name] = odd
            if name == "vgg":
                bn = model.get_submodule(conv_name.replace("conv", "bn"))
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight[odd] = 0
                bn.bias[odd] = 0
            else:
                conv.weight[odd] = 0
                conv.bias[odd] = 0
    return model, dead


@pytest.mark.parametrize("name, criterion", [("vgg", "bn_scale"), ("lenet", "channel_norm"), ("lenet", "bn_scale")])
def test_pruning_channels_with_zero_effect_keeps_the_function(name, criterion):
    model, dead = model_with_dead_channels(name)
    x = torch.randn(8, *SHAPE)
    model.train()
    with torch.no_grad():
        before_train = model(x)  # batch statistics; moves the running stats, so it goes first here and last below
    model.eval()
    with torch.no_grad():
        before_eval = model(x)
    initial = widths(model)

    keep = plan_pruning(model, criterion, 0.5, {})
    for layer, kept in keep.items():  # exactly the dead channels go (lowest scores)
        assert torch.equal(kept, torch.arange(0, initial[layer], 2)), layer
    report = prune_channels(model, keep)

    assert report["widths"] == {layer: width // 2 for layer, width in initial.items()}
    assert report["params_after"] == sum(p.numel() for p in model.parameters()) < report["params_before"]
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), before_eval, rtol=1e-5, atol=1e-5)
    model.train()
    with torch.no_grad():
        torch.testing.assert_close(model(x), before_train, rtol=1e-5, atol=1e-5)
    # The rebuilt model is a plain model of smaller widths: fc1 reads channels x H x W of the last conv.
    last = list(initial)[-1]
    assert model.classifier.fc1.in_features % report["widths"][last] == 0


def test_scores_follow_the_criterion():
    model, _ = model_with_dead_channels("vgg")
    bn_scores = channel_scores(model, "bn_scale")
    torch.testing.assert_close(bn_scores["features.conv2"], model.features.bn2.weight.detach().abs())
    norm_scores = channel_scores(model, "channel_norm")
    conv2 = model.features.conv2.weight.detach()
    torch.testing.assert_close(norm_scores["features.conv2"], conv2.flatten(1).norm(dim=1))
    lenet = build_model(ModelSpec(name="lenet", width=4), SHAPE, CLASSES)
    conv1 = lenet.features.conv1
    expected = torch.cat([conv1.weight.detach().flatten(1), conv1.bias.detach()[:, None]], 1).norm(dim=1)
    torch.testing.assert_close(channel_scores(lenet, "channel_norm")["features.conv1"], expected)
    # LeNet has no BatchNorm: bn_scale falls back to the channel norm.
    torch.testing.assert_close(channel_scores(lenet, "bn_scale")["features.conv1"], expected)
    with pytest.raises(SpecError, match="criterion"):
        channel_scores(lenet, "magnitude")


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int) -> float:
    model.train()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = torch.randn(8, *SHAPE, generator=generator), torch.randint(0, CLASSES, (8,), generator=generator)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    return loss.item()


OPTIMIZERS = {
    "sgd-nesterov": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("optimizer_name", OPTIMIZERS)
@pytest.mark.parametrize("name", ["lenet", "vgg"])
def test_prune_step_carries_the_optimizer_state_over_to_the_kept_channels(name, optimizer_name):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name=name, width=4), SHAPE, CLASSES)
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    train_steps(model, optimizer, 3, seed=1)
    initial = widths(model)
    old_state = {n: {k: v.clone() for k, v in optimizer.state[p].items()} for n, p in model.named_parameters()}
    spec = PruneSpec(every=1, fraction=0.5, criterion="bn_scale", min_fraction=0.25)
    keep = plan_pruning(model, "bn_scale", 0.5, {})

    new_optimizer, report = prune_step(model, optimizer, spec, initial)

    assert type(new_optimizer) is type(optimizer)
    for key in ("lr", "momentum", "nesterov", "weight_decay", "betas", "eps", "decoupled_weight_decay"):
        if key in optimizer.param_groups[0]:
            assert new_optimizer.param_groups[0][key] == optimizer.param_groups[0][key], key
    params = dict(model.named_parameters())
    assert [id(p) for p in new_optimizer.param_groups[0]["params"]] == [id(p) for p in params.values()]
    assert report["widths"] == {layer: width // 2 for layer, width in initial.items()}
    conv2_kept, conv1_kept = keep["features.conv2"], keep["features.conv1"]
    new_state = new_optimizer.state[params["features.conv2.weight"]]
    for key, old in old_state["features.conv2.weight"].items():
        if old.dim() == 0:  # Adam's step count goes on
            assert torch.equal(new_state[key], old)
        else:  # momentum_buffer, exp_avg, exp_avg_sq: the kept kernels' entries, kept inputs only
            assert torch.equal(new_state[key], old[conv2_kept][:, conv1_kept]), key
    assert torch.equal(new_optimizer.state[params["classifier.fc2.weight"]][next(iter(new_state))],
                       old_state["classifier.fc2.weight"][next(iter(new_state))])

    before = {n: p.detach().clone() for n, p in params.items()}
    loss = train_steps(model, new_optimizer, 2, seed=2)
    assert math.isfinite(loss)
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_prune_step_stops_at_min_fraction():
    torch.manual_seed(0)
    model = build_model(ModelSpec(name="vgg", width=4), SHAPE, CLASSES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    initial = widths(model)  # conv1..conv4: 4, 8, 16, 16
    spec = PruneSpec(every=1, fraction=0.5, min_fraction=0.3)
    for _ in range(4):
        optimizer, report = prune_step(model, optimizer, spec, initial)
    assert widths(model) == {layer: math.ceil(0.3 * width) for layer, width in initial.items()}
    train_steps(model, optimizer, 1, seed=3)
    # min_channels never lets a layer reach zero either.
    assert all(len(kept) >= 1 for kept in plan_pruning(model, "channel_norm", 0.99, {}).values())


@pytest.mark.parametrize("name", ["lenet", "vgg"])
def test_shrink_to_state_loads_a_pruned_checkpoint(name):
    model, _ = model_with_dead_channels(name, width=6)
    keep = plan_pruning(model, "channel_norm", 0.3, {})
    prune_channels(model, keep)
    state = model.state_dict()
    fresh = build_model(ModelSpec(name=name, width=6), SHAPE, CLASSES)
    with pytest.raises(RuntimeError):
        fresh.load_state_dict(state)
    shrink_to_state(fresh, state)
    assert widths(fresh) == widths(model)
    x = torch.randn(4, *SHAPE)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_resnet_is_refused():
    model = build_model(ModelSpec(name="resnet", width=4), (3, 8, 8), CLASSES)
    message = "channel pruning supports lenet and vgg, not resnet"
    with pytest.raises(SpecError, match=message):
        plan_pruning(model, "bn_scale", 0.5, {})
    with pytest.raises(SpecError, match=message):
        widths(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SpecError, match=message):
        prune_step(model, optimizer, PruneSpec(every=1), {})


def test_a_pruned_mutant_trains():
    states = []
    for seed in range(2):
        torch.manual_seed(seed)
        states.append(build_model(ModelSpec(name="vgg", width=2), SHAPE, CLASSES).state_dict())
    wide_spec, state = mutant_state(states, ModelSpec(name="vgg", width=2), SHAPE, CLASSES)
    mutant = build_model(wide_spec, SHAPE, CLASSES)
    mutant.load_state_dict(state)
    optimizer = torch.optim.SGD(mutant.parameters(), lr=0.05, momentum=0.9)
    train_steps(mutant, optimizer, 2, seed=4)
    initial = widths(mutant)
    optimizer, report = prune_step(mutant, optimizer, PruneSpec(every=1, fraction=0.5), initial)
    assert report["widths"] == {layer: width // 2 for layer, width in initial.items()}
    assert math.isfinite(train_steps(mutant, optimizer, 2, seed=5))
