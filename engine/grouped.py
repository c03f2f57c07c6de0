"""Kernel groups: conv, BatchNorm and linear layers whose kernels are split into G groups,
each group its own parameter tensor (`weight_g0 .. weight_g{G-1}`, `bias_g{k}`).

Separate tensors are what make a group cheap to fix: `requires_grad=False` on its tensors,
and the forward computes fixed and trainable groups in separate calls, so autograd never
runs the weight-gradient kernels of a fixed group. When every group trains (or none
does), one call over the concatenated weights does the same arithmetic faster.

Two connectivities (`model.connectivity`):
- dense: one full-width model whose kernels are split; every group sees every input
  channel. With the same seed it starts from exactly the plain model's weights, split.
- grouped: G independent narrow trunks run as one grouped convolution; trunk k sees
  only trunk k's channels (the first conv sees the whole image). Hidden FC layers are
  block-diagonal, so trunks stay independent up to the head.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from engine.models import Layer

_GROUP_SUFFIX = re.compile(r"_g(\d+)$")


def split_group(name: str) -> tuple[str, int | None]:
    """A tensor name without its group suffix, and the group (`conv1.weight_g1` -> (`conv1.weight`, 1));
    a name of no group comes back as it is, with None."""
    match = _GROUP_SUFFIX.search(name)
    return (name[: match.start()], int(match.group(1))) if match else (name, None)


def group_index(param_name: str) -> int | None:
    """The kernel group a parameter name belongs to (`features.conv1.weight_g1` -> 1), else None."""
    return split_group(param_name)[1]


def group_params(layers: list[Layer]) -> dict[int, list[str]]:
    """Kernel group -> its parameter names, over every layer except the head.

    The head (the final classifier, the last layer) belongs to no group: it is never fixed
    or seeded as part of a group. A model with one group is one trunk: group 0 is every
    parameter except the head's.
    """
    trunk = layers[:-1]
    if not any(layer.groups > 1 for layer in trunk):
        return {0: [name for layer in trunk for name in layer.params]}
    members: dict[int, list[str]] = {}
    for layer in trunk:
        for name in layer.params:
            index = group_index(name)
            if index is not None:
                members.setdefault(index, []).append(name)
    return members


def _runs(weights: list[nn.Parameter], biases: list[nn.Parameter] | None) -> list[tuple[int, int]]:
    """Consecutive groups that all train or are all fixed: each run is computed in one call."""
    trains = [(w.requires_grad, biases[k].requires_grad if biases else None) for k, w in enumerate(weights)]
    runs, start = [], 0
    for k in range(1, len(trains) + 1):
        if k == len(trains) or trains[k] != trains[start]:
            runs.append((start, k))
            start = k
    return runs


def _cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0] if len(tensors) == 1 else torch.cat(tensors)


class _Groups(nn.Module):
    """Holds `weight_g{k}` / `bias_g{k}`; looks them up by name on every call, so a module
    whose parameters were replaced (`load_state_dict(assign=True)`, `.to()`) stays right."""

    groups: int

    def _register(self, prefix: str, whole: torch.Tensor | None) -> None:
        for k, chunk in enumerate(whole.chunk(self.groups) if whole is not None else ()):
            self.register_parameter(f"{prefix}_g{k}", nn.Parameter(chunk.detach().clone()))

    @property
    def _weights(self) -> list[nn.Parameter]:
        return [getattr(self, f"weight_g{k}") for k in range(self.groups)]

    @property
    def _biases(self) -> list[nn.Parameter] | None:
        return [getattr(self, f"bias_g{k}") for k in range(self.groups)] if hasattr(self, "bias_g0") else None


class GroupedConv2d(_Groups):
    """A conv layer whose output channels are split into `groups` separately held groups.

    `split_input=False`: group k's weight is [out/G, in, kh, kw] (it sees every input channel).
    `split_input=True`: [out/G, in/G, kh, kw], a grouped convolution (it sees input group k).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        groups: int,
        split_input: bool,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.groups, self.split_input, self.stride, self.padding = groups, split_input, stride, padding
        # Draw the whole layer the way nn.Conv2d would (same fan-in, same RNG use), then split:
        # a dense grouped model starts from exactly the plain model's weights for the same seed.
        fan_in_channels = in_channels // groups if split_input else in_channels
        whole = nn.Conv2d(fan_in_channels, out_channels, kernel_size, bias=bias)
        self._register("weight", whole.weight)
        self._register("bias", whole.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, biases = self._weights, self._biases
        runs = _runs(weights, biases)
        outputs = []
        in_per_group = self.in_channels // self.groups
        for start, stop in runs:
            weight = _cat(weights[start:stop])
            bias = _cat(biases[start:stop]) if biases else None
            if self.split_input:
                part = x if len(runs) == 1 else x[:, start * in_per_group : stop * in_per_group]
                outputs.append(F.conv2d(part, weight, bias, self.stride, self.padding, 1, stop - start))
            else:
                outputs.append(F.conv2d(x, weight, bias, self.stride, self.padding))
        return _cat_channels(outputs)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, groups={self.groups}, "
            f"split_input={self.split_input}, stride={self.stride}, padding={self.padding}, "
            f"bias={self._biases is not None}"
        )


