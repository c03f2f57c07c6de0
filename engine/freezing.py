"""Exact freezing: fixed coordinates keep their initial values bit for bit.

Masking the gradient is not enough: weight decay, momentum and Adam's moments still move
a coordinate whose gradient is zero. So freezing works at three levels:

1. A parameter fixed whole gets `requires_grad=False` and stays out of the optimizer:
   autograd never computes its gradient and nothing can move it.
2. A layer whose fixed part is whole kernels computes those kernels' outputs from a
   detached copy of their weights, so the weight-gradient kernels only run for the
   trainable kernels (the saving that matters on a GPU).
3. After every optimizer step, every fixed coordinate of a partly fixed parameter is
   copied back from its initial value (`index_copy_` with indices built once: no
   host sync, exact whatever the optimizer did).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.models import Layer


def _whole_kernels(fixed: dict[str, torch.Tensor], layer: Layer) -> torch.Tensor | None:
    """The layer's fixed kernels if its fixed coordinates are exactly whole kernels, else None."""
    kernels = fixed[layer.params[0]].flatten(1).all(dim=1)
    for name in layer.params:
        mask = fixed[name].flatten(1) if fixed[name].dim() > 1 else fixed[name].unsqueeze(1)
        if not torch.equal(mask, kernels.unsqueeze(1).expand_as(mask)):
            return None
    return kernels


def _split_forward(module: nn.Module, kernels: torch.Tensor):
    """A forward for a conv/linear layer that never asks autograd for its fixed kernels' gradients."""
    device = module.weight.device  # the model is already on its device: index tensors live there too
    fixed_idx = kernels.nonzero().flatten()
    train_idx = (~kernels).nonzero().flatten()
    # Outputs come back as [fixed | trainable]; undo that order unless it already is the original.
    order = torch.cat([fixed_idx, train_idx])
    restore = None if torch.equal(order, torch.arange(len(order))) else torch.argsort(order).to(device)
    fixed_idx, train_idx = fixed_idx.to(device), train_idx.to(device)
    is_conv = isinstance(module, nn.Conv2d)
    channel_dim = 1 if is_conv else -1

    def pieces(tensor: torch.Tensor | None):
        if tensor is None:
            return None, None
        return tensor.detach().index_select(0, fixed_idx), tensor.index_select(0, train_idx)

    def forward(x: torch.Tensor) -> torch.Tensor:
        w_fixed, w_train = pieces(module.weight)
        b_fixed, b_train = pieces(module.bias)
        if is_conv:
            out = torch.cat([module._conv_forward(x, w_fixed, b_fixed), module._conv_forward(x, w_train, b_train)], 1)
        else:
            out = torch.cat([F.linear(x, w_fixed, b_fixed), F.linear(x, w_train, b_train)], -1)
        if restore is not None:
            out = out.index_select(channel_dim, restore)
        return out

    return forward


class Freezer:
    """Applies a `fixed` mask to a model so that the masked coordinates never change."""

    def __init__(self, model: nn.Module, layers: list[Layer], fixed: dict[str, torch.Tensor]) -> None:
        """`model` must already be on its training device."""
        self.model = model
        self._frozen: list[torch.Tensor] = []  # parameters this freezer took out of training
        self._split: list[nn.Module] = []  # modules whose forward it replaced
        params = dict(model.named_parameters())
        modules = dict(model.named_modules())
        self._restore: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (param, flat idx, values)
        for layer in layers:
            if not any(fixed[name].any() for name in layer.params):
                continue
            # A layer of kernel groups is fixed a whole group tensor at a time (level 1), and its
            # own forward already computes fixed and trainable groups in separate calls.
            kernels = _whole_kernels(fixed, layer) if layer.groups == 1 else None
            if kernels is not None and not kernels.all():
                # Must be an instance attribute: nn.Module.__call__ looks up self.forward.
                modules[layer.name].forward = _split_forward(modules[layer.name], kernels)
                self._split.append(modules[layer.name])
            for name in layer.params:
                param = params[name]
                mask = fixed[name].to(param.device)
                if mask.all():
                    if param.requires_grad:  # not one fixed by construction (a fused trunk)
                        self._frozen.append(param)
                    param.requires_grad_(False)
                elif mask.any():
                    index = mask.flatten().nonzero().flatten()
                    self._restore.append((param, index, param.detach().flatten()[index].clone()))

    def trainable(self) -> list[torch.Tensor]:
        """The parameters the optimizer should see."""
        return trainable(self.model)

    def release(self) -> None:
        """Undo levels 1 and 2 (before freezing other coordinates: the masks changed)."""
        for param in self._frozen:
            param.requires_grad_(True)
        for module in self._split:
            del module.forward  # back to the class's forward
        self._frozen, self._split, self._restore = [], [], []

    @torch.no_grad()
    def restore(self) -> None:
        """Copy fixed coordinates back after an optimizer step (call after every step)."""
        for param, index, values in self._restore:
            param.view(-1).index_copy_(0, index, values)


def trainable(model: nn.Module) -> list[torch.Tensor]:
    """The parameters an optimizer should see: not those fixed whole by freezing or by construction."""
    return [p for p in model.parameters() if p.requires_grad]
