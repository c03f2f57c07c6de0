import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from engine.freezing import Freezer
from engine.grouped import GroupedBatchNorm2d, GroupedConv2d, GroupedLinear
from engine.models import build_model, model_layers, param_count
from engine.spec import ModelSpec, PartitionSpec, SpecError
from engine.subsets import partition_masks

FAMILIES = ["lenet", "vgg", "resnet"]
SHAPE = (3, 16, 16)
CLASSES = 10
HEADS = {"lenet": "classifier.fc2", "vgg": "classifier.fc2", "resnet": "fc"}


def build(name, seed=0, width=4, **grouping):
    torch.manual_seed(seed)
    return build_model(ModelSpec(name=name, width=width, **grouping), SHAPE, CLASSES)


def images(n=6, seed=0):
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


# Fingerprints of the models as built before kernel groups existed (seed 0, width 4, SHAPE):
# old checkpoints and paired studies rely on one group building exactly these.
BEFORE_GROUPS = {"lenet": (8, 1243.487175), "vgg": (28, 8221.029159), "resnet": (56, 16560.765154)}


@pytest.mark.parametrize("name", FAMILIES)
def test_one_group_builds_todays_model(name):
    model = build(name)
    state = model.state_dict()
    keys, checksum = BEFORE_GROUPS[name]
    assert len(state) == keys
    assert all(not k.endswith(("_g0", "_g1")) for k in state)
    assert not any(isinstance(m, (GroupedConv2d, GroupedLinear, GroupedBatchNorm2d)) for m in model.modules())
    found = sum(float(v.double().abs().sum()) * (i + 1) for i, v in enumerate(state.values()))
    assert round(found, 6) == checksum
    assert model.width == 4


def split_into(dense, plain_state):
    """Load a plain model's weights into a dense grouped model, kernels split into its groups."""
    state = {}
    for key in dense.state_dict():
        base, _, group = key.rpartition("_g")
        if group.isdigit():
            groups = sum(1 for k in dense.state_dict() if k.startswith(base + "_g"))
            state[key] = plain_state[base].chunk(groups)[int(group)]
        else:
            state[key] = plain_state[key]
    dense.load_state_dict(state)


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("groups", [2, 4])
def test_dense_groups_compute_what_the_plain_model_computes(name, groups):
    plain = build(name, seed=0, width=8)
    dense = build(name, seed=1, width=8, groups=groups)
    assert param_count(dense) == param_count(plain)
    split_into(dense, plain.state_dict())
    x = images()
    for mode in (True, False):  # batch statistics, then running statistics
        plain.train(mode), dense.train(mode)
        torch.testing.assert_close(dense(x), plain(x), rtol=1e-5, atol=1e-5)
    buffers = dict(plain.named_buffers())  # running statistics updated alike
    for key, value in dense.named_buffers():
        torch.testing.assert_close(value, buffers[key])


@pytest.mark.parametrize("name", FAMILIES)
def test_dense_groups_start_from_the_plain_models_weights_split(name):
    plain, dense = build(name, seed=3).state_dict(), build(name, seed=3, groups=2).state_dict()
    assert torch.equal(dense[f"{HEADS[name]}.weight"], plain[f"{HEADS[name]}.weight"])
    conv = "features.conv2" if name != "resnet" else "stage2.conv1"
    assert torch.equal(torch.cat([dense[f"{conv}.weight_g0"], dense[f"{conv}.weight_g1"]]), plain[f"{conv}.weight"])


@pytest.mark.parametrize("name", FAMILIES)
def test_grouped_layers_hold_one_tensor_per_group(name):
    model = build(name, groups=2, connectivity="grouped")
    params = dict(model.named_parameters())
    first = "features.conv1" if name != "resnet" else "conv1"
    later = "features.conv2" if name != "resnet" else "stage2.conv1"
    assert params[f"{first}.weight_g1"].shape[:2] == (2, 3)  # the image: every trunk sees all its channels
    assert params[f"{later}.weight_g1"].shape[:2] == (params[f"{later}.weight_g1"].shape[0], 2)  # own group's input
    dense = dict(build(name, groups=2).named_parameters())
    assert dense[f"{later}.weight_g1"].shape[1] == 4  # dense: all input channels
    if name != "resnet":
        assert params["classifier.fc1.weight_g0"].shape == (16, params["classifier.fc1.weight_g0"].shape[1])
        assert isinstance(dict(model.named_modules())["classifier.fc2"], nn.Linear)  # joint head
    else:
        assert params["stage2.shortcut.conv.weight_g0"].shape == (4, 2, 1, 1)
    state = model.state_dict()
    bn = "features.bn1" if name == "vgg" else "bn1"
    if name != "lenet":
        assert state[f"{bn}.weight_g0"].shape == (2,) and state[f"{bn}.running_mean"].shape == (4,)


