"""Kernel strategies: a *kernel ranking* per layer, and one path that fixes its top k.

A ranking lists a layer's kernels, the first to fix first: `first_kernels` is arange,
`random_kernels` a permutation drawn with partition.seed; a score-based strategy (e.g.
Hessian) ranks by `argsort(score, descending=True)`. Every ranking then fixes the same
count per layer, with each kernel's bias and BatchNorm scale/shift going with it.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from engine.choices import PARTITIONS
from engine.models import Layer, per_kernel
from engine.spec import PartitionSpec
from engine.strategies import partitioned_layers

KernelRanking = Callable[[Layer, torch.Generator], torch.Tensor]


def fixed_kernel_count(fraction: float, kernels: int) -> int:
    # Round before the ceiling: 0.3 * 10 is 3.0000000000000004 in floating point, not 4 kernels.
    return math.ceil(round(fraction * kernels, 9))


def fix_top_kernels(ranking: KernelRanking):
    """The strategy that fixes the first `fraction` of each partitioned layer's kernels by `ranking`."""

    def fixed(params: dict[str, torch.Tensor], layers: list[Layer], spec: PartitionSpec, generator: torch.Generator):
        masks = {}
        for layer in partitioned_layers(layers, spec):
            kernels = torch.zeros(layer.kernels, dtype=torch.bool)
            kernels[ranking(layer, generator)[: fixed_kernel_count(spec.fraction, layer.kernels)]] = True
            for name in layer.params:
                masks[name] = per_kernel(kernels, params[name].shape).clone()
        return masks

    return fixed


PARTITIONS.implement("first_kernels", fix_top_kernels(lambda layer, generator: torch.arange(layer.kernels)))
PARTITIONS.implement(
    "random_kernels", fix_top_kernels(lambda layer, generator: torch.randperm(layer.kernels, generator=generator))
)
