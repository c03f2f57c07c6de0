import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.fusion import HeadFusion, average_logits, head_fusion, mutant_state
from engine.models import build_model
from engine.spec import ModelSpec

SHAPES = {"lenet": (1, 28, 28), "vgg": (1, 28, 28), "resnet": (3, 8, 8)}
CLASSES = 5
WIDTH = 2


def members(name: str, k: int) -> list[nn.Module]:
    """K independently initialised members whose BatchNorms hold non-trivial parameters and statistics."""
    models = []
    for seed in range(k):
        torch.manual_seed(seed)
        model = build_model(ModelSpec(name=name, width=WIDTH), SHAPES[name], CLASSES)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.5, 0.5)
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 2.0)
                    module.num_batches_tracked.fill_(seed + 1)
        models.append(model)
    return models


def wide_model(name: str, models: list[nn.Module]) -> nn.Module:
    states = [m.state_dict() for m in models]
    spec, state = mutant_state(states, ModelSpec(name=name, width=WIDTH), SHAPES[name], CLASSES)
    assert spec.width == len(models) * WIDTH
    model = build_model(spec, SHAPES[name], CLASSES)
    model.load_state_dict(state)  # strict: every key and shape matches the wide plain model
    return model


@pytest.mark.parametrize("name", ["lenet", "vgg", "resnet"])
@pytest.mark.parametrize("k", [1, 3])
def test_mutant_computes_the_members_average_in_eval_mode(name, k):
    models = members(name, k)
    mutant = wide_model(name, models)
    for model in [*models, mutant]:
        model.eval()
    x = torch.randn(6, *SHAPES[name])
    expected = average_logits(models, x)
    with torch.no_grad():
        got = mutant(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The members really differ, so agreeing with their average is not agreeing with one of them.
    if k > 1:
        assert not torch.allclose(models[0](x), expected, atol=1e-3)


@pytest.mark.parametrize("name", ["vgg", "resnet"])
def test_mutant_matches_in_train_mode_and_updates_running_stats_per_member(name):
    models = members(name, 3)
    mutant = wide_model(name, models)
    for model in [*models, mutant]:
        model.train()
    x = torch.randn(8, *SHAPES[name])
    expected = average_logits(models, x)  # batch statistics, and each BatchNorm's running stats move
    with torch.no_grad():
        got = mutant(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    bns = [n for n, m in mutant.named_modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        member_mean = torch.cat([m.get_submodule(bn).running_mean for m in models])
        torch.testing.assert_close(mutant.get_submodule(bn).running_mean, member_mean, rtol=1e-5, atol=1e-6)


def test_mutant_is_block_diagonal_and_fc1_reads_each_members_channels_as_one_block():
    models = members("lenet", 2)
    states = [m.state_dict() for m in models]
    _, state = mutant_state(states, ModelSpec(name="lenet", width=WIDTH), (1, 28, 28), CLASSES)
    conv2 = state["features.conv2.weight"]  # [2 * 2w, 2w, 5, 5]
    assert torch.equal(conv2[: 2 * WIDTH, WIDTH:], torch.zeros_like(conv2[: 2 * WIDTH, WIDTH:]))
    assert torch.equal(conv2[2 * WIDTH :, WIDTH:], models[1].features.conv2.weight)
    fc1 = state["classifier.fc1.weight"]  # member k: rows [k*8w, (k+1)*8w), cols [k*2w*49, (k+1)*2w*49)
    inputs = 2 * WIDTH * 7 * 7
    assert torch.equal(fc1[8 * WIDTH :, inputs:], models[1].classifier.fc1.weight)
    assert not fc1[: 8 * WIDTH, inputs:].any() and not fc1[8 * WIDTH :, :inputs].any()


def test_mutant_rejects_members_of_another_family():
    lenet, vgg = members("lenet", 1)[0], members("vgg", 1)[0]
    with pytest.raises(ValueError, match="does not match"):
        mutant_state([lenet.state_dict(), vgg.state_dict()], ModelSpec(name="lenet", width=WIDTH), (1, 28, 28), CLASSES)


def sgd_steps(model: nn.Module, shape, steps: int = 3, all_params: bool = False) -> None:
    params = [p for p in model.parameters() if p.requires_grad or all_params]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    model.train()
    for step in range(steps):
        torch.manual_seed(100 + step)
        x, y = torch.randn(8, *shape), torch.randint(0, CLASSES, (8,))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("all_params", [False, True], ids=["trainable-params", "all-params"])
@pytest.mark.parametrize("name", ["lenet", "vgg", "resnet"])
def test_head_fusion_frozen_trunks_stay_bit_identical(name, all_params):
    models = members(name, 2)
    fusion = head_fusion([m.state_dict() for m in models], ModelSpec(name=name, width=WIDTH), SHAPES[name], CLASSES,
                         train_trunks=False)
    trunks_before = {k: v.clone() for k, v in fusion.trunks.state_dict().items()}
    head_before = fusion.head.weight.detach().clone()
    # all_params: an optimizer (with weight decay) over every parameter must not move the trunks either.
    sgd_steps(fusion, SHAPES[name], all_params=all_params)
    assert fusion.training and not any(t.training for t in fusion.trunks.modules())
    for key, value in fusion.trunks.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(value, trunks_before[key]), key
    assert not torch.equal(fusion.head.weight, head_before)  # the head did train


def test_head_fusion_trunks_train_when_asked():
    models = members("vgg", 2)
    fusion = head_fusion([m.state_dict() for m in models], ModelSpec(name="vgg", width=WIDTH), SHAPES["vgg"], CLASSES,
                         train_trunks=True)
    before = fusion.trunks[0].features.conv1.weight.detach().clone()
    sgd_steps(fusion, SHAPES["vgg"])
    assert not torch.equal(fusion.trunks[0].features.conv1.weight, before)


@pytest.mark.parametrize("name", ["lenet", "vgg", "resnet"])
def test_head_fusion_loads_member_trunks_and_has_a_new_head(name):
    models = members(name, 3)
    torch.manual_seed(7)
    fusion = head_fusion([m.state_dict() for m in models], ModelSpec(name=name, width=WIDTH), SHAPES[name], CLASSES,
                         train_trunks=False)
    x = torch.randn(4, *SHAPES[name])
    assert fusion(x).shape == (4, CLASSES)
    member_head = "fc" if name == "resnet" else "classifier.fc2"
    features = models[0].get_submodule(member_head).in_features
    assert fusion.head.in_features == 3 * features
    fusion.eval()
    for i, (trunk, model) in enumerate(zip(fusion.trunks, models)):
        assert isinstance(trunk.get_submodule(member_head), nn.Identity)
        model.eval()
        # Trunk features through the member's own final linear give back the member's logits.
        with torch.no_grad():
            torch.testing.assert_close(model.get_submodule(member_head)(trunk(x)), model(x))
        old = model.get_submodule(member_head).weight
        block = fusion.head.weight[:, i * features : (i + 1) * features]
        assert not torch.allclose(block, old) and not torch.allclose(block, old / 3)
    # Fresh from the caller's RNG: the same seed gives the same head, a new one a different head.
    torch.manual_seed(7)
    again = head_fusion([m.state_dict() for m in models], ModelSpec(name=name, width=WIDTH), SHAPES[name], CLASSES,
                        train_trunks=False)
    assert torch.equal(again.head.weight, fusion.head.weight)
    # A fused run's checkpoint loads into a freshly built HeadFusion (resume, evaluation).
    fresh = HeadFusion(ModelSpec(name=name, width=WIDTH), SHAPES[name], CLASSES, 3, train_trunks=False)
    fresh.load_state_dict(fusion.state_dict())
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), fusion(x))
