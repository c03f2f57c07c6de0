"""Strategies that fix whole tensors: `layers` (named layers), `groups` (kernel groups), `none`."""

from __future__ import annotations

import torch

from engine.choices import PARTITIONS
from engine.grouped import group_params
from engine.models import Layer
from engine.spec import PartitionSpec, SpecError
from engine.strategies import partitioned_layers


def fixed_layers(params: dict[str, torch.Tensor], layers: list[Layer], spec: PartitionSpec, generator: torch.Generator):
    by_name = {layer.name: layer for layer in layers}
    for name in spec.layers:
        if name not in by_name:
            raise SpecError(f"partition.layers: unknown layer {name!r}; this model's layers are {', '.join(by_name)}")
        if by_name[name].kind == "fc" and not spec.include_fc:
            raise SpecError(
                f"partition.layers names FC layer {name!r} but partition.include_fc is false; "
                "set partition.include_fc=true to fix FC layers"
            )
    return {
        name: torch.ones(params[name].shape, dtype=torch.bool)
        for layer in partitioned_layers(layers, spec)
        if layer.name in spec.layers
        for name in layer.params
    }


def fixed_groups(params: dict[str, torch.Tensor], layers: list[Layer], spec: PartitionSpec, generator: torch.Generator):
    """Fixes its groups' tensors whole, FC ones too (include_fc does not apply), but never the
    head's: the classifier before the softmax always trains."""
    members = group_params(layers)
    bad = [k for k in spec.groups if k not in members]
    if bad:
        raise SpecError(f"partition.groups {bad}: this model's kernel groups are 0..{len(members) - 1}")
    tensors = {name for k in spec.groups for name in members[k]}
    return {name: torch.ones(params[name].shape, dtype=torch.bool) for name in tensors}


PARTITIONS.implement("layers", fixed_layers)
PARTITIONS.implement("groups", fixed_groups)
PARTITIONS.implement("none", lambda params, layers, spec, generator: {})
