"""Soft weight sharing: a learned Gaussian-mixture prior over the weights, in the loss.

`regularizer: {"name": "soft_weight_sharing", "components": J, "tau": T, "on": "subset"|"all"}`
as in Ullrich, Meeds & Welling (2017), after Nowlan & Hinton (1992). Over the covered
coordinates w_i (the partition's `subset`, or every trainable weight):

    loss = cross-entropy + T * -sum_i log sum_j pi_j N(w_i | mu_j, sigma_j^2)

Component 0 is pinned at mu_0 = 0 with a fixed mixing proportion pi_0 (`pi_zero`, large:
most weights are pulled to exactly prunable zeros); its variance is learned. The other J-1
means, all J log-variances and the J-1 mixing logits (pi_j = (1 - pi_0) softmax_j) are
learned by their own Adam (`lr`). Means start evenly spaced over the initial weights' range,
each log-variance at the log of the squared spacing. The paper's hyper-priors on the
variances are left out (the log-variances are clamped below at -10 instead).

The hook adds the prior's gradient after the loss's backward (the same sum, without
changing the loop), after tracking has read the loss gradient: `grad` stays the loss's.
The mixture's parameters and Adam state are part of the resumable state, and the final
mixture is saved as `checkpoints/prior_final.pt` for `workbench quantize`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.loop import Hook, TrainState
from engine.run_folder import RunFolder
from engine.spec import RegularizerSpec
from engine.weight_snapshots import histogram

HIST_BINS = 48  # of the covered weights' histogram in each eval event (engine/events.py: weights_hist)
LOG_VAR_FLOOR = -10.0  # sigma >= 0.0067: keeps a collapsing component's density finite
PRIOR_CHECKPOINT = "prior_final"


class MixturePrior(nn.Module):
    """pi, mu, log sigma^2 of J components; component 0 at mu 0 with fixed pi_0."""

    def __init__(self, components: int, pi_zero: float, low: float, high: float) -> None:
        super().__init__()
        self.pi_zero = pi_zero
        spacing = (high - low) / max(components - 1, 1)
        self.means = nn.Parameter(torch.linspace(low, high, components - 1))  # mu_1..mu_{J-1}
        self.log_vars = nn.Parameter(torch.full((components,), 2 * math.log(max(spacing, 1e-3))))
        self.logits = nn.Parameter(torch.zeros(components - 1))

    def mixture(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pi, mu, log sigma^2), each of J entries, component 0 first."""
        mu = torch.cat([self.means.new_zeros(1), self.means])
        pi = torch.cat([self.means.new_full((1,), self.pi_zero), (1 - self.pi_zero) * torch.softmax(self.logits, 0)])
        return pi, mu, self.log_vars.clamp(min=LOG_VAR_FLOOR)

    def log_joint(self, w: torch.Tensor) -> torch.Tensor:
        """[N, J]: log pi_j + log N(w_i | mu_j, sigma_j^2)."""
        pi, mu, log_var = self.mixture()
        diff = w.unsqueeze(1) - mu
        return pi.log() - 0.5 * (math.log(2 * math.pi) + log_var + diff * diff * torch.exp(-log_var))

    def nll(self, w: torch.Tensor) -> torch.Tensor:
        """-sum_i log p(w_i): the prior's negative log-likelihood of the weights."""
        return -torch.logsumexp(self.log_joint(w), dim=1).sum()

    def assign(self, w: torch.Tensor) -> torch.Tensor:
        """Each weight's most probable component (largest pi_j N(w | mu_j, sigma_j^2))."""
        return self.log_joint(w).argmax(dim=1)

    def summary(self) -> dict:
        pi, mu, log_var = (t.detach().cpu() for t in self.mixture())
        return {"pi": [round(v, 6) for v in pi.tolist()], "mu": [round(v, 6) for v in mu.tolist()],
                "log_var": [round(v, 4) for v in log_var.tolist()]}


def coverage(model: nn.Module, settings: RegularizerSpec, masks: dict) -> dict[str, torch.Tensor | None]:
    """The coordinates the prior covers, per parameter (None: the whole tensor): the subset's,
    or all, less tensors that do not train (frozen whole, or fixed by construction)."""
    return {
        name: (masks["subset"][name] if settings.on == "subset" else None)
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def weights_histogram(w: torch.Tensor, means: list[float]) -> dict:
    """The covered weights' counts in HIST_BINS equal bins over [low, high]: the weights' range
    widened to take in every component's mean, so the mixture's peaks all fall on the picture."""
    low, high = min(float(w.min()), *means), max(float(w.max()), *means)
    if high <= low:  # every weight at one value: a bin of width 1 around it
        low, high = low - 0.5, high + 0.5
    return {"low": low, "high": high, "counts": histogram(w, low, high, HIST_BINS), "n": int(w.numel())}


def covered(params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """The covered coordinates as one vector (autograd flows back to the parameters)."""
    pieces = []
    for name, param in params.items():
        mask = masks[name]
        if mask is None or mask.all():
            pieces.append(param.reshape(-1))
        elif mask.any():
            pieces.append(param[mask])
    return torch.cat(pieces)


class SoftWeightSharing(Hook):
    """Adds T x the prior's gradient to the weights' and trains the prior."""

    def __init__(self, model: nn.Module, settings: RegularizerSpec, masks: dict, folder: RunFolder) -> None:
        self.tau, self.folder = settings.tau, folder
        self.params = dict(model.named_parameters())
        # built after freezing, so frozen tensors are left out; masks moved to the device once
        self.masks = {n: m if m is None else m.to(self.params[n].device) for n, m in coverage(model, settings, masks).items()}
        self.params = {n: self.params[n] for n in self.masks}
        with torch.no_grad():
            w = covered(self.params, self.masks)
        device = w.device
        self.prior = MixturePrior(settings.components, settings.pi_zero, float(w.min()), float(w.max())).to(device)
        self.optimizer = torch.optim.Adam(self.prior.parameters(), lr=settings.lr)

    def after_backward(self, state: TrainState) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        penalty = self.tau * self.prior.nll(covered(self.params, self.masks))
        penalty.backward()  # accumulates into the weights' .grad beside the loss's
        self.optimizer.step()

    def score(self) -> dict:
        """The prior's figures for the eval event: its NLL, the mixture, and a histogram of the
        covered weights (the Run screen's Mixture tab draws the mixture over it, torch-free)."""
        with torch.no_grad():
            w = covered(self.params, self.masks)
            nll = float(self.prior.nll(w))
            mixture = self.prior.summary()
        return {"prior_nll": nll, "mixture": mixture, "weights_hist": weights_histogram(w, mixture["mu"])}

    def on_end(self, state: TrainState) -> None:
        if state.status == "completed":
            self.folder.save_tensors(self.folder.checkpoint_path(PRIOR_CHECKPOINT), self.prior_state())

    def prior_state(self) -> dict:
        return {name: t.detach().clone() for name, t in self.prior.state_dict().items()}

    # the resumable state (engine.loop.TrainState.snapshot / restore)
    def state_dict(self) -> dict:
        return {"prior": self.prior_state(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, saved: dict) -> None:
        self.prior.load_state_dict(saved["prior"])
        self.optimizer.load_state_dict(saved["optimizer"])
