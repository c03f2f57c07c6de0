"""`random_elements`: each coordinate of a partitioned layer is fixed with probability `fraction`."""

from __future__ import annotations

import torch

from engine.choices import PARTITIONS
from engine.models import Layer
from engine.spec import PartitionSpec
from engine.strategies import partitioned_layers


def random_elements(params: dict[str, torch.Tensor], layers: list[Layer], spec: PartitionSpec, generator: torch.Generator):
    return {
        name: torch.rand(params[name].shape, generator=generator) < spec.fraction
        for layer in partitioned_layers(layers, spec)
        for name in layer.params
    }


PARTITIONS.implement("random_elements", random_elements)
