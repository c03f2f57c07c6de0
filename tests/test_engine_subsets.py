import math

import pytest
import torch

from engine.models import build_model, model_layers
from engine.spec import ModelSpec, PartitionSpec, SpecError
from engine.subsets import fixed_kernel_count, partition_masks


def model_and_layers(name="vgg", width=6):
    torch.manual_seed(0)
    model = build_model(ModelSpec(name=name, width=width), (1, 28, 28), 10)
    return dict(model.named_parameters()), model_layers(model)


def masks_for(name="vgg", width=6, **partition):
    params, layers = model_and_layers(name, width)
    return params, layers, partition_masks(params, layers, PartitionSpec(**partition))


def kernel_rows(mask):
    """Which kernels (dim 0) are fixed; asserts the mask is whole kernels."""
    rows = mask.flatten(1).all(1) if mask.dim() > 1 else mask
    assert torch.equal(mask.flatten(1).any(1) if mask.dim() > 1 else mask, rows), "mask splits a kernel"
    return rows


@pytest.mark.parametrize("model", ["lenet", "vgg", "resnet"])
def test_every_parameter_is_in_exactly_one_subset(model):
    params, _, masks = masks_for(model, strategy="random_elements", include_fc=True)
    assert set(masks["subset"]) == set(masks["fixed"]) == set(params)
    for name in params:
        assert torch.equal(masks["subset"][name], ~masks["fixed"][name])
        assert masks["fixed"][name].shape == params[name].shape


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75, 0.3])
def test_first_kernels_fixes_the_first_ceil_fraction_kernels_of_each_conv(fraction):
    params, layers, masks = masks_for("vgg", width=10, strategy="first_kernels", fraction=fraction)
    for layer in layers:
        for name in layer.params:
            rows = kernel_rows(masks["fixed"][name])
            if layer.kind == "fc":
                assert not rows.any()  # include_fc false: FC layers wholly in subset
                continue
            count = math.ceil(round(fraction * layer.kernels, 9))
            assert rows[:count].all() and not rows[count:].any()
    # per-kernel parameters go with their kernel: conv weight and BatchNorm scale/shift agree
    conv = masks["fixed"]["features.conv1.weight"].flatten(1).all(1)
    assert torch.equal(conv, masks["fixed"]["features.bn1.weight"])
    assert torch.equal(conv, masks["fixed"]["features.bn1.bias"])


def test_kernel_count_is_not_fooled_by_floating_point():
    assert fixed_kernel_count(0.3, 10) == 3  # 0.3 * 10 == 3.0000000000000004
    assert fixed_kernel_count(0.5, 7) == 4
    assert fixed_kernel_count(0.0, 7) == 0 and fixed_kernel_count(1.0, 7) == 7


def test_include_fc_partitions_fc_layers_by_output_unit():
    params, layers, masks = masks_for("lenet", strategy="first_kernels", include_fc=True)
    fc1 = next(layer for layer in layers if layer.name == "classifier.fc1")
    rows = kernel_rows(masks["fixed"]["classifier.fc1.weight"])
    assert rows.sum() == math.ceil(fc1.kernels / 2)
    assert torch.equal(rows, masks["fixed"]["classifier.fc1.bias"])


def test_random_kernels_same_count_seeded_and_reproducible():
    _, layers, a = masks_for(strategy="random_kernels", seed=1)
    _, _, b = masks_for(strategy="random_kernels", seed=1)
    _, _, c = masks_for(strategy="random_kernels", seed=2)
    _, _, first = masks_for(strategy="first_kernels")
    for name in a["fixed"]:
        assert torch.equal(a["fixed"][name], b["fixed"][name])
        assert a["fixed"][name].sum() == first["fixed"][name].sum()
        kernel_rows(a["fixed"][name])
    assert any(not torch.equal(a["fixed"][n], c["fixed"][n]) for n in a["fixed"])
    assert any(not torch.equal(a["fixed"][n], first["fixed"][n]) for n in a["fixed"])


def test_random_elements_fix_about_fraction_of_each_partitioned_layer():
    params, layers, masks = masks_for(strategy="random_elements", fraction=0.25, include_fc=False)
    conv = masks["fixed"]["features.conv3.weight"]
    assert 0.2 < conv.float().mean() < 0.3
    assert not masks["fixed"]["classifier.fc1.weight"].any()
    again = masks_for(strategy="random_elements", fraction=0.25)[2]
    assert all(torch.equal(masks["fixed"][n], again["fixed"][n]) for n in params)


def test_layers_fixes_whole_named_layers():
    _, _, masks = masks_for(strategy="layers", layers=["features.conv2"])
    assert masks["fixed"]["features.conv2.weight"].all() and masks["fixed"]["features.bn2.bias"].all()
    assert not masks["fixed"]["features.conv1.weight"].any()


def test_layers_rejects_unknown_names_and_fc_without_include_fc():
    with pytest.raises(SpecError, match="unknown layer 'conv9'.*features.conv1"):
        masks_for(strategy="layers", layers=["conv9"])
    with pytest.raises(SpecError, match="include_fc"):
        masks_for(strategy="layers", layers=["classifier.fc1"])


def test_none_fixes_nothing():
    _, _, masks = masks_for(strategy="none")
    assert not any(m.any() for m in masks["fixed"].values())
