"""The CNN family: a LeNet-like net, a VGG-like net with BatchNorm, a small CIFAR ResNet.

Input shape and class count come from the data. Modules are named after what they are
(`conv1`, `bn1`, `fc1`), because those names become the layer names a researcher sees
in per-layer movement charts and names in `partition.layers`.

`model_layers` groups parameters into layers the way freeze strategies think of them:
a conv or linear layer plus the per-kernel parameters that follow it (its bias, the
scale and shift of the BatchNorm right after it). Dim 0 of every such parameter
indexes the layer's kernels (output channels / output units).

`model.groups > 1` builds every layer from kernel groups (engine/grouped.py), each group
its own tensors, so a whole group can be fixed or seeded.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Literal

import torch
from torch import nn

from engine.grouped import GroupedBatchNorm2d, GroupedConv2d, GroupedLinear, Grouping
from engine.spec import ModelSpec


def _flat_size(features: nn.Module, input_shape: tuple[int, int, int]) -> int:
    # A dry forward is the least error-prone way to size the first FC layer for any input.
    with torch.no_grad():
        return features(torch.zeros(1, *input_shape)).numel()


# Every family member builds its layers through a `Grouping`: with one group (the default)
# they are plain torch modules, exactly as before kernel groups existed (old checkpoints load).
# Flattening [B, C, H, W] is channel-major, so with grouped trunks block k of the flat
# vector is trunk k's features, which is what the block-diagonal FC layers expect.


class LeNet(nn.Module):
    """Two 5x5 conv layers with max-pooling, then two FC layers (LeCun et al. 1998, widened)."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, width: int, grouping: Grouping = Grouping()
    ) -> None:
        super().__init__()
        self.width, self.grouping = width, grouping
        channels = input_shape[0]
        self.features = nn.Sequential(
            OrderedDict(
                conv1=grouping.conv(channels, width, 5, padding=2, image=True),
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv2=grouping.conv(width, 2 * width, 5, padding=2),
                relu2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),
            )
        )
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=grouping.hidden(_flat_size(self.features, input_shape), 8 * width),
                relu3=nn.ReLU(),
                fc2=grouping.head(8 * width, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grouping.logits(self.classifier(self.features(x).flatten(1)))


class VGG(nn.Module):
    """3x3 conv + BatchNorm + ReLU blocks with max-pooling (Simonyan & Zisserman 2014, small)."""

    plan = (1, "M", 2, "M", 4, 4, "M")  # channel multipliers of `width`; "M" = 2x2 max-pool

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, width: int, grouping: Grouping = Grouping()
    ) -> None:
        super().__init__()
        self.width, self.grouping = width, grouping
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, conv, pool = input_shape[0], 0, 0
        for item in self.plan:
            if item == "M":
                pool += 1
                layers[f"pool{pool}"] = nn.MaxPool2d(2)
                continue
            conv += 1
            out = int(item) * width
            # No conv bias: the BatchNorm shift that follows does its job.
            layers[f"conv{conv}"] = grouping.conv(channels, out, 3, padding=1, bias=False, image=conv == 1)
            layers[f"bn{conv}"] = grouping.norm(out)
            layers[f"relu{conv}"] = nn.ReLU()
            channels = out
        self.features = nn.Sequential(layers)
        self.classifier = nn.Sequential(
            OrderedDict(
                fc1=grouping.hidden(_flat_size(self.features, input_shape), 8 * width),
                relu=nn.ReLU(),
                fc2=grouping.head(8 * width, num_classes),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.grouping.logits(self.classifier(self.features(x).flatten(1)))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm with an identity (or 1x1 conv) shortcut (He et al. 2016)."""

    def __init__(self, channels: int, out: int, stride: int, grouping: Grouping = Grouping()) -> None:
        super().__init__()
        # Registration order is conv, bn, conv, bn, shortcut: `model_layers` relies on it.
        self.conv1 = grouping.conv(channels, out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = grouping.norm(out)
        self.conv2 = grouping.conv(out, out, 3, padding=1, bias=False)
        self.bn2 = grouping.norm(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels != out:
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=grouping.conv(channels, out, 1, stride=stride, bias=False), bn=grouping.norm(out)
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet-8: a conv stem and three stages of one BasicBlock each."""

    def __init__(
        self, input_shape: tuple[int, int, int], num_classes: int, width: int, grouping: Grouping = Grouping()
    ) -> None:
        super().__init__()
        self.width, self.grouping = width, grouping
        self.conv1 = grouping.conv(input_shape[0], width, 3, padding=1, bias=False, image=True)
        self.bn1 = grouping.norm(width)
        self.stage1 = BasicBlock(width, width, 1, grouping)
        self.stage2 = BasicBlock(width, 2 * width, 2, grouping)
        self.stage3 = BasicBlock(2 * width, 4 * width, 2, grouping)
        self.fc = grouping.head(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.grouping.logits(self.fc(x.mean(dim=(2, 3))))


FAMILY = {"lenet": LeNet, "vgg": VGG, "resnet": ResNet}


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Build on the CPU under the caller's seed, so initial weights do not depend on the device.

    `model.width` is the channel count of the first conv layer, all groups together.
    """
    grouping = Grouping(spec.groups, spec.connectivity, spec.head == "members")
    return FAMILY[spec.name](input_shape, num_classes, spec.width, grouping)


def param_count(model: nn.Module) -> int:
    """Number of parameter coordinates (trainable or fixed)."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Layer:
    """A conv or FC layer and the parameters whose dim 0 indexes its kernels.

    With kernel groups (`groups` > 1) each group's kernels are their own tensors
    (`weight_g{k}`, `bias_g{k}`, the BatchNorm's `weight_g{k}`, `bias_g{k}`): dim 0 of
    each indexes that group's kernels, and `kernels` counts all groups together.
    """

    name: str
    kind: Literal["conv", "fc"]
    kernels: int
    params: tuple[str, ...]
    groups: int = 1


_CONV = (nn.Conv2d, GroupedConv2d)
_FC = (nn.Linear, GroupedLinear)
_NORM = (nn.modules.batchnorm._BatchNorm, GroupedBatchNorm2d)


def model_layers(model: nn.Module) -> list[Layer]:
    """Group every parameter under the conv/linear layer it belongs to, in forward order."""
    layers: list[Layer] = []
    for name, module in model.named_modules():
        own = tuple(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
        if isinstance(module, _CONV + _FC):
            kind = "conv" if isinstance(module, _CONV) else "fc"
            kernels = module.out_channels if kind == "conv" else module.out_features
            layers.append(Layer(name, kind, kernels, own, module.groups if _grouped(module) else 1))
        elif isinstance(module, _NORM) and own:
            previous = layers[-1] if layers else None
            if previous is None or previous.kernels != module.num_features:
                raise ValueError(f"BatchNorm {name!r} does not follow a layer with {module.num_features} kernels")
            layers[-1] = replace(previous, params=previous.params + own)
        elif own:
            raise ValueError(f"module {name!r} has parameters but is not a conv, linear or BatchNorm layer")
    return layers


def _grouped(module: nn.Module) -> bool:
    # nn.Conv2d has a `groups` attribute too (a single weight tensor): only ours split tensors.
    return isinstance(module, (GroupedConv2d, GroupedLinear))


def per_kernel(values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """`values` (one per kernel) spread over a parameter of `shape` whose dim 0 indexes the
    layer's kernels: the one kernel grouping every kernel strategy uses (the masks of
    engine/strategies/kernel_scores.py, the Hessian's per-kernel directions in engine/hessian.py)."""
    return values.view(-1, *([1] * (len(shape) - 1))).expand(shape)
