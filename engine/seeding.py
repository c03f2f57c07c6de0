"""Seeded groups: kernel groups whose initial values do not come from the run's seed.

A seeded group starts from the same values in every run of a study (drawn with
`seeding.seed`, or copied from another run's checkpoint), while the other groups and the
head vary with the run's seed. The head is never seeded: it belongs to no group.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.grouped import group_params
from engine.models import build_model, model_layers
from engine.spec import ModelSpec, SpecError


def seed_groups(model: nn.Module, source_state: dict[str, torch.Tensor], groups: list[int]) -> None:
    """Copy every tensor of `groups` (all layers but the head) from `source_state` into `model`."""
    members = group_params(model_layers(model))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for group in groups:
            if group not in members:
                raise SpecError(f"seeding.groups: this model has no kernel group {group} (it has 0..{len(members) - 1})")
            for name in members[group]:
                param = params[name]
                if name not in source_state:
                    raise SpecError(f"seeding: the source has no tensor {name!r} (shape {tuple(param.shape)} here)")
                value = source_state[name]
                if value.shape != param.shape:
                    raise SpecError(
                        f"seeding: {name!r} is {tuple(value.shape)} in the source but {tuple(param.shape)} in this model"
                    )
                param.copy_(value)


def seeded_source(
    model_spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int, seed: int
) -> dict[str, torch.Tensor]:
    """The state dict of the same construction drawn with `seed`, leaving the caller's RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(model_spec, input_shape, num_classes).state_dict()
