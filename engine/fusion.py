"""Fusing K trained plain models of one family and width into one model.

Three ways, from the `fusion.mode` of a spec:

- average: no new model; `average_logits` of the members (the ensemble reference).
- mutant: one plain model of the same family at width K*w whose every layer holds the
  members' channels side by side (member k at block k) with zero weights between
  members, so at step 0 it computes exactly the average of the members' logits. Every
  layer of the family scales with `width` (LeNet/VGG fc1 = 8*width, the flatten size is
  channels x H x W, ResNet's fc takes 4*width), so the wide layers are K times the
  member's in every dim except the image channels and the class count.
- head: the members' trunks (everything but the final linear), their features
  concatenated, and one freshly initialised linear on top; trunks frozen or trained.

Pure model functions: no files, no spec resolution. Member states are state dicts as
read from checkpoints (`torch.load(..., weights_only=True)`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from engine.models import build_model
from engine.spec import ModelSpec


def final_linear_name(model: nn.Module) -> str:
    """The module name of the classifier (the last nn.Linear in registration order)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier")
    return names[-1]


def _block_dims(name: str, member: tuple[int, ...], wide: tuple[int, ...], k: int) -> list[bool]:
    """Which dims of a tensor hold the members side by side (True) and which are shared (False)."""
    if len(member) != len(wide):
        raise ValueError(f"{name}: member shape {member} and wide shape {wide} differ in rank")
    dims = []
    for m, w in zip(member, wide):
        if w == k * m and m > 0:
            dims.append(True)
        elif w == m:
            dims.append(False)
        else:
            raise ValueError(f"{name}: a dim of size {m} is {w} at width x{k}, neither equal nor {k} times")
    return dims


@torch.no_grad()
def mutant_state(
    member_states: list[dict[str, torch.Tensor]],
    model_spec: ModelSpec,
    input_shape: tuple[int, int, int],
    num_classes: int,
) -> tuple[ModelSpec, dict[str, torch.Tensor]]:
    """The spec and state dict of the wide model that computes the members' average logits.

    Every tensor of the wide model is zero except the blocks where member k's tensor goes
    (block k along every dim that scales with width): conv and linear weights become
    block-diagonal, biases and BatchNorm parameters and running statistics concatenate.
    The channel-major flatten keeps member k's channels as one contiguous block of fc1's
    inputs, so fc1 is block-diagonal too. The final linear reads all members' features:
    weight = members' weights side by side / K, bias = mean of the members' biases. As
    BatchNorm normalises each channel on its own, this holds in train mode as well.
    `num_batches_tracked` takes the largest member count (it only matters for
    BatchNorm with momentum=None).
    """
    k = len(member_states)
    if k < 1:
        raise ValueError("mutant_state needs at least one member state")
    if model_spec.groups != 1:
        raise ValueError(f"mutant_state fuses plain models (model.groups=1), got groups={model_spec.groups}")
    wide_spec = model_spec.model_copy(update={"width": k * model_spec.width})
    wide = build_model(wide_spec, input_shape, num_classes).state_dict()
    head = final_linear_name(build_model(model_spec, input_shape, num_classes))
    for i, state in enumerate(member_states):
        if set(state) != set(wide):
            missing, extra = sorted(set(wide) - set(state)), sorted(set(state) - set(wide))
            raise ValueError(f"member {i}: state dict does not match {model_spec.name}: "
                             f"missing {missing}, extra {extra}")

    fused: dict[str, torch.Tensor] = {}
    for name, template in wide.items():
        members = [state[name] for state in member_states]
        if name == f"{head}.bias":
            fused[name] = torch.stack(members).mean(0)
            continue
        if template.dim() == 0:  # num_batches_tracked
            fused[name] = torch.stack(members).max()
            continue
        dims = _block_dims(name, tuple(members[0].shape), tuple(template.shape), k)
        out = torch.zeros(template.shape, dtype=members[0].dtype, device=members[0].device)
        for i, member in enumerate(members):
            block = tuple(slice(i * s, (i + 1) * s) if scaled else slice(None) for s, scaled in zip(member.shape, dims))
            out[block] = member / k if name == f"{head}.weight" else member
        fused[name] = out
    return wide_spec, fused


@torch.no_grad()
def average_logits(models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """The ensemble reference: the mean of the members' logits (each in its current mode)."""
    return torch.stack([model(x) for model in models]).mean(0)


def _trunk(model: nn.Module) -> tuple[nn.Module, int]:
    """`model` with its final linear replaced by nn.Identity, and that linear's input size."""
    name = final_linear_name(model)
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    features = getattr(parent, attr).in_features
    setattr(parent, attr, nn.Identity())
    return model, features


class HeadFusion(nn.Module):
    """K members' trunks side by side, features concatenated, one new linear classifier.

    `train_trunks=False`: trunk parameters do not require gradients and the trunks stay
    in eval mode whatever `train()` is called with, so their BatchNorm statistics do not
    move either: a frozen trunk stays bit-identical however long the head trains.
    Built fresh (random trunks) so a checkpoint of a fused run can be loaded into it;
    `head_fusion` builds one from trained members.
    """

    def __init__(
        self,
        model_spec: ModelSpec,
        input_shape: tuple[int, int, int],
        num_classes: int,
        members: int,
        train_trunks: bool,
    ) -> None:
        super().__init__()
        trunks = [_trunk(build_model(model_spec, input_shape, num_classes)) for _ in range(members)]
        self.trunks = nn.ModuleList(trunk for trunk, _ in trunks)
        self.feature_sizes = [size for _, size in trunks]
        self.train_trunks = train_trunks
        self.head = nn.Linear(sum(self.feature_sizes), num_classes)
        if not train_trunks:
            self.trunks.requires_grad_(False)
            self.trunks.eval()

    def train(self, mode: bool = True) -> HeadFusion:
        super().train(mode)
        if not self.train_trunks:
            self.trunks.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Frozen trunks: no graph through them at all (nothing there needs a gradient).
        with torch.set_grad_enabled(self.train_trunks and torch.is_grad_enabled()):
            features = torch.cat([trunk(x) for trunk in self.trunks], 1)
        return self.head(features)


def head_fusion(
    member_states: list[dict[str, torch.Tensor]],
    model_spec: ModelSpec,
    input_shape: tuple[int, int, int],
    num_classes: int,
    train_trunks: bool,
) -> HeadFusion:
    """A HeadFusion over the trained members; the head is initialised under the caller's RNG."""
    if not member_states:
        raise ValueError("head_fusion needs at least one member state")
    fusion = HeadFusion(model_spec, input_shape, num_classes, len(member_states), train_trunks)
    head = final_linear_name(build_model(model_spec, input_shape, num_classes))
    for trunk, state in zip(fusion.trunks, member_states):
        trunk.load_state_dict({name: value for name, value in state.items() if not name.startswith(f"{head}.")})
    return fusion