def _cat_channels(outputs: list[torch.Tensor]) -> torch.Tensor:
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, 1)


class GroupedLinear(_Groups):
    """A block-diagonal linear layer: group k maps input block k [in/G] to output block k [out/G]."""

    def __init__(self, in_features: int, out_features: int, groups: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features, self.groups = in_features, out_features, groups
        whole = nn.Linear(in_features // groups, out_features, bias=bias)  # nn.Linear's init at the block's fan-in
        self._register("weight", whole.weight)
        self._register("bias", whole.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, biases = self._weights, self._biases
        in_per_group = self.in_features // self.groups
        runs = _runs(weights, biases)
        outputs = []
        for start, stop in runs:
            part = x if len(runs) == 1 else x[:, start * in_per_group : stop * in_per_group]
            if stop - start == 1:
                outputs.append(F.linear(part, weights[start], biases[start] if biases else None))
                continue
            blocks = part.reshape(len(part), stop - start, in_per_group)
            out = torch.einsum("bgi,goi->bgo", blocks, torch.stack(weights[start:stop]))
            if biases:
                out = out + torch.stack(biases[start:stop])
            outputs.append(out.flatten(1))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs, -1)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, groups={self.groups}, bias={self._biases is not None}"


class GroupedBatchNorm2d(_Groups):
    """BatchNorm2d whose scale and shift are held per group; running statistics stay whole [C].

    Normalisation is per channel, so one call over the concatenated scale and shift is
    exact; the gradient of a fixed group's scale and shift is a by-product of the input
    gradient (per-channel sums), so splitting the call would save nothing.
    """

    def __init__(self, num_features: int, groups: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.groups, self.eps, self.momentum = num_features, groups, eps, momentum
        self._register("weight", torch.ones(num_features))
        self._register("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(
            x, self.running_mean, self.running_var, torch.cat(self._weights), torch.cat(self._biases),
            self.training, self.momentum, self.eps,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return f"{self.num_features}, groups={self.groups}, eps={self.eps}, momentum={self.momentum}"


GROUPED_MODULES = (GroupedConv2d, GroupedLinear, GroupedBatchNorm2d)


@dataclass(frozen=True)
class Grouping:
    """How a family member builds its layers: plain torch modules for one group, else grouped ones."""

    groups: int = 1
    connectivity: str = "dense"  # "dense" | "grouped"
    members_head: bool = False  # one classifier per trunk, logits [B, G, classes]

    @property
    def trunks(self) -> bool:
        return self.groups > 1 and self.connectivity == "grouped"

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0, bias: bool = True,
             image: bool = False) -> nn.Module:  # fmt: skip
        """`image`: the first conv, where every trunk sees the whole input."""
        if self.groups == 1:
            return nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias)
        split = self.trunks and not image
        return GroupedConv2d(cin, cout, kernel, self.groups, split, stride=stride, padding=padding, bias=bias)

    def norm(self, channels: int) -> nn.Module:
        return nn.BatchNorm2d(channels) if self.groups == 1 else GroupedBatchNorm2d(channels, self.groups)

    def hidden(self, fin: int, fout: int) -> nn.Module:
        return GroupedLinear(fin, fout, self.groups) if self.trunks else nn.Linear(fin, fout)

    def head(self, fin: int, classes: int) -> nn.Module:
        if self.members_head and self.groups > 1:
            return GroupedLinear(fin, self.groups * classes, self.groups)
        return nn.Linear(fin, classes)

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        """The head's output as logits: [B, classes], or [B, G, classes] with one head per trunk."""
        return out.view(len(out), self.groups, -1) if self.members_head else out
