"""The masks of each phase of a changing partition (spec.schedule.mode), by phase number.

Phase 0 is the run's own partition (`masks.pt`); phase n is a pure function of the phase-0
masks, the spec and n (resample: and of the weights, for a strategy that reads them), so
a test, a resumed run and both arms of a study recompute the same masks:

- alternate: in every partitioned layer the fixed and trained coordinates swap, so odd
  phases train what even phases fix (block-coordinate descent between two sets).
- rotate: each partitioned layer's K kernels are cut into B = ceil(1 / min(f, 1 - f))
  blocks (f = partition.fraction, so the smaller of the two sets is one block) and the
  phase-0 masks move on by one block of ceil(K / B) kernels a phase, wrapping around:
  with f = 0.75 one quarter trains and that quarter advances.
- resample: a fresh draw of partition.strategy with the seed `phase_seed(base, n)`,
  base = partition.seed (or the run's seed when it is "run"): the same in every arm. A
  strategy that measures the model (the Hessian ones) is measured again at the weights the
  phase starts from (a PartitionContext over the training model): each arm measures its own
  weights, so the arms of a study can train different kernels in a phase, which the
  per-phase verdict counts and says (workbench/phase_verdict.py).
"""

from __future__ import annotations

import hashlib
import math

import torch

from engine.choices import SCHEDULE_MODES
from engine.models import Layer
from engine.partition_context import PartitionContext
from engine.spec import ExperimentSpec, SEED_MAX
from engine.strategies import partitioned_layers
from engine.subsets import Masks, partition_masks


def phase_masks(masks0: Masks, params: dict[str, torch.Tensor], layers: list[Layer], spec: ExperimentSpec, phase: int,
                context: PartitionContext | None = None) -> Masks:
    """The {subset, fixed} masks of `phase` (CPU bool tensors, complements of each other).
    `context`: the model at the phase's start weights, for a resampled strategy that measures it."""
    if phase == 0:
        return masks0
    fixed = SCHEDULE_MODES.implementation(spec.schedule.mode)(masks0["fixed"], params, layers, spec, phase, context)
    return {"subset": {name: ~mask for name, mask in fixed.items()}, "fixed": fixed}


def phase_seed(base: int, phase: int) -> int:
    """The partition seed of a resampled phase: a hash of (base seed, phase), 0..2^32-1."""
    digest = hashlib.sha256(f"{base}/{phase}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (SEED_MAX + 1)


def masks_digest(masks: Masks) -> str:
    """16 hex digits identifying which coordinates are fixed (the `phase` event's `masks`)."""
    digest = hashlib.sha256()
    for name in sorted(masks["fixed"]):
        digest.update(name.encode())
        digest.update(masks["fixed"][name].to(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _alternate(fixed0, params, layers, spec, phase, context=None):
    if phase % 2 == 0:
        return {name: mask.clone() for name, mask in fixed0.items()}
    swapped = {name for layer in partitioned_layers(layers, spec.partition) for name in layer.params}
    return {name: ~mask if name in swapped else mask.clone() for name, mask in fixed0.items()}


def _rotate(fixed0, params, layers, spec, phase, context=None):
    fraction = spec.partition.fraction
    blocks = math.ceil(round(1 / min(fraction, 1 - fraction), 9))
    rotated = {name: mask.clone() for name, mask in fixed0.items()}
    for layer in partitioned_layers(layers, spec.partition):
        shift = (phase * math.ceil(layer.kernels / blocks)) % layer.kernels
        for name in layer.params:  # dim 0 indexes the kernels (bias and BatchNorm go with theirs)
            rotated[name] = torch.roll(fixed0[name], shift, dims=0)
    return rotated


def _resample(fixed0, params, layers, spec, phase, context=None):
    base = spec.seed if spec.partition.seed == "run" else spec.partition.seed
    drawn = spec.partition.model_copy(update={"seed": phase_seed(base, phase)})
    return partition_masks(params, layers, drawn, context=context)["fixed"]


SCHEDULE_MODES.implement("alternate", _alternate)
SCHEDULE_MODES.implement("rotate", _rotate)
SCHEDULE_MODES.implement("resample", _resample)