@pytest.mark.parametrize("name", FAMILIES)
def test_members_head_gives_each_trunk_its_own_logits(name):
    model = build(name, groups=2, connectivity="grouped", head="members")
    assert model(images()).shape == (6, 2, CLASSES)
    assert build(name, groups=2, connectivity="grouped")(images()).shape == (6, CLASSES)
    head = dict(model.named_parameters())[f"{HEADS[name]}.weight_g1"]
    assert head.shape[0] == CLASSES


@pytest.mark.parametrize("name", FAMILIES)
def test_grouped_trunks_are_independent(name):
    model = build(name, groups=2, connectivity="grouped", head="members")
    x = images()
    before = model(x).detach()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("_g1"):
                param.add_(torch.randn_like(param))
    after = model(x).detach()
    assert torch.equal(after[:, 0], before[:, 0])  # trunk 0 never sees trunk 1's weights
    assert not torch.allclose(after[:, 1], before[:, 1])


@pytest.mark.parametrize("name", FAMILIES)
def test_model_layers_gather_every_groups_tensors(name):
    model = build(name, width=8, groups=4, connectivity="grouped", head="members")
    layers = {layer.name: layer for layer in model_layers(model)}
    conv = "features.conv2" if name != "resnet" else "stage2.conv1"
    assert layers[conv].kernels == 16 and layers[conv].groups == 4 and layers[conv].kind == "conv"
    expected = {f"{conv}.weight_g{k}" for k in range(4)}
    if name == "lenet":
        expected |= {f"{conv}.bias_g{k}" for k in range(4)}
    else:
        bn = "features.bn2" if name == "vgg" else "stage2.bn1"
        expected |= {f"{bn}.{p}_g{k}" for p in ("weight", "bias") for k in range(4)}
    assert set(layers[conv].params) == expected
    assert layers[HEADS[name]].kernels == 4 * CLASSES
    every = {p for layer in layers.values() for p in layer.params}
    assert every == set(dict(model.named_parameters()))


def test_grouped_trunks_have_fewer_conv_params_than_dense_groups():
    for name in FAMILIES:
        dense, grouped = build(name, width=8, groups=2), build(name, width=8, groups=2, connectivity="grouped")

        def conv_params(model):
            return sum(p.numel() for m in model.modules() if isinstance(m, GroupedConv2d) for p in m.parameters())

        assert conv_params(grouped) < conv_params(dense)
        assert param_count(grouped) < param_count(dense) == param_count(build(name, width=8))


def group_partition(model, groups):
    layers = model_layers(model)
    return layers, partition_masks(dict(model.named_parameters()), layers, PartitionSpec(strategy="groups", groups=groups))


@pytest.mark.parametrize("connectivity", ["dense", "grouped"])
def test_groups_strategy_fixes_the_groups_tensors_but_never_the_head(connectivity):
    head = "members" if connectivity == "grouped" else "joint"
    model = build("vgg", width=8, groups=4, connectivity=connectivity, head=head)
    _, masks = group_partition(model, [1, 3])
    fixed = {name for name, mask in masks["fixed"].items() if mask.any()}
    assert all(masks["fixed"][name].all() for name in fixed)  # whole tensors only
    expected = {
        name for name, _ in model.named_parameters()
        if name.endswith(("_g1", "_g3")) and not name.startswith("classifier.fc2")
        and (connectivity == "grouped" or not name.startswith("classifier"))
    }  # fmt: skip
    assert fixed == expected
    assert "features.conv1.weight_g1" in fixed and "features.bn4.bias_g3" in fixed
    assert ("classifier.fc1.weight_g3" in fixed) == (connectivity == "grouped")
    none = partition_masks(dict(model.named_parameters()), model_layers(model), PartitionSpec(strategy="none"))
    assert not any(mask.any() for mask in none["fixed"].values())


