"""Freeze strategies: a partition spec -> named boolean masks over the model's parameters.

A partition splits every trainable coordinate into `subset` (always trains) and `fixed`
(frozen when the spec says `freeze`). Masks are built on the CPU with their own seeded
generator, so the same spec gives the same masks on any device, and two runs that differ
only in `freeze` track exactly the same coordinates.
"""

from __future__ import annotations

import math

import torch

from engine.grouped import group_params
from engine.models import Layer
from engine.spec import PartitionSpec, SpecError
from engine.vocabulary import SUBSETS  # noqa: F401  (re-exported: engine code imports it from here)

Masks = dict[str, dict[str, torch.Tensor]]  # {"subset": {param: bool}, "fixed": {param: bool}}


def fixed_kernel_count(fraction: float, kernels: int) -> int:
    # Round before the ceiling: 0.3 * 10 is 3.0000000000000004 in floating point, not 4 kernels.
    return math.ceil(round(fraction * kernels, 9))


def _kernel_mask(layer: Layer, spec: PartitionSpec, generator: torch.Generator) -> torch.Tensor:
    count = fixed_kernel_count(spec.fraction, layer.kernels)
    fixed = torch.zeros(layer.kernels, dtype=torch.bool)
    if spec.strategy == "first_kernels":
        fixed[:count] = True
    else:  # random_kernels: the same count per layer, drawn with partition.seed
        fixed[torch.randperm(layer.kernels, generator=generator)[:count]] = True
    return fixed


def _check_layer_names(layers: list[Layer], spec: PartitionSpec) -> None:
    by_name = {layer.name: layer for layer in layers}
    for name in spec.layers:
        if name not in by_name:
            raise SpecError(f"partition.layers: unknown layer {name!r}; this model's layers are {', '.join(by_name)}")
        if by_name[name].kind == "fc" and not spec.include_fc:
            raise SpecError(
                f"partition.layers names FC layer {name!r} but partition.include_fc is false; "
                "set partition.include_fc=true to fix FC layers"
            )


def _group_tensors(layers: list[Layer], spec: PartitionSpec) -> set[str]:
    """The `groups` strategy fixes its groups' tensors whole, FC ones too (include_fc does not apply),
    but never the head's: the classifier before the softmax always trains."""
    members = group_params(layers)
    bad = [k for k in spec.groups if k not in members]
    if bad:
        raise SpecError(f"partition.groups {bad}: this model's kernel groups are 0..{len(members) - 1}")
    return {name for k in spec.groups for name in members[k]}


def partition_masks(
    params: dict[str, torch.Tensor], layers: list[Layer], spec: PartitionSpec, run_seed: int = 0
) -> Masks:
    """Masks for `subset` and `fixed` (complements of each other) over every parameter.

    `run_seed` (the spec's `seed`) draws the random strategies' masks when `spec.seed` is
    "run": each seed then tests another subset, and the arms of a study, which share their
    seed and differ only in `freeze`, still track the same coordinates."""
    if spec.strategy == "layers":
        _check_layer_names(layers, spec)
    grouped = [layer.name for layer in layers if layer.groups > 1]
    if grouped and spec.strategy not in ("groups", "none"):
        raise SpecError(
            f"partition.strategy {spec.strategy!r} splits single kernel tensors, but {grouped[0]!r} holds kernel "
            "groups; use partition.strategy 'groups' or 'none'"
        )
    group_tensors = _group_tensors(layers, spec) if spec.strategy == "groups" else set()
    generator = torch.Generator().manual_seed(run_seed if spec.seed == "run" else spec.seed)
    fixed: dict[str, torch.Tensor] = {}
    for layer in layers:
        partitioned = layer.kind == "conv" or spec.include_fc or spec.strategy == "groups"
        for name in layer.params:
            fixed[name] = torch.zeros(params[name].shape, dtype=torch.bool)
        if not partitioned or spec.strategy == "none":
            continue
        if spec.strategy in ("first_kernels", "random_kernels"):
            # Per-kernel parameters (bias, BatchNorm scale and shift) go with their kernel.
            kernels = _kernel_mask(layer, spec, generator)
            for name in layer.params:
                shape = params[name].shape
                fixed[name] = kernels.view(-1, *([1] * (len(shape) - 1))).expand(shape).clone()
        elif spec.strategy == "random_elements":
            for name in layer.params:
                fixed[name] = torch.rand(params[name].shape, generator=generator) < spec.fraction
        elif spec.strategy == "layers" and layer.name in spec.layers:
            for name in layer.params:
                fixed[name] = torch.ones(params[name].shape, dtype=torch.bool)
        elif spec.strategy == "groups":
            for name in layer.params:
                fixed[name] = torch.full(params[name].shape, name in group_tensors, dtype=torch.bool)
    missing = set(params) - set(fixed)
    if missing:  # every parameter must belong to a layer, or it would escape both subsets
        raise ValueError(f"parameters outside any layer: {sorted(missing)}")
    return {"subset": {name: ~mask for name, mask in fixed.items()}, "fixed": fixed}


def subset_sizes(masks: Masks) -> dict[str, int]:
    return {subset: int(sum(int(m.sum()) for m in masks[subset].values())) for subset in SUBSETS}
