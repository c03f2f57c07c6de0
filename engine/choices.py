"""The named choices a spec makes, declared torch-free: engine.spec takes its allowed names
from here, `--help`, the Compose form and the JSON schema their descriptions.

Each implementation is attached on the torch side: partition strategies in
engine/strategies/, optimizers in engine/optimizers.py, ensemble implementations in
engine/ensemble.py, fusion modes in engine/construction.py (prune criteria are scored
in engine/pruning.py's channel_scores). A new choice is one declaration here (or in its own module) plus one
`implement` call.
"""

from __future__ import annotations

from typing import Any

from engine.registry import Registry

PARTITIONS = Registry("partition.strategy")
OPTIMIZERS = Registry("optimizer.name")
ENSEMBLE_IMPLEMENTATIONS = Registry("ensemble.implementation")
FUSION_MODES = Registry("fusion.mode")
PRUNE_CRITERIA = Registry("fusion.prune.criterion")


def _needs_layers(partition: Any) -> None:
    if not partition.layers:
        raise ValueError("partition.strategy='layers' needs partition.layers, a list of layer names to fix")


def _needs_groups(partition: Any) -> None:
    if not partition.groups:
        raise ValueError("partition.strategy='groups' needs partition.groups, a list of group indices to fix")


# Kernel strategies fix the top-k kernels of each layer by a *kernel score* (engine/strategies/kernel_scores.py).
PARTITIONS.declare("first_kernels", "fix each layer's first `fraction` of kernels", ("fraction", "include_fc"))
PARTITIONS.declare(
    "random_kernels", "fix a random `fraction` of each layer's kernels, drawn with `seed`", ("fraction", "include_fc", "seed")
)
PARTITIONS.declare(
    "random_elements", "fix a random `fraction` of each layer's coordinates, drawn with `seed`",
    ("fraction", "include_fc", "seed"),
)
PARTITIONS.declare("layers", "fix the layers named in `layers` whole", ("layers",), _needs_layers)
PARTITIONS.declare("groups", "fix the kernel groups in `groups` whole (model.groups > 1)", ("groups",), _needs_groups)
PARTITIONS.declare("none", "fix nothing: every coordinate is in `subset`")

OPTIMIZERS.declare("sgd", "SGD with `momentum` (optionally `nesterov`) and coupled `weight_decay`",
                   ("lr", "momentum", "nesterov", "weight_decay"))
OPTIMIZERS.declare("adam", "Adam with coupled `weight_decay` (added to the gradient)", ("lr", "weight_decay"))
OPTIMIZERS.declare("adamw", "AdamW with decoupled `weight_decay`", ("lr", "weight_decay"))

ENSEMBLE_IMPLEMENTATIONS.declare("auto", "pick the fastest measured on the device")
ENSEMBLE_IMPLEMENTATIONS.declare("grouped", "one model with grouped convolutions, one group per member")
ENSEMBLE_IMPLEMENTATIONS.declare("vmap", "the members' stacked weights through torch.func.vmap")
ENSEMBLE_IMPLEMENTATIONS.declare("sequential", "the members one after another (the reference)")

FUSION_MODES.declare("none", "no fusion: the run trains its own model")
FUSION_MODES.declare("average", "the members' averaged logits")
FUSION_MODES.declare("head", "frozen trunks + one new linear + softmax", ("train_trunks",))
FUSION_MODES.declare(
    "mutant", "one wide model computing the members' average at step 0, then trained as one", ("prune",)
)

PRUNE_CRITERIA.declare("bn_scale", "|BatchNorm scale| (network slimming)")
PRUNE_CRITERIA.declare("channel_norm", "L2 norm of a kernel")

# How a changing partition (spec.schedule) picks each phase's fixed coordinates (engine/phase_masks.py).
SCHEDULE_MODES = Registry("schedule.mode")
SCHEDULE_MODES.declare("alternate", "the fixed and trained coordinates of the partitioned layers swap every phase")
SCHEDULE_MODES.declare(
    "rotate", "each partitioned layer's kernels are cut into blocks and the partition moves on by one block every phase"
)
SCHEDULE_MODES.declare("resample", "a fresh draw of the partition strategy every phase, from a per-phase seed")
