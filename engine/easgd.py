"""Elastic averaging SGD between ensemble members (Zhang, Choromanska & LeCun 2015).

`ensemble.coupling: {"mode": "easgd", "rho": R, "period": TAU}`. The K members train on
their own losses as in any ensemble; a center variable x~ (one plain model's parameters)
ties them together. Every TAU steps, after the optimizer step, with alpha = lr * R and
every difference taken before anything moves (the synchronous rule):

    x_i <- x_i - alpha * (x_i - x~)          for every member i
    x~  <- x~  + alpha * sum_i (x_i - x~)

The center starts as the members' mean at step 0 (they start apart, from K seeds). It is
a model of its own: evaluated at every eval (`center_acc`, `center_loss` in the eval
event, with the members' mean BatchNorm statistics, since the center never sees a batch),
saved beside each checkpoint (`checkpoints/center_<name>.pt`, a plain model's state dict,
fusable with `workbench fuse --checkpoint center_final`) and in the resumable state.
Members are addressed by their plain parameter names in every implementation (sequential
and vmap hold `members.k.*`, grouped `*_g{k}` tensors), so the rule is the same code for all.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.coupling import center_checkpoint
from engine.data import DeviceData
from engine.ensemble import member_states
from engine.grouped import split_group
from engine.loop import Hook, TrainState
from engine.models import build_model
from engine.run_folder import RunFolder
from engine.spec import CouplingSpec, ModelSpec


def member_parameters(model: nn.Module) -> list[dict[str, nn.Parameter]]:
    """Member k's parameters by their plain model names (the live tensors, not copies)."""
    if isinstance(getattr(model, "members", None), nn.ModuleList):
        return [dict(member.named_parameters()) for member in model.members]
    members: dict[int, dict[str, nn.Parameter]] = {}
    for name, param in model.named_parameters():
        base, group = split_group(name)
        if group is None:
            raise ValueError(f"{name} belongs to no member: EASGD couples ensembles of whole models")
        members.setdefault(group, {})[base] = param
    return [members[k] for k in sorted(members)]


@torch.no_grad()
def couple(members: list[list[torch.Tensor]], center: list[torch.Tensor], alpha: float) -> None:
    """One synchronous EASGD update, in place: `members[k]` and `center` list the same tensors' shapes."""
    flat = [t for member in members for t in member]
    diffs = torch._foreach_sub(flat, center * len(members))  # x_i - x~, all from the old center
    torch._foreach_add_(flat, diffs, alpha=-alpha)
    n = len(center)
    for k in range(len(members)):
        torch._foreach_add_(center, diffs[k * n : (k + 1) * n], alpha=alpha)


class ElasticAveraging(Hook):
    """The coupling, the center's evaluation and its checkpoints."""

    def __init__(
        self, model: nn.Module, coupling: CouplingSpec, model_spec: ModelSpec, data: DeviceData, folder: RunFolder
    ) -> None:
        self.model, self.rho, self.period, self.folder = model, coupling.rho, coupling.period, folder
        self.test = (data.test_x, data.test_y)
        members = member_parameters(model)
        self.names = list(members[0])
        self.members = [[member[name] for name in self.names] for member in members]
        with torch.no_grad():
            self.center = [torch.stack([m[i] for m in self.members]).mean(0) for i in range(len(self.names))]
        with torch.random.fork_rng(devices=[]):  # its init is overwritten: leave the run's RNG alone
            self.center_model = build_model(model_spec, data.input_shape, data.num_classes).to(self.center[0].device)

    def after_optimizer_step(self, state: TrainState) -> None:
        if state.step % self.period == 0:
            couple(self.members, self.center, state.optimizer.param_groups[0]["lr"] * self.rho)

    def center_state(self) -> dict[str, torch.Tensor]:
        """The center as a plain model's state dict: its parameters, the members' mean buffers."""
        states = member_states(self.model)
        state = {}
        for name, tensor in states[0].items():
            floating = tensor.is_floating_point()
            state[name] = torch.stack([s[name] for s in states]).mean(0) if floating else tensor
        state.update({name: t.detach().clone() for name, t in zip(self.names, self.center)})
        return state

    def score(self) -> dict:
        """center_loss and center_acc on the held-out split (the Evaluation hook's extra)."""
        from engine.features import evaluate  # features imports the hooks' modules, not the reverse

        self.center_model.load_state_dict(self.center_state())
        found = evaluate(self.center_model, *self.test)
        return {"center_loss": found["eval_loss"], "center_acc": found["eval_acc"]}

    def _save(self, name: str) -> None:
        self.folder.save_tensors(self.folder.checkpoint_path(center_checkpoint(name)), self.center_state())

    def on_checkpoint(self, state: TrainState) -> None:
        self._save(f"step_{state.step:06d}")

    def on_end(self, state: TrainState) -> None:
        self._save("final" if state.status == "completed" else f"step_{state.step:06d}")

    # the resumable state (engine.loop.TrainState.snapshot / restore)
    def state_dict(self) -> dict:
        return {"center": [t.detach().clone() for t in self.center]}

    @torch.no_grad()
    def load_state_dict(self, saved: dict) -> None:
        for tensor, value in zip(self.center, saved["center"]):
            tensor.copy_(value)