def test_kernel_strategies_refuse_kernel_groups():
    model = build("vgg", groups=2)
    with pytest.raises(SpecError, match="kernel groups"):
        partition_masks(dict(model.named_parameters()), model_layers(model), PartitionSpec(strategy="first_kernels"))
    with pytest.raises(SpecError, match="0..1"):
        group_partition(model, [2])


class ConvBackwardCalls(TorchDispatchMode):
    """Records the weight of every conv backward that computes a weight gradient."""

    def __init__(self):
        super().__init__()
        self.weight_grads = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default and args[-1][1]:
            self.weight_grads.append(tuple(args[2].shape))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("connectivity", ["dense", "grouped"])
def test_fixed_groups_get_no_weight_gradient_computed(name, connectivity):
    model = build(name, width=8, groups=4, connectivity=connectivity)
    layers, masks = group_partition(model, [1, 2])
    freezer = Freezer(model, layers, masks["fixed"])
    assert not any("forward" in vars(m) for m in model.modules())  # no split-forward patched on group modules
    params = dict(model.named_parameters())
    trainable_conv = sum(
        params[f"{layer.name}.weight_g{k}"].numel() for layer in layers if layer.kind == "conv" for k in (0, 3)
    )
    with ConvBackwardCalls() as calls:
        model(images()).sum().backward()
    computed = sum(torch.Size(shape).numel() for shape in calls.weight_grads)
    assert computed == trainable_conv  # one concatenated conv would have computed the fixed groups' too
    assert all(params[n].grad is None for n, m in masks["fixed"].items() if m.any())
    assert all(p.grad is not None for p in freezer.trainable())


def test_fixed_group_of_a_plain_one_group_model_is_its_whole_trunk():
    model = build("lenet")
    _, masks = group_partition(model, [0])
    assert {n for n, m in masks["fixed"].items() if m.any()} == {
        "features.conv1.weight", "features.conv1.bias", "features.conv2.weight", "features.conv2.bias",
        "classifier.fc1.weight", "classifier.fc1.bias",
    }  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("connectivity", ["dense", "grouped"])
def test_fixed_groups_stay_bit_identical_through_momentum_and_weight_decay(name, connectivity):
    head = "members" if connectivity == "grouped" else "joint"
    model = build(name, width=8, groups=4, connectivity=connectivity, head=head)
    layers, masks = group_partition(model, [0, 2])
    init = {n: p.detach().clone() for n, p in model.named_parameters()}
    freezer = Freezer(model, layers, masks["fixed"])
    optimizer = torch.optim.SGD(freezer.trainable(), lr=0.1, momentum=0.9, weight_decay=0.05)
    labels = torch.arange(6) % CLASSES
    for step in range(4):
        logits = model(images(seed=step))
        loss = nn.functional.cross_entropy(logits.flatten(0, -2), labels.repeat_interleave(logits.numel() // 6 // CLASSES))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        freezer.restore()
    params = dict(model.named_parameters())
    for n, mask in masks["fixed"].items():
        if mask.any():
            assert torch.equal(params[n].detach().view(torch.int32), init[n].view(torch.int32)), n
        else:
            assert not torch.equal(params[n].detach(), init[n]), f"{n} did not train"


class MatmulOutputs(TorchDispatchMode):
    """Records the shape of every matrix product (where a linear layer's weight gradient comes from)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.ops.aten.mm.default, torch.ops.aten.bmm.default):
            self.shapes.append(tuple(out.shape))
        return out


@pytest.mark.parametrize("fixed", [[1, 2], [0]])
def test_fixed_groups_of_a_hidden_fc_layer_get_no_weight_gradient_computed(fixed):
    model = build("vgg", width=8, groups=4, connectivity="grouped")
    layers, masks = group_partition(model, fixed)
    Freezer(model, layers, masks["fixed"])
    block = tuple(dict(model.named_parameters())["classifier.fc1.weight_g0"].shape)
    loss = model(images()).sum()
    with MatmulOutputs() as products:
        loss.backward()
    # a weight gradient is a product shaped like the weight block (or its transpose), one per trainable group
    grads = sum(torch.Size(s).numel() for s in products.shapes if s[-2:] in (block, block[::-1]))
    assert grads == (4 - len(fixed)) * block[0] * block[1]
