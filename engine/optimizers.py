"""Optimizers' implementations, by the names declared in engine.choices.OPTIMIZERS."""

from __future__ import annotations

import torch

from engine.choices import OPTIMIZERS
from engine.spec import OptimizerSpec

OPTIMIZERS.implement(
    "sgd",
    lambda params, spec: torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov, weight_decay=spec.weight_decay
    ),
)
# adam: coupled weight decay (added to the gradient); adamw: decoupled.
OPTIMIZERS.implement("adam", lambda params, spec: torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay))
OPTIMIZERS.implement("adamw", lambda params, spec: torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay))


def make_optimizer(params: list[torch.Tensor], spec: OptimizerSpec) -> torch.optim.Optimizer:
    return OPTIMIZERS.implementation(spec.name)(params, spec)
