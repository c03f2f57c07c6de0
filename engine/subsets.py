"""Partitions: a partition spec -> named boolean masks over the model's parameters.

A partition splits every trainable coordinate into `subset` (always trains) and `fixed`
(frozen when the spec says `freeze`). Masks are built on the CPU with their own seeded
generator, so the same spec gives the same masks on any device, and two runs that differ
only in `freeze` track exactly the same coordinates.
"""

from __future__ import annotations

import torch

from engine.choices import PARTITIONS
from engine.models import Layer
from engine.partition_context import PartitionContext
from engine.spec import PartitionSpec, SpecError
from engine.vocabulary import SUBSETS  # noqa: F401  (re-exported: engine code imports it from here)
from engine.strategies.kernel_scores import fixed_kernel_count  # noqa: F401 - re-exported (tests, callers)

Masks = dict[str, dict[str, torch.Tensor]]  # {"subset": {param: bool}, "fixed": {param: bool}}


def partition_masks(
    params: dict[str, torch.Tensor], layers: list[Layer], spec: PartitionSpec, run_seed: int = 0,
    context: PartitionContext | None = None,
) -> Masks:
    """Masks for `subset` and `fixed` (complements of each other) over every parameter.

    `run_seed` (the spec's `seed`) draws the random strategies' masks when `spec.seed` is
    "run": each seed then tests another subset, and the arms of a study, which share their
    seed and differ only in `freeze`, still track the same coordinates."""
    grouped = [layer.name for layer in layers if layer.groups > 1]
    if grouped and spec.strategy not in ("groups", "none"):
        raise SpecError(
            f"partition.strategy {spec.strategy!r} splits single kernel tensors, but {grouped[0]!r} holds kernel "
            "groups; use partition.strategy 'groups' or 'none'"
        )
    generator = torch.Generator().manual_seed(run_seed if spec.seed == "run" else spec.seed)
    fixed = {name: torch.zeros(params[name].shape, dtype=torch.bool) for layer in layers for name in layer.params}
    implementation = PARTITIONS.implementation(spec.strategy)
    # Strategies that measure the model (the Hessian's) also get the model and the data.
    extra = (context,) if measures_model(spec.strategy) else ()
    fixed.update(implementation(params, layers, spec, generator, *extra))
    missing = set(params) - set(fixed)
    if missing:  # every parameter must belong to a layer, or it would escape both subsets
        raise ValueError(f"parameters outside any layer: {sorted(missing)}")
    return {"subset": {name: ~mask for name, mask in fixed.items()}, "fixed": fixed}


def measures_model(strategy: str) -> bool:
    """Whether `strategy` reads the model and the data (a PartitionContext), not just the shapes."""
    return bool(getattr(PARTITIONS.implementation(strategy), "measures_model", False))


def subset_sizes(masks: Masks) -> dict[str, int]:
    return {subset: int(sum(int(m.sum()) for m in masks[subset].values())) for subset in SUBSETS}
