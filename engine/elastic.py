"""Elastic freezing: the fixed coordinates train, but are pulled back to their initial values.

The soft version of `freeze: true` (`freeze: {"mode": "elastic", "rho": R}`). The rule,
named `decoupled` in the spec, is EASGD's elastic force applied outside the optimizer:
after every optimizer step, on the fixed coordinates only,

    w <- w - alpha * (w - w0),   alpha = min(lr * rho, 1)

Decoupled (not added to the gradient) so that momentum and Adam's scaling do not reshape
the pull: the same R means the same pull under every optimizer, as AdamW's decay does.
alpha is capped at 1 (a pull past w0 would oscillate and diverge for lr*R > 2): at the
cap the coordinates are reset to w0 every step, which is hard freezing. R = 0 attaches
no hook at all, so that run is the plain (freeze false) run, bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.loop import Hook, TrainState


class ElasticPull(Hook):
    """Pulls the `fixed` coordinates toward their values at construction (the initial weights)."""

    def __init__(self, model: nn.Module, fixed: dict[str, torch.Tensor], rho: float) -> None:
        self.rho = rho
        # The initial weights of every parameter: the masks may change mid-run (on_masks),
        # and newly fixed coordinates are pulled to their init too, not to where they are.
        self.initial = {name: p.detach().clone() for name, p in model.named_parameters()}
        self._alpha = None
        self._aim(model, fixed)

    def _aim(self, model: nn.Module, fixed: dict[str, torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        # (param, w0, mask as 0/1 of the param's dtype, or None when the whole tensor is fixed)
        self.targets = []
        for name, mask in fixed.items():
            if not mask.any():
                continue
            param = params[name]
            share = None if mask.all() else mask.to(device=param.device, dtype=param.dtype)
            self.targets.append((param, self.initial[name], share))
        self._alpha = None  # weights rebuilt on the next step

    def alpha(self, lr: float) -> float:
        return min(lr * self.rho, 1.0)

    @torch.no_grad()
    def after_optimizer_step(self, state: TrainState) -> None:
        # The optimizer's lr (not the spec's): a schedule changes the pull with it.
        alpha = self.alpha(state.optimizer.param_groups[0]["lr"])
        if alpha != self._alpha:  # the per-coordinate weights are built once per lr, not per step
            self._weights = [alpha if share is None else share * alpha for _, _, share in self.targets]
            self._alpha = alpha
        # lerp_(w0, a) is w + a * (w0 - w): exactly w0 at a = 1, exactly w where the weight is 0.
        for (param, initial, _), weight in zip(self.targets, self._weights):
            param.lerp_(initial, weight)

    def on_masks(self, state: TrainState) -> None:
        self._aim(state.model, state.masks["fixed"])
